#include "framework/amp/grad_scaler.h"

#include <algorithm>

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

torch::Tensor scale_grads_and_norm(const std::vector<torch::Tensor>& params,
                                   double factor) {
  std::vector<torch::Tensor> norms;
  torch::NoGradGuard g;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    auto& grad = p.mutable_grad();
    if (factor != 1.0) grad.mul_(factor);
    norms.push_back(grad.norm(2).to(torch::kFloat));
  }
  if (norms.empty()) return torch::zeros({});
  return torch::stack(norms).norm(2);
}

void clip_grads(const std::vector<torch::Tensor>& params, double max_norm,
                double total_norm) {
  if (max_norm <= 0 || total_norm <= max_norm) return;
  torch::NoGradGuard g;
  double coef = max_norm / (total_norm + 1e-6);
  for (const auto& p : params)
    if (p.grad().defined()) p.mutable_grad().mul_(coef);
}

}  // namespace clinic
