#pragma once
// Optimizers by recipe name: adam / adamw (torch::optim) and radam (ours).
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "framework/config.h"
#include "framework/model.h"
#include "framework/registry.h"

namespace clinic {

using OptimizerBuilder = std::function<std::unique_ptr<torch::optim::Optimizer>(
    std::vector<torch::optim::OptimizerParamGroup>, const OptimConfig&)>;
Registry<OptimizerBuilder>& optimizer_registry();
void register_builtin_optimizers();

/// One parameter group, or two (decayed / not decayed) when
/// optim.no_decay_bias_norm is on; the Clinic decays everything.
std::unique_ptr<torch::optim::Optimizer> build_optimizer(Seq2SeqModel& model,
                                                         const OptimConfig& cfg);

/// Set every group's lr (the schedule's value for this update).
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace clinic
