#include "framework/optim/optimizers.h"

#include "framework/optim/radam.h"

namespace clinic {

Registry<OptimizerBuilder>& optimizer_registry() {
  static Registry<OptimizerBuilder> r("optimizer");
  return r;
}

void register_builtin_optimizers() {
  auto& r = optimizer_registry();
  auto betas = [](const OptimConfig& c) {
    return std::make_tuple(c.betas.at(0), c.betas.at(1));
  };
  r.add("adam", [betas](std::vector<torch::optim::OptimizerParamGroup> g,
                        const OptimConfig& c) {
    // torch::optim::Adam's weight_decay is L2 added to the gradient, as in
    // fairseq's Adam before AdamW semantics.
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::Adam(
        std::move(g), torch::optim::AdamOptions(c.lr).betas(betas(c)).eps(c.eps)
                          .weight_decay(c.weight_decay)));
  });
  r.add("adamw", [betas](std::vector<torch::optim::OptimizerParamGroup> g,
                         const OptimConfig& c) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::AdamW(
        std::move(g), torch::optim::AdamWOptions(c.lr).betas(betas(c)).eps(c.eps)
                          .weight_decay(c.weight_decay)));
  });
  r.add("radam", [betas](std::vector<torch::optim::OptimizerParamGroup> g,
                         const OptimConfig& c) {
    RAdamFlavour f = c.flavour == "torch"       ? RAdamFlavour::kTorch
                     : c.flavour == "reference" ? RAdamFlavour::kReference
                                                : RAdamFlavour::kClinic;
    return std::unique_ptr<torch::optim::Optimizer>(
        new RAdam(std::move(g), RAdamOptions(c.lr)
                                    .betas(betas(c))
                                    .eps(c.eps)
                                    .weight_decay(c.weight_decay)
                                    .flavour(f)
                                    .degenerate_to_sgd(c.degenerate_to_sgd)
                                    .decoupled_weight_decay(
                                        c.decoupled_weight_decay)));
  });
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(
    Seq2SeqModel& model, const OptimConfig& cfg) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    if (cfg.no_decay_bias_norm && model.is_no_decay(p.key()))
      no_decay.push_back(p.value());
    else
      decay.push_back(p.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay);
  auto opt = optimizer_registry().get(cfg.name)(std::move(groups), cfg);
  if (!no_decay.empty()) {
    // The no-decay group's options come from the same builder with zero
    // decay, so this works for user-registered optimizers too.
    OptimConfig zero = cfg;
    zero.weight_decay = 0;
    std::vector<torch::optim::OptimizerParamGroup> tmp;
    tmp.emplace_back(std::vector<torch::Tensor>{});
    auto probe = optimizer_registry().get(cfg.name)(std::move(tmp), zero);
    opt->add_param_group(torch::optim::OptimizerParamGroup(
        no_decay, probe->defaults().clone()));
  }
  return opt;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

}  // namespace clinic
