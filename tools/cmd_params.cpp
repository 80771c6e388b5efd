// clinic params RECIPE [--set ...]: every trainable parameter with its shape
// and the optim.groups entry it lands in, then one line per group.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

#include "framework/config.h"
#include "framework/model.h"
#include "framework/data/corpus.h"
#include "framework/optim/param_groups.h"
#include "tools/command.h"

namespace clinic::cli {

void add_params_command(CLI::App& app, Action& action) {
  static std::string recipe;
  static std::vector<std::string> overrides;
  auto* c = app.add_subcommand("params", "list every parameter, its shape and its optimizer group");
  c->add_option("recipe", recipe, "recipe name or path")->required();
  add_overrides(c, &overrides);
  c->callback([&action] {
    action = [] {
      RunConfig cfg = recipe_from_cli(recipe, overrides);
      // The trainer's vocabulary size: a fixed batch's tokens sit after
      // clinic's special ids; otherwise the recipe's SentencePiece size.
      const bool fixed = cfg.data.source == "fixed_batch";
      const int64_t V = fixed ? cfg.data.fixed_vocab + kFixedTokenOffset : cfg.data.vocab_size;
      auto model = build_model(cfg.model, VocabInfo{V, V, cfg.data.joint_vocab});
      std::vector<std::pair<std::string, torch::Tensor>> named;
      for (const auto& p : model->named_parameters(true)) named.emplace_back(p.key(), p.value());
      auto placed = place_parameters(named, cfg.optim,
                                     [&](const std::string& n) { return model->is_no_decay(n); });
      size_t width = 9;
      for (const auto& p : placed) width = std::max(width, p.name.size());
      std::cout << fmt::format("{:<{}}  {:<14} {:>10}  {:<12} {:>10} {:>12}\n", "parameter", width,
                               "shape", "numel", "group", "lr", "weight_decay");
      const size_t n_groups = cfg.optim.groups.size();
      std::vector<int64_t> tensors(n_groups + 1, 0), numel(n_groups + 1, 0);
      for (const auto& p : placed) {
        OptimConfig gc = group_optim_config(cfg.optim, p.group, p.decay);
        std::string name = group_name(cfg.optim, p.group);
        std::cout << fmt::format("{:<{}}  {:<14} {:>10}  {:<12} {:>10.4g} {:>12.4g}\n", p.name, width,
                                 fmt::format("[{}]", fmt::join(p.param.sizes().vec(), ", ")), p.param.numel(),
                                 name.empty() ? "-" : name, gc.lr, gc.weight_decay);
        tensors[p.group + 1] += 1;
        numel[p.group + 1] += p.param.numel();
      }
      if (fixed)
        std::cout << fmt::format("\nvocabulary: data.fixed_vocab = {} tokens after {} special ids\n",
                                 cfg.data.fixed_vocab, kFixedTokenOffset);
      else
        std::cout << fmt::format("\nembedding rows from data.vocab_size = {} (a run's own "
                                 "vocabulary may differ)\n",
                                 V);
      for (int g = -1; g < static_cast<int>(n_groups); ++g) {
        OptimConfig gc = group_optim_config(cfg.optim, g);
        const auto* sc = g < 0 || !cfg.optim.groups[g].schedule ? &cfg.schedule
                                                                : &*cfg.optim.groups[g].schedule;
        std::cout << fmt::format(
            "group {:<12} {:>4} tensors {:>11} parameters  lr {:.4g}  betas [{}, {}]  eps {:.3g}  "
            "weight_decay {:.4g}  schedule {} (warmup {})\n",
            g < 0 ? "- (optim.*)" : cfg.optim.groups[g].name, tensors[g + 1], numel[g + 1], gc.lr,
            gc.betas.at(0), gc.betas.at(1), gc.eps, gc.weight_decay, sc->name, sc->warmup_updates);
      }
    };
  });
}

}  // namespace clinic::cli
