#pragma once
// Dynamic loss scaling with fairseq's DynamicLossScaler semantics, in plain
// tensor ops (LibTorch's _amp_* kernels are CUDA-only in 1.13, and C++ has no
// GradScaler): x2 after `window` overflow-free updates, /2 on an overflow
// (never below `threshold`), the overflowing update is skipped.
#include <torch/torch.h>

#include <vector>

namespace clinic {

struct LossScalerState {
  double scale = 1.0;
  int64_t iter = 0;
  int64_t last_overflow_iter = -1;
  int64_t last_rescale_iter = -1;
};

class LossScaler {
 public:
  LossScaler(double init_scale, int64_t window, double threshold,
             bool enabled);
  double scale() const { return enabled_ ? state_.scale : 1.0; }
  bool enabled() const { return enabled_; }
  /// Record the outcome of one update and adjust the scale.
  void update(bool overflow);
  LossScalerState& state() { return state_; }
  const LossScalerState& state() const { return state_; }

 private:
  LossScalerState state_;
  int64_t window_;
  double threshold_;
  bool enabled_;
};

/// The defined gradients of `params`, in order.
std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params);
/// Multiply every defined gradient by `factor` and return the total L2 norm
/// (a 0-dim tensor; non-finite when any gradient is). Multi-tensor ops.
torch::Tensor scale_grads_and_norm(const std::vector<torch::Tensor>& params,
                                   double factor);
/// The same with `factor` a 0-dim tensor on the gradients' device (the
/// update decided there, device_step.h): no host value needed.
torch::Tensor scale_grads_and_norm(const std::vector<torch::Tensor>& params,
                                   const torch::Tensor& factor);
/// Scale gradients so their total norm is at most max_norm; returns nothing.
void clip_grads(const std::vector<torch::Tensor>& params, double max_norm,
                double total_norm);
/// The same rule on the device: `total_norm` (0-dim double) stays there,
/// and nothing is scaled where `ok` (0-dim bool) is false.
void clip_grads(const std::vector<torch::Tensor>& params, double max_norm,
                const torch::Tensor& total_norm, const torch::Tensor& ok);

}  // namespace clinic
