#include "framework/train/loss.h"

#include "framework/model.h"

namespace clinic {

Registry<LossBuilder>& loss_registry() {
  static Registry<LossBuilder> r("criterion");
  return r;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// loss = sum_i keep_i (a nll_i + b smooth_i), nll_i = -log p_{i,t_i},
// smooth_i = -sum_v log p_{i,v}. Its gradient in closed form,
//   d loss / d logit_{i,v} = keep_i ((a + b V) p_{i,v} - b - a [v = t_i]),
// replaces autograd's gather/sum backward (a zero-filled [N, V] scatter, a
// broadcast [N, V] add, then log_softmax's backward): one exp pass and two
// in-place passes over the largest tensor of the step. lprobs: [N, V] fp32,
// kept for backward, as log_softmax's own backward would keep it.
struct SmoothedNll : public torch::autograd::Function<SmoothedNll> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& target, double a, double b) {
    const int64_t V = logits.size(-1);
    auto lprobs = torch::log_softmax(logits.to(torch::kFloat), -1).view({-1, V});
    auto tgt = target.reshape({-1, 1});
    auto keep = tgt.ne(kPad).to(torch::kFloat);                 // [N, 1]
    auto nll = -(lprobs.gather(1, tgt) * keep).sum();
    auto loss = a * nll;
    if (b != 0) loss = loss - b * (lprobs.sum(-1, /*keepdim=*/true) * keep).sum();
    ctx->save_for_backward({lprobs, tgt, keep});
    ctx->saved_data["a"] = a;
    ctx->saved_data["b"] = b;
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    ctx->saved_data["sizes"] = logits.sizes().vec();
    ctx->mark_non_differentiable({nll});
    return {loss, nll};
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto saved = ctx->get_saved_variables();
    const auto& lprobs = saved[0];
    const auto& tgt = saved[1];
    const double a = ctx->saved_data["a"].toDouble(), b = ctx->saved_data["b"].toDouble();
    const int64_t V = lprobs.size(1);
    auto w = saved[2] * g[0];                                   // [N, 1]
    auto grad = lprobs.exp().mul_(w * (a + b * V));
    if (b != 0) grad.sub_(w * b);
    grad.scatter_add_(1, tgt, w * -a);
    auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.view(ctx->saved_data["sizes"].toIntVector()).to(dtype), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

LossOut label_smoothed_nll(const torch::Tensor& logits,
                           const torch::Tensor& target, double eps,
                           SmoothingMass mass) {
  const int64_t V = logits.size(-1);
  double a = 1.0, b = 0.0;
  if (eps != 0 && mass == SmoothingMass::kEpsOverV) {
    a = 1.0 - eps;
    b = eps / V;
  } else if (eps != 0) {
    b = eps / (V - 1);
    a = 1.0 - eps - b;
  }
  auto out = SmoothedNll::apply(logits, target, a, b);
  return LossOut{out[0], out[1]};
}

void register_builtin_losses() {
  auto& r = loss_registry();
  r.add("label_smoothed_cross_entropy", [](const TrainConfig& c) {
    auto mass = c.smoothing_mass == "eps_over_v_minus_1"
                    ? SmoothingMass::kEpsOverVMinus1
                    : SmoothingMass::kEpsOverV;
    double eps = c.label_smoothing;
    return LossFn([eps, mass](const torch::Tensor& l, const torch::Tensor& t) {
      return label_smoothed_nll(l, t, eps, mass);
    });
  });
  r.add("cross_entropy", [](const TrainConfig&) {
    return LossFn([](const torch::Tensor& l, const torch::Tensor& t) {
      return label_smoothed_nll(l, t, 0.0, SmoothingMass::kEpsOverV);
    });
  });
}

}  // namespace clinic
