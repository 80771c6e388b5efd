#include "framework/diagnostics/optimizer_state.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <map>

#include "framework/optim/radam.h"
#include "framework/optim/state_key.h"

namespace clinic {

namespace {
// v, and the divisor the optimizer applies to it before the sqrt.
// m and its bias correction 1 - beta1^t, for the first-moment ratio.
struct MomentView {
  torch::Tensor v, m;
  double v_scale = 1, eps = 0;
  double v_correction = 1, m_correction = 1;  // 1 - beta2^t, 1 - beta1^t
};

template <class State, class Options>
bool adam_like(torch::optim::OptimizerParamState* st, const torch::optim::OptimizerOptions& o,
               MomentView* out) {
  auto* s = dynamic_cast<State*>(st);
  auto* opt = dynamic_cast<const Options*>(&o);
  if (!s || !opt || !s->exp_avg_sq().defined()) return false;
  double beta1 = std::get<0>(opt->betas()), beta2 = std::get<1>(opt->betas());
  const auto t = static_cast<double>(s->step());
  out->v = s->exp_avg_sq();
  out->m = s->exp_avg();
  out->v_scale = 1 - std::pow(beta2, t);
  out->v_correction = out->v_scale;
  out->m_correction = 1 - std::pow(beta1, t);
  out->eps = opt->eps();
  return true;
}
}  // namespace

SecondMomentSummary summarize_second_moments(torch::optim::Optimizer& optimizer,
                                             const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard g;
  SecondMomentSummary out;
  // Which group's options apply to which parameter.
  std::map<const void*, const torch::optim::OptimizerOptions*> options_of;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) options_of[p.unsafeGetTensorImpl()] = &group.options();
  auto& state = optimizer.state();
  int64_t total = 0, dominated = 0;
  double m_sq = 0, v_sum = 0;  // sum of m_hat^2 and of v_hat
  std::vector<torch::Tensor> sqrt_vs;
  for (const auto& p : params) total += p.numel();
  const int64_t stride = std::max<int64_t>(1, total / (1 << 20));
  for (const auto& p : params) {
    auto it = state.find(optim_state_key(p));
    auto o = options_of.find(p.unsafeGetTensorImpl());
    MomentView m;
    bool ok = it != state.end() && o != options_of.end() &&
              (adam_like<torch::optim::AdamParamState, torch::optim::AdamOptions>(
                   it->second.get(), *o->second, &m) ||
               adam_like<torch::optim::AdamWParamState, torch::optim::AdamWOptions>(
                   it->second.get(), *o->second, &m));
    if (!ok && it != state.end()) {
      auto* s = dynamic_cast<RAdamParamState*>(it->second.get());
      auto* opt = o != options_of.end() ? dynamic_cast<const RAdamOptions*>(o->second) : nullptr;
      if (s && opt && s->exp_avg_sq().defined()) {
        const auto t = static_cast<double>(s->step());
        m.v = s->exp_avg_sq();
        m.m = s->exp_avg();
        m.v_scale = 1;  // eps is added to sqrt(v) itself
        m.v_correction = 1 - std::pow(std::get<1>(opt->betas()), t);
        m.m_correction = 1 - std::pow(std::get<0>(opt->betas()), t);
        m.eps = opt->eps();
        ok = true;
      }
    }
    if (!ok) {
      out.tensor_eps_dominated.push_back(NAN);
      continue;
    }
    out.available = true;
    out.eps = m.eps;
    auto sq = (m.v.detach().to(torch::kFloat) / m.v_scale).sqrt().reshape(-1);
    int64_t d = (sq < m.eps).sum().item<int64_t>();
    dominated += d;
    out.tensor_eps_dominated.push_back(static_cast<double>(d) / std::max<int64_t>(1, sq.numel()));
    sqrt_vs.push_back(sq.slice(0, 0, sq.numel(), stride).to(torch::kCPU));
    if (m.m.defined() && m.m_correction > 0 && m.v_correction > 0) {
      m_sq += m.m.detach().to(torch::kDouble).div(m.m_correction).pow(2).sum().item<double>();
      v_sum += m.v.detach().to(torch::kDouble).sum().item<double>() / m.v_correction;
    }
  }
  if (!out.available) return out;
  out.eps_dominated = static_cast<double>(dominated) / std::max<int64_t>(1, total);
  if (v_sum > 0) out.first_moment_ratio = std::sqrt(m_sq / v_sum);
  auto all = std::get<0>(torch::cat(sqrt_vs).to(torch::kDouble).sort());
  const int64_t n = all.numel();
  for (double q : {0.01, 0.1, 0.5, 0.9, 0.99})
    out.sqrt_v_quantiles.push_back(
        all[std::min<int64_t>(n - 1, static_cast<int64_t>(q * (n - 1) + 0.5))].item<double>());
  return out;
}

}  // namespace clinic
