#include "framework/train/loss.h"

#include "framework/model.h"

namespace clinic {

Registry<LossBuilder>& loss_registry() {
  static Registry<LossBuilder> r("criterion");
  return r;
}

LossOut label_smoothed_nll(const torch::Tensor& logits,
                           const torch::Tensor& target, double eps,
                           SmoothingMass mass) {
  const int64_t V = logits.size(-1);
  auto lprobs = torch::log_softmax(logits.to(torch::kFloat), -1).view({-1, V});
  auto tgt = target.reshape({-1, 1});
  auto keep = tgt.ne(kPad).to(torch::kFloat);
  auto nll = -(lprobs.gather(1, tgt) * keep).sum();
  if (eps == 0) return LossOut{nll, nll.detach()};
  auto smooth = -(lprobs.sum(-1, /*keepdim=*/true) * keep).sum();
  LossOut out;
  if (mass == SmoothingMass::kEpsOverV) {
    out.loss = (1.0 - eps) * nll + (eps / V) * smooth;
  } else {
    double eps_i = eps / (V - 1);
    out.loss = (1.0 - eps - eps_i) * nll + eps_i * smooth;
  }
  out.nll = nll.detach();
  return out;
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
