#pragma once
// Multi-tensor optimizer steps (issue 33): Adam, AdamW and every RAdam
// flavour stepping all tensors of a parameter group with one _foreach_* op
// per phase instead of several kernels per tensor. On CUDA each foreach op
// is one launch for up to ~100 tensors (ATen's multi_tensor_apply); on CPU
// ATen runs the same per-tensor kernels in a loop, so the trajectories are
// bit-identical to the per-tensor classes they derive from (tested), and
// the state, options and checkpoints are theirs: a run can switch
// optim.foreach on a resume.
//
// Tensors are stepped together when they share (device, dtype, step count);
// the step count only differs when some parameter had no gradient on some
// update, and then each count is its own bucket.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <vector>

#include "framework/optim/radam.h"

namespace clinic {

class MultiTensorAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class MultiTensorAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

class MultiTensorRAdam : public RAdam {
 public:
  using RAdam::RAdam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// The global L2 norm of `tensors` (0-dim float; non-finite when any element
/// is), by one _foreach_norm and one norm of the stacked per-tensor norms.
torch::Tensor multi_tensor_norm(const std::vector<torch::Tensor>& tensors);

}  // namespace clinic
