#pragma once
// Optimizers by recipe name: adam / adamw (torch::optim) and radam (ours).
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "framework/config.h"
#include "framework/model.h"
#include "framework/optim/param_groups.h"
#include "framework/registry.h"

namespace clinic {

using OptimizerBuilder = std::function<std::unique_ptr<torch::optim::Optimizer>(
    std::vector<torch::optim::OptimizerParamGroup>, const OptimConfig&)>;
Registry<OptimizerBuilder>& optimizer_registry();
void register_builtin_optimizers();

/// One torch parameter group per (optim.groups entry or the top-level
/// settings) x (decayed, not decayed under optim.no_decay_bias_norm) that
/// holds parameters, in that order; without optim.groups this is one group,
/// or two with no_decay_bias_norm (the Clinic decays everything). Each
/// group's options come from the registered builder given that group's
/// settings, so user-registered optimizers get groups too. `group_of`, when
/// given, receives for each torch group its optim.groups index (-1: top).
/// optim.foreach: auto made true where the caller decides updates on the
/// device (which needs the multi-tensor steps), left for build_optimizer to
/// resolve by the parameters' device otherwise.
OptimConfig resolve_foreach(OptimConfig cfg, bool decided_on_device);
std::unique_ptr<torch::optim::Optimizer> build_optimizer(Seq2SeqModel& model,
                                                         const OptimConfig& cfg,
                                                         std::vector<int>* group_of = nullptr);
std::unique_ptr<torch::optim::Optimizer> build_optimizer(const std::vector<ParamPlacement>& placed,
                                                         const OptimConfig& cfg,
                                                         std::vector<int>* group_of = nullptr);

/// Set every group's lr (the schedule's value for this update).
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace clinic
