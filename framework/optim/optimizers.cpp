#include "framework/optim/optimizers.h"

#include "framework/optim/multi_tensor.h"
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
    auto o = torch::optim::AdamOptions(c.lr).betas(betas(c)).eps(c.eps).weight_decay(c.weight_decay);
    if (c.foreach == "true")
      return std::unique_ptr<torch::optim::Optimizer>(new MultiTensorAdam(std::move(g), o));
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::Adam(std::move(g), o));
  });
  r.add("adamw", [betas](std::vector<torch::optim::OptimizerParamGroup> g,
                         const OptimConfig& c) {
    auto o = torch::optim::AdamWOptions(c.lr).betas(betas(c)).eps(c.eps).weight_decay(c.weight_decay);
    if (c.foreach == "true")
      return std::unique_ptr<torch::optim::Optimizer>(new MultiTensorAdamW(std::move(g), o));
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::AdamW(std::move(g), o));
  });
  r.add("radam", [betas](std::vector<torch::optim::OptimizerParamGroup> g,
                         const OptimConfig& c) {
    RAdamFlavour f = c.flavour == "torch"       ? RAdamFlavour::kTorch
                     : c.flavour == "reference" ? RAdamFlavour::kReference
                                                : RAdamFlavour::kClinic;
    auto o = RAdamOptions(c.lr)
                 .betas(betas(c))
                 .eps(c.eps)
                 .weight_decay(c.weight_decay)
                 .flavour(f)
                 .degenerate_to_sgd(c.degenerate_to_sgd)
                 .decoupled_weight_decay(c.decoupled_weight_decay);
    if (c.foreach == "true")
      return std::unique_ptr<torch::optim::Optimizer>(new MultiTensorRAdam(std::move(g), o));
    return std::unique_ptr<torch::optim::Optimizer>(new RAdam(std::move(g), o));
  });
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(const std::vector<ParamPlacement>& placed,
                                                         const OptimConfig& given,
                                                         std::vector<int>* group_of) {
  // optim.foreach: auto follows the parameters' device: multi-tensor steps
  // on CUDA (fewer launches), per-tensor ones on the CPU, where ATen runs
  // _foreach_* ops as loops over intermediate lists (1.5x the step time:
  // docs/performance.md). A caller that decides on the device resolves it
  // to true first (resolve_foreach).
  OptimConfig cfg = given;
  if (cfg.foreach == "auto") {
    bool cuda = false;
    for (const auto& p : placed) cuda = cuda || p.param.is_cuda();
    cfg.foreach = cuda ? "true" : "false";
  }
  const auto& build = optimizer_registry().get(cfg.name);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (group_of) group_of->clear();
  for (int g = -1; g < static_cast<int>(cfg.groups.size()); ++g)
    for (bool decay : {true, false}) {
      std::vector<torch::Tensor> params;
      for (const auto& p : placed)
        if (p.group == g && p.decay == decay) params.push_back(p.param);
      if (params.empty()) continue;
      OptimConfig gc = group_optim_config(cfg, g, decay);
      if (!opt) {
        std::vector<torch::optim::OptimizerParamGroup> first;
        first.emplace_back(params);
        opt = build(std::move(first), gc);
      } else {
        // The group's options from the same builder (any registered optimizer).
        std::vector<torch::optim::OptimizerParamGroup> none;
        none.emplace_back(std::vector<torch::Tensor>{});
        auto probe = build(std::move(none), gc);
        opt->add_param_group(torch::optim::OptimizerParamGroup(params, probe->defaults().clone()));
      }
      if (group_of) group_of->push_back(g);
    }
  if (!opt) {  // nothing trainable: an optimizer over no parameters
    std::vector<torch::optim::OptimizerParamGroup> none;
    none.emplace_back(std::vector<torch::Tensor>{});
    opt = build(std::move(none), cfg);
    if (group_of) group_of->push_back(-1);
  }
  return opt;
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(Seq2SeqModel& model,
                                                         const OptimConfig& cfg,
                                                         std::vector<int>* group_of) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : model.named_parameters(true)) named.emplace_back(p.key(), p.value());
  auto placed = place_parameters(named, cfg,
                                 [&](const std::string& n) { return model.is_no_decay(n); });
  return build_optimizer(placed, cfg, group_of);
}

OptimConfig resolve_foreach(OptimConfig cfg, bool decided_on_device) {
  if (cfg.foreach == "auto" && decided_on_device) cfg.foreach = "true";
  return cfg;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

}  // namespace clinic
