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

#include <memory>
#include <vector>

#include "framework/optim/radam.h"

namespace clinic {

struct CapturePlan;  // multi_tensor.cpp: the staged buckets and device scalars

/// A step split for CUDA graphs (issue 33 item 3). A captured graph replays
/// the kernels it recorded with the scalar arguments they had at capture,
/// so a step whose lr, bias corrections or RAdam rectification are host
/// doubles would replay update 1's step forever. With set_capturable(true)
/// the multi-tensor steps take every per-update value from tensors on the
/// parameters' device instead, in two halves:
///   stage()   the host's part, run eagerly before every update: creates
///             missing state, advances the host step counts (checkpoints
///             keep them), writes each group's lr into its device tensor;
///   launch()  the device's part: kernels only, whose arguments are the same
///             on every update (betas, eps, weight decay; the tensors), so a
///             graph of it replays correctly. Each tensor's step count lives
///             on the device as well (one double per tensor, advanced here),
///             and bias corrections, rho_t, the rectifier and RAdam's branch
///             are computed from it on the device, per tensor, branch-free.
/// step() is stage() then launch(). The trajectories are those of the host
/// coefficients up to rounding (tested); tensors whose step counts differ
/// (one lacked a gradient on some update) step together.
class CapturableStep {
 public:
  virtual ~CapturableStep() = default;
  virtual void set_capturable(bool on) = 0;
  virtual bool capturable() const = 0;
  virtual void stage() = 0;
  virtual void launch() = 0;
  /// Which tensors launch() reads and writes: changes when they change
  /// (state created or replaced, a tensor gaining or losing its gradient),
  /// so a graph captured under another value must be captured again.
  virtual uint64_t layout() const = 0;
};

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

/// What the three multi-tensor classes share: the guard of the next step
/// and the capture plan (set while capturable), and the CapturableStep
/// members that do not depend on the update rule (defined and instantiated
/// in multi_tensor.cpp for the three bases).
template <class Base, class State, class Options>
class MultiTensorStep : public Base, public GuardedStep, public CapturableStep {
 public:
  using Base::Base;
  /// The base's load, then a layout change for the capture plan.
  void load(torch::serialize::InputArchive& archive) override;
  void set_capturable(bool on) override;
  bool capturable() const override { return plan_ != nullptr; }
  void stage() override;
  uint64_t layout() const override;
  void guard_next_step(torch::Tensor ok) override { guard_ = std::move(ok); }

 protected:
  torch::Tensor guard_;
  std::shared_ptr<CapturePlan> plan_;  // set while capturable
};

class MultiTensorAdam
    : public MultiTensorStep<torch::optim::Adam, torch::optim::AdamParamState, torch::optim::AdamOptions> {
 public:
  using MultiTensorStep::MultiTensorStep;
  torch::Tensor step(LossClosure closure = nullptr) override;
  void launch() override;
  bool can_guard() const override;
  void retract_steps(int64_t k) override;
};

class MultiTensorAdamW
    : public MultiTensorStep<torch::optim::AdamW, torch::optim::AdamWParamState, torch::optim::AdamWOptions> {
 public:
  using MultiTensorStep::MultiTensorStep;
  torch::Tensor step(LossClosure closure = nullptr) override;
  void launch() override;
  bool can_guard() const override;
  void retract_steps(int64_t k) override;
};

class MultiTensorRAdam : public MultiTensorStep<RAdam, RAdamParamState, RAdamOptions> {
 public:
  using MultiTensorStep::MultiTensorStep;
  torch::Tensor step(LossClosure closure = nullptr) override;
  void launch() override;
  bool can_guard() const override { return true; }
  void retract_steps(int64_t k) override;
};

/// t *= s for every t, s a 0-dim tensor on their device (one foreach op on
/// LibTorch 2.x; a loop of the same kernels on 1.13, which lacks the overload).
void mul_all_(std::vector<torch::Tensor>& tensors, const torch::Tensor& s);

/// The global L2 norm of `tensors` (0-dim float; non-finite when any element
/// is), by one _foreach_norm and one norm of the stacked per-tensor norms.
torch::Tensor multi_tensor_norm(const std::vector<torch::Tensor>& tensors);

}  // namespace clinic
