#include "framework/train/scaled_step.h"

namespace clinic {

bool scaled_step(LossScaler& scaler, bool finite, double grad_norm, double clip_norm,
                 const std::vector<torch::Tensor>& params, torch::optim::Optimizer& optimizer,
                 const StepHooks& hooks) {
  if (!finite) {
    scaler.update(/*overflow=*/true);
    return false;
  }
  if (hooks.before_clip) grad_norm = hooks.before_clip(grad_norm);
  clip_grads(params, clip_norm, grad_norm);
  if (hooks.before_step) hooks.before_step();
  optimizer.step();
  scaler.update(/*overflow=*/false);
  return true;
}

}  // namespace clinic
