#include "framework/amp/grad_scaler.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "framework/optim/multi_tensor.h"

namespace clinic {

LossScaler::LossScaler(double init_scale, int64_t window, double threshold,
                       bool enabled)
    : window_(window), threshold_(threshold), enabled_(enabled) {
  state_.scale = enabled ? init_scale : 1.0;
}

void LossScaler::update(bool overflow) {
  if (!enabled_) return;
  auto& s = state_;
  if (overflow) {
    // tolerance 0: every overflow halves the scale (fairseq default).
    s.last_overflow_iter = s.iter;
    s.scale = std::max(s.scale / 2.0, threshold_);
    s.last_rescale_iter = s.iter;
  } else if ((s.iter - s.last_overflow_iter) % window_ == 0) {
    s.scale *= 2.0;
    s.last_rescale_iter = s.iter;
  }
  s.iter += 1;
}

std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

torch::Tensor scale_grads_and_norm(const std::vector<torch::Tensor>& params,
                                   double factor) {
  torch::NoGradGuard g;
  std::vector<torch::Tensor> grads = defined_grads(params);
  // One pass over all gradients per op (multi_tensor.h): scale, then norms.
  if (factor != 1.0 && !grads.empty()) at::_foreach_mul_(grads, factor);
  return multi_tensor_norm(grads);
}

torch::Tensor scale_grads_and_norm(const std::vector<torch::Tensor>& params,
                                   const torch::Tensor& factor) {
  torch::NoGradGuard g;
  std::vector<torch::Tensor> grads = defined_grads(params);
  mul_all_(grads, factor);
  return multi_tensor_norm(grads);
}

void clip_grads(const std::vector<torch::Tensor>& params, double max_norm,
                double total_norm) {
  if (max_norm <= 0 || total_norm <= max_norm) return;
  torch::NoGradGuard g;
  std::vector<torch::Tensor> grads = defined_grads(params);
  if (!grads.empty()) at::_foreach_mul_(grads, max_norm / (total_norm + 1e-6));
}

void clip_grads(const std::vector<torch::Tensor>& params, double max_norm,
                const torch::Tensor& total_norm, const torch::Tensor& ok) {
  if (max_norm <= 0) return;
  torch::NoGradGuard g;
  std::vector<torch::Tensor> grads = defined_grads(params);
  // The host rule's factor in the same double arithmetic; exactly 1 at or
  // under the clip (and where not ok), which leaves every gradient's bits.
  auto o = total_norm.options();
  mul_all_(grads, torch::where(ok.logical_and(total_norm > max_norm),
                               torch::full({}, max_norm, o).div(total_norm + 1e-6),
                               torch::full({}, 1.0, o)));
}

}  // namespace clinic
