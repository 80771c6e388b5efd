#include "framework/train/device_step.h"

#include <algorithm>

namespace clinic {

DeviceStep::DeviceStep(torch::Device device, LossScaler& scaler, const TrainConfig& train)
    : scaler_(scaler), train_(train), opts_(torch::TensorOptions().dtype(torch::kDouble).device(device)) {
  tally_ = torch::zeros({9}, opts_);
  last_ = torch::zeros({3}, opts_);
  scale_ = scalar(1.0);
  sstate_ = torch::zeros({3}, opts_);
  load_host();
}

torch::Tensor DeviceStep::scalar(double v) const { return torch::full({}, v, opts_); }

void DeviceStep::load_host(int64_t bad_run) {
  torch::NoGradGuard g;
  tally_[7].fill_(static_cast<double>(bad_run));
  tally_[8].copy_(torch::maximum(tally_[8], tally_[7]));
  const LossScalerState& s = scaler_.state();
  scale_.fill_(scaler_.scale());
  sstate_.copy_(torch::tensor({static_cast<double>(s.iter), static_cast<double>(s.last_overflow_iter),
                               static_cast<double>(s.last_rescale_iter)},
                              torch::kDouble));
}

torch::Tensor DeviceStep::unscale_and_norm(const std::vector<torch::Tensor>& params,
                                           const torch::Tensor& tokens) {
  // The eager path's factor 1 / (scale * tokens), in the same double
  // arithmetic, so the two paths scale by the same float.
  return scale_grads_and_norm(params, torch::reciprocal(scale_ * tokens.clamp_min(1.0)));
}

void DeviceStep::step(const torch::Tensor& loss_sum, const torch::Tensor& nll_sum,
                      const torch::Tensor& norm, const torch::Tensor& tokens,
                      const std::vector<torch::Tensor>& params, GuardedStep& guarded,
                      const std::function<void()>& optimizer_step) {
  torch::NoGradGuard g;
  const torch::Tensor nd = norm.detach().to(torch::kDouble).reshape({});
  const torch::Tensor ld = loss_sum.detach().to(torch::kDouble).reshape({});
  const torch::Tensor nl = nll_sum.detach().to(torch::kDouble).reshape({});
  const torch::Tensor zero = scalar(0.0);
  const torch::Tensor ok = torch::isfinite(nd).logical_and(torch::isfinite(ld));
  const torch::Tensor overflow = ok.logical_not();
  clip_grads(params, train_.clip_norm, nd, ok);
  guarded.guard_next_step(ok);
  optimizer_step();

  torch::Tensor bad = overflow;  // a skip the scaler does not account for
  if (scaler_.enabled()) {
    // The trainer's eager rule: an overflow is the scaler's (not a bad
    // step) while the loss is finite and the scale above its floors.
    const double floor = std::max(train_.threshold_loss_scale, train_.min_loss_scale);
    bad = overflow.logical_and(torch::isfinite(ld).logical_and(scale_ > floor).logical_not());
    // LossScaler::update on the device copy.
    torch::Tensor iter = sstate_[0], last_of = sstate_[1], last_rescale = sstate_[2];
    torch::Tensor grow = ok.logical_and(
        torch::fmod(iter - last_of, static_cast<double>(train_.loss_scale_window)) == 0);
    torch::Tensor halved = torch::clamp_min(scale_ / 2.0, train_.threshold_loss_scale);
    torch::Tensor next = torch::where(overflow, halved, torch::where(grow, scale_ * 2.0, scale_));
    torch::Tensor state = torch::stack({iter + 1, torch::where(overflow, iter, last_of),
                                        torch::where(overflow.logical_or(grow), iter, last_rescale)});
    scale_.copy_(next);
    sstate_.copy_(state);
  }
  const torch::Tensor okd = ok.to(torch::kDouble);
  tally_.narrow(0, 0, 7).add_(torch::stack({torch::where(ok, ld, zero), torch::where(ok, nl, zero),
                                            okd * tokens,
                                            torch::where(ok, nd, zero), okd, 1.0 - okd,
                                            bad.to(torch::kDouble)}));
  torch::Tensor run = tally_[7];
  torch::Tensor next_run = torch::where(bad, run + 1.0, torch::where(ok, zero, run));
  tally_[8].copy_(torch::maximum(tally_[8], next_run));
  tally_[7].copy_(next_run);
  last_.copy_(torch::stack({torch::where(ok, ld, zero), nd, okd}));
}

void DeviceStep::keep_last() {
  if (record_) records_.push_back(last_.clone());
}

DeviceTally DeviceStep::read(HostReads& reads) {
  std::vector<torch::Tensor> parts = {tally_, scale_.reshape({1}), sstate_};
  parts.insert(parts.end(), records_.begin(), records_.end());
  const std::vector<double> v = reads.values(torch::cat(parts));
  DeviceTally t;
  t.loss = v[0];
  t.nll = v[1];
  t.tokens = static_cast<int64_t>(v[2]);
  t.grad_norm = v[3];
  t.stepped = static_cast<int64_t>(v[4]);
  t.skipped = static_cast<int64_t>(v[5]);
  t.nonfinite = static_cast<int64_t>(v[6]);
  t.bad_run = static_cast<int64_t>(v[7]);
  t.max_bad_run = static_cast<int64_t>(v[8]);
  if (scaler_.enabled()) {
    LossScalerState& s = scaler_.state();
    s.scale = v[9];
    s.iter = static_cast<int64_t>(v[10]);
    s.last_overflow_iter = static_cast<int64_t>(v[11]);
    s.last_rescale_iter = static_cast<int64_t>(v[12]);
  }
  for (size_t i = 0; i < records_.size(); ++i)
    t.updates.push_back({v[13 + 3 * i], v[14 + 3 * i], v[15 + 3 * i]});
  records_.clear();
  torch::NoGradGuard g;
  tally_.narrow(0, 0, 7).zero_();
  tally_[8].copy_(tally_[7]);
  return t;
}

}  // namespace clinic
