#pragma once
// train.zero_grad: false. A training loop that never calls
// optimizer.zero_grad() hands every step the sum of all gradients so far:
// backward() adds this step's gradient to what the previous step left in
// .grad (after the previous clip scaled it in place), then the clip and the
// step see that sum. Case B's report (docs/cases.md) came from such a loop:
// the carried gradient never shrinks when the loss reaches 0, so Adam keeps
// taking full steps, the weights grow, and dropout masks turn the growing
// logits into loss spikes. Reproducing it is the only use; it is not a
// training technique.
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace clinic {

class GradientCarry {
 public:
  explicit GradientCarry(bool on) : on_(on) {}
  bool on() const { return on_; }

  /// Adds the gradients kept by the previous update to `params`' gradients
  /// (this update's, already divided by its token count) and returns the
  /// norm of the sum, the norm the clip must see. Off or nothing kept yet:
  /// returns `norm`, this update's own.
  double add_to(const std::vector<torch::Tensor>& params, double norm) const;

  /// Keeps `params`' gradients as the optimizer stepped on them (after the
  /// clip) for the next update.
  void keep(const std::vector<torch::Tensor>& params);

  /// Checkpoint extras ("grad_carry/<i>", one per parameter with a kept
  /// gradient), so that a resumed run carries the same gradients.
  void save(std::map<std::string, torch::Tensor>& extras) const;
  /// From a checkpoint's extras; `path` names it in the error when the kept
  /// gradients do not fit `params` (another model).
  void restore(const std::map<std::string, torch::Tensor>& extras,
               const std::vector<torch::Tensor>& params, const std::string& path);

 private:
  bool on_;
  std::vector<torch::Tensor> kept_;  // per parameter; undefined: no gradient
};

}  // namespace clinic
