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

/// A step the device decides (issue 33: no host read per update). The next
/// step() changes the parameters and moments only where `ok` (a 0-dim bool
/// tensor on the parameters' device) is true; where it is false they stay
/// bit for bit (a non-finite gradient is zeroed first, so nothing NaN
/// leaks into a moment). The host cannot know which it was, so the step
/// counts advance either way: the trainer takes back the skipped ones with
/// retract_steps when it next reads the device. With `ok` true the step is
/// the unguarded one up to the rounding of the masked weight-decay terms.
class GuardedStep {
 public:
  virtual ~GuardedStep() = default;
  /// False when this optimizer's step cannot be guarded (AMSGrad: the
  /// per-tensor classes' step).
  virtual bool can_guard() const = 0;
  virtual void guard_next_step(torch::Tensor ok) = 0;
  /// Every state's step count minus `k` (never below 0).
  virtual void retract_steps(int64_t k) = 0;
};

class MultiTensorAdam : public torch::optim::Adam, public GuardedStep {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
  bool can_guard() const override;
  void guard_next_step(torch::Tensor ok) override { guard_ = std::move(ok); }
  void retract_steps(int64_t k) override;

 private:
  torch::Tensor guard_;
};

class MultiTensorAdamW : public torch::optim::AdamW, public GuardedStep {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
  bool can_guard() const override;
  void guard_next_step(torch::Tensor ok) override { guard_ = std::move(ok); }
  void retract_steps(int64_t k) override;

 private:
  torch::Tensor guard_;
};

class MultiTensorRAdam : public RAdam, public GuardedStep {
 public:
  using RAdam::RAdam;
  torch::Tensor step(LossClosure closure = nullptr) override;
  bool can_guard() const override { return true; }
  void guard_next_step(torch::Tensor ok) override { guard_ = std::move(ok); }
  void retract_steps(int64_t k) override;

 private:
  torch::Tensor guard_;
};

/// t *= s for every t, s a 0-dim tensor on their device (one foreach op on
/// LibTorch 2.x; a loop of the same kernels on 1.13, which lacks the overload).
void mul_all_(std::vector<torch::Tensor>& tensors, const torch::Tensor& s);

/// The global L2 norm of `tensors` (0-dim float; non-finite when any element
/// is), by one _foreach_norm and one norm of the stacked per-tensor norms.
torch::Tensor multi_tensor_norm(const std::vector<torch::Tensor>& tensors);

}  // namespace clinic
