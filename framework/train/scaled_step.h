#pragma once
// The step rule of one update under the loss scaler, after the gradients are
// unscaled and their global norm is known: one function shared by the trainer
// and `clinic bench`, so the benchmark times the rule training runs.
//
//   non-finite gradient (an fp16 overflow, or a NaN)  -> no step; the scaler
//       halves the scale (fairseq's DynamicLossScaler, tolerance 0)
//   finite  -> before_clip (may change the norm clipping uses: the gradient
//       carry adds a held gradient) -> clip to clip_norm -> before_step (the
//       schedule's lr) -> optimizer step -> the scaler counts a good update
//       (x2 after its window)
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "framework/amp/grad_scaler.h"

namespace clinic {

struct StepHooks {
  std::function<double(double)> before_clip;  // the norm in, the norm to clip with out
  std::function<void()> before_step;
};

/// True when the optimizer stepped, false when the update was skipped.
bool scaled_step(LossScaler& scaler, bool finite, double grad_norm, double clip_norm,
                 const std::vector<torch::Tensor>& params, torch::optim::Optimizer& optimizer,
                 const StepHooks& hooks = {});

}  // namespace clinic
