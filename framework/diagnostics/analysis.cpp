#include "framework/diagnostics/analysis.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>

#include "framework/amp/autocast.h"
#include "framework/diagnostics/instruments.h"
#include "framework/logging.h"
#include "framework/train/trainer.h"

namespace clinic {

GrowthFit fit_growth(const std::vector<double>& x, const std::vector<double>& y) {
  GrowthFit f;
  // Least squares of ys on transform(x): R^2, and the slope in *slope.
  auto fit = [&](auto transform, const std::vector<double>& ys, double* slope) {
    const double n = static_cast<double>(x.size());
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      double t = transform(x[i]);
      sx += t;
      sy += ys[i];
      sxx += t * t;
      sxy += t * ys[i];
    }
    double b = (n * sxy - sx * sy) / std::max(n * sxx - sx * sx, 1e-300);
    double a = (sy - b * sx) / n, mean = sy / n, ss_res = 0, ss_tot = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      double e = ys[i] - (a + b * transform(x[i]));
      ss_res += e * e;
      ss_tot += (ys[i] - mean) * (ys[i] - mean);
    }
    *slope = b;
    return ss_tot > 0 ? 1 - ss_res / ss_tot : 1.0;
  };
  if (x.size() < 2) return f;
  auto ln = [](double v) { return std::log(v); };
  f.r2_linear = fit([](double v) { return v; }, y, &f.slope_linear);
  f.r2_log = fit(ln, y, &f.slope_log);
  // Power law: the slope of ln y on ln x, for the data and for c ln x.
  bool positive = true;
  for (size_t i = 0; i < x.size(); ++i) positive = positive && x[i] > 1 && y[i] > 0;
  if (positive) {
    std::vector<double> ln_y, ln_ln_x;
    for (size_t i = 0; i < x.size(); ++i) {
      ln_y.push_back(std::log(y[i]));
      ln_ln_x.push_back(std::log(std::log(x[i])));
    }
    fit(ln, ln_y, &f.exponent);
    fit(ln, ln_ln_x, &f.exponent_of_log);
  }
  size_t lo = 0, hi = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] < x[lo]) lo = i;
    if (x[i] > x[hi]) hi = i;
  }
  f.growth = y[lo] > 0 ? y[hi] / y[lo] : NAN;
  return f;
}

std::vector<AnalyzeRow> run_analysis(const RunConfig& recipe, const AnalyzeOptions& o) {
  std::vector<AnalyzeRow> rows;
  for (int64_t seed = 1; seed <= o.seeds; ++seed)
    for (int64_t depth : o.depths)
      for (const auto& variant : o.variants) {
        RunConfig cfg = recipe;
        cfg.model.encoder_layers = cfg.model.decoder_layers = depth;
        cfg.model.residual = variant;
        cfg.model.encoder_residual.clear();
        cfg.model.decoder_residual.clear();
        cfg.train.seed = seed;
        cfg.train.tensorboard.clear();
        cfg.diag.interval = 0;
        // Each update checked on the host as it runs (a diverging stack
        // stops here as in training), not at a read that never comes.
        cfg.train.host_reads = "every_update";
        Trainer t(cfg, o.work_dir);  // shares vocabulary and caches; Admin is profiled here
        t.setup();
        auto plan = plan_epoch(t.train_data(), cfg.data.max_tokens, cfg.data.max_sentences,
                               static_cast<uint64_t>(seed), 1, true);
        for (int64_t k = 0; k < o.updates; ++k)
          t.train_update({t.train_data().make_batch(plan[(k + 1) % plan.size()]).to(t.device())});
        Batch batch = t.train_data().make_batch(plan.front()).to(t.device());
        Seq2SeqModel& model = t.model();
        AnalyzeRow r;
        r.depth = depth;
        r.variant = variant;
        r.seed = seed;
        ProbeOutputs base = probe_forward(model, batch, /*stats=*/true);
        auto mean_dep = [&](const std::string& stack) {
          const auto& d = base.stacks.at(stack).dependency;
          double m = 0;
          for (double b : d) m += b / d.size();
          return m;
        };
        r.dependency_enc = mean_dep("encoder");
        r.dependency_dec = mean_dep("decoder");
        std::vector<std::pair<std::string, torch::Tensor>> weights;
        for (const auto& p : model.named_parameters(true))
          if (p.value().requires_grad()) weights.emplace_back(p.key(), p.value());
        // The gradient of the batch's loss at W (train mode: dropout as in training).
        model.train();
        for (auto& [n, p] : weights)
          if (p.grad().defined()) p.mutable_grad().zero_();
        {
          auto loss_fn = loss_registry().get(cfg.train.criterion)(cfg.train);
          DecoderFeatures out = model.forward_features(batch.src, batch.tgt_in);
          (loss_fn(out, batch.tgt_out, at::kFloat).loss / static_cast<double>(batch.tgt_tokens))
              .backward();
        }
        std::vector<std::string> names;
        std::vector<double> grad_norms;
        for (auto& [name, p] : weights) {
          names.push_back(name);
          grad_norms.push_back(p.grad().defined() ? p.grad().norm().item<double>() : 0.0);
        }
        auto layer = per_layer_norms(names, grad_norms);
        r.grad_first_enc = layer["encoder"].front();
        r.grad_last_enc = layer["encoder"].back();
        r.grad_first_dec = layer["decoder"].front();
        r.grad_last_dec = layer["decoder"].back();
        // Weight matrices only (Transformer-Clinic skips biases, norms, omega).
        torch::NoGradGuard g;
        std::vector<torch::Tensor> saved;
        for (auto& [n, p] : weights) saved.push_back(p.detach().clone());
        auto perturbed = [&](auto delta_of) {
          for (auto& [n, p] : weights)
            if (p.dim() >= 2) p.add_(delta_of(p));
          ProbeOutputs out = probe_forward(model, batch, /*stats=*/false);
          for (size_t i = 0; i < weights.size(); ++i) weights[i].second.copy_(saved[i]);
          return out;
        };
        auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) * 7919 + depth);
        ProbeOutputs random = perturbed([&](const torch::Tensor& p) {
          return torch::randn(p.sizes(), gen, torch::kFloat).sign().to(p.device()) * -o.delta;
        });
        ProbeOutputs update = perturbed([&](const torch::Tensor& p) {
          return p.grad().defined() ? p.grad().sign() * -o.delta : torch::zeros_like(p);
        });
        r.change_random_enc = output_changes(base, random, "encoder").back();
        r.change_random_dec = output_changes(base, random, "decoder").back();
        r.change_update_enc = output_changes(base, update, "encoder").back();
        r.change_update_dec = output_changes(base, update, "decoder").back();
        for (auto& [n, p] : weights)
          if (p.grad().defined()) p.mutable_grad().zero_();
        log()->info("[analyze] depth {} {} seed {}: output change random {:.4g} / {:.4g}, "
                    "update {:.4g} / {:.4g} (enc / dec)",
                    depth, variant, seed, r.change_random_enc, r.change_random_dec,
                    r.change_update_enc, r.change_update_dec);
        rows.push_back(r);
      }
  return rows;
}

}  // namespace clinic
