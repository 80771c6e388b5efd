#include "framework/optim/multi_tensor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <tuple>

#include "framework/optim/state_key.h"

namespace clinic {
namespace {

using TensorList = std::vector<torch::Tensor>;

// Tensors of one group that step together: same device, dtype and step.
struct Bucket {
  int64_t step = 0;
  TensorList params, grads, exp_avg, exp_avg_sq;
};

// Walks a group's parameters with gradients, creating the state the
// per-tensor class would create (zeros_like, step 0), advancing each
// tensor's step by one, and buckets them. `State` is the per-tensor class's
// state type, so checkpoints are interchangeable with it.
template <typename State, typename Map>
std::vector<Bucket> gather(Map& state, const TensorList& params) {
  std::map<std::tuple<std::string, int, int64_t>, Bucket> by;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    TORCH_CHECK(!p.grad().is_sparse(), "multi-tensor optimizers take dense gradients");
    auto key = optim_state_key(p);
    auto it = state.find(key);
    if (it == state.end()) {
      auto s = std::make_unique<State>();
      s->step(0);
      s->exp_avg(torch::zeros_like(p, at::MemoryFormat::Preserve));
      s->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Preserve));
      it = state.emplace(key, std::move(s)).first;
    }
    auto& st = static_cast<State&>(*it->second);
    st.step(st.step() + 1);
    Bucket& b = by[{p.device().str(), static_cast<int>(p.scalar_type()), st.step()}];
    b.step = st.step();
    b.params.push_back(p);
    b.grads.push_back(p.grad());
    b.exp_avg.push_back(st.exp_avg());
    b.exp_avg_sq.push_back(st.exp_avg_sq());
  }
  std::vector<Bucket> out;
  for (auto& [k, b] : by) out.push_back(std::move(b));
  return out;
}

// The masks of a guarded step (GuardedStep). Each masked op is the unmasked
// op with one operand replaced by a 0-dim tensor that leaves it unchanged
// where ok (a factor f, a divisor 1) and makes it the identity where not
// (a factor 1, a divisor inf: x / inf = 0 for finite x).
struct Guard {
  torch::Tensor ok, not_ok, div;  // div: 1 where ok, inf where not (double)
  explicit Guard(const torch::Tensor& g) {
    if (!g.defined()) return;
    ok = g.to(torch::kBool).reshape({});
    not_ok = ok.logical_not();
    div = factor(1.0, std::numeric_limits<double>::infinity());
  }
  bool on() const { return ok.defined(); }
  /// f where ok, `otherwise` where not.
  torch::Tensor factor(double f, double otherwise = 1.0) const {
    auto o = torch::TensorOptions().dtype(torch::kDouble).device(ok.device());
    return torch::where(ok, torch::full({}, f, o), torch::full({}, otherwise, o));
  }
};

// m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2, the
// per-tensor classes' exact op sequence (mul_ then add_ / addcmul_).
// Guarded: a skipped step's gradient is zeroed and the decays are 1, so m
// and v are unchanged (m * 1 + 0).
void update_moments(Bucket& b, const TensorList& grads, double beta1, double beta2,
                    const Guard& g) {
  if (g.on()) {
    for (const auto& t : grads) const_cast<torch::Tensor&>(t).masked_fill_(g.not_ok, 0);
    mul_all_(b.exp_avg, g.factor(beta1));
  } else {
    at::_foreach_mul_(b.exp_avg, beta1);
  }
  at::_foreach_add_(b.exp_avg, grads, 1 - beta1);
  if (g.on())
    mul_all_(b.exp_avg_sq, g.factor(beta2));
  else
    at::_foreach_mul_(b.exp_avg_sq, beta2);
  at::_foreach_addcmul_(b.exp_avg_sq, grads, grads, 1 - beta2);
}

// p -= c p (decay by a scalar step), guarded as p -= c p / div.
void decay_params(TensorList& params, double c, const Guard& g) {
  if (!g.on()) {
    at::_foreach_add_(params, params, -c);
    return;
  }
  for (auto& p : params) p.addcdiv_(p, g.div, -c);
}

// p *= f (decoupled weight decay), guarded: f where ok, 1 where not.
void scale_params(TensorList& params, double f, const Guard& g) {
  if (g.on())
    mul_all_(params, g.factor(f));
  else
    at::_foreach_mul_(params, f);
}

// p += c * m / denom; guarded, denom * div makes a skipped step add 0.
void apply_step(Bucket& b, TensorList& denom, double c, const Guard& g) {
  if (g.on()) mul_all_(denom, g.div);
  at::_foreach_addcdiv_(b.params, b.exp_avg, denom, c);
}

// Adam's step with bias corrections: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
void adam_update(Bucket& b, double lr, double beta1, double beta2, double eps, const Guard& g) {
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(b.step));
  const double bc2 = 1 - std::pow(beta2, static_cast<double>(b.step));
  TensorList denom = at::_foreach_sqrt(b.exp_avg_sq);
  at::_foreach_div_(denom, std::sqrt(bc2));
  at::_foreach_add_(denom, eps);
  apply_step(b, denom, -(lr / bc1), g);
}

template <typename State, typename Map>
void retract(Map& state, int64_t k) {
  for (auto& kv : state) {
    auto& st = static_cast<State&>(*kv.second);
    st.step(std::max<int64_t>(0, st.step() - k));
  }
}

torch::Tensor run_closure(torch::optim::Optimizer::LossClosure& closure) {
  if (closure == nullptr) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

torch::Tensor MultiTensorAdam::step(LossClosure closure) {
  if (!can_guard()) return torch::optim::Adam::step(closure);  // AMSGrad: the per-tensor step
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    for (Bucket& b : gather<torch::optim::AdamParamState>(state_, group.params())) {
      // L2 decay added to the gradient (a new tensor, as grad.add(p, wd)).
      TensorList grads = o.weight_decay() != 0
                             ? at::_foreach_add(b.grads, b.params, o.weight_decay())
                             : b.grads;
      update_moments(b, grads, beta1, beta2, guard);
      adam_update(b, o.lr(), beta1, beta2, o.eps(), guard);
    }
  }
  return loss;
}

// AMSGrad is not in foreach here: such a group takes the per-tensor step,
// which has no guard.
bool MultiTensorAdam::can_guard() const {
  for (const auto& group : param_groups_)
    if (static_cast<const torch::optim::AdamOptions&>(group.options()).amsgrad()) return false;
  return true;
}

void MultiTensorAdam::retract_steps(int64_t k) { retract<torch::optim::AdamParamState>(state_, k); }

torch::Tensor MultiTensorAdamW::step(LossClosure closure) {
  if (!can_guard()) return torch::optim::AdamW::step(closure);  // AMSGrad: the per-tensor step
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    for (Bucket& b : gather<torch::optim::AdamWParamState>(state_, group.params())) {
      // Decoupled decay first, p *= 1 - lr * wd (Loshchilov & Hutter).
      if (o.weight_decay() != 0) scale_params(b.params, 1 - o.lr() * o.weight_decay(), guard);
      update_moments(b, b.grads, beta1, beta2, guard);
      adam_update(b, o.lr(), beta1, beta2, o.eps(), guard);
    }
  }
  return loss;
}

bool MultiTensorAdamW::can_guard() const {
  for (const auto& group : param_groups_)
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) return false;
  return true;
}

void MultiTensorAdamW::retract_steps(int64_t k) { retract<torch::optim::AdamWParamState>(state_, k); }

torch::Tensor MultiTensorRAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (auto& group : param_groups_) {
    auto& o = static_cast<RAdamOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    const double lr = o.lr(), wd = o.weight_decay();
    const bool torch_flavour = o.flavour() == RAdamFlavour::kTorch;
    const bool reference = o.flavour() == RAdamFlavour::kReference;
    for (Bucket& b : gather<RAdamParamState>(state_, group.params())) {
      // The same branches as RAdam::step (radam.h lists the flavours), taken
      // once per bucket: every tensor in it is at step t.
      const int64_t t = b.step;
      TensorList grads = b.grads;
      if (torch_flavour && wd != 0) {
        if (o.decoupled_weight_decay())
          scale_params(b.params, 1 - lr * wd, guard);
        else
          grads = at::_foreach_add(b.grads, b.params, wd);
      }
      update_moments(b, grads, beta1, beta2, guard);
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(t));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(t));
      const double rho_t = rho(beta2, t);
      const bool rectified = torch_flavour ? rho_t > 5.0 : rho_t >= 5.0;
      if (o.flavour() == RAdamFlavour::kClinic && wd != 0) decay_params(b.params, wd * lr, guard);
      if (rectified) {
        if (reference && wd != 0) decay_params(b.params, wd * lr, guard);
        TensorList denom = at::_foreach_sqrt(b.exp_avg_sq);
        at::_foreach_add_(denom, o.eps());
        apply_step(b, denom, -(lr * rectifier(beta2, t) * std::sqrt(bc2) / bc1), guard);
      } else if (torch_flavour || (reference && o.degenerate_to_sgd())) {
        if (reference && wd != 0) decay_params(b.params, wd * lr, guard);
        if (guard.on())
          for (size_t i = 0; i < b.params.size(); ++i)
            b.params[i].addcdiv_(b.exp_avg[i], guard.div, -lr / bc1);
        else
          at::_foreach_add_(b.params, b.exp_avg, -lr / bc1);
      }
    }
  }
  return loss;
}

void MultiTensorRAdam::retract_steps(int64_t k) { retract<RAdamParamState>(state_, k); }

void mul_all_(std::vector<torch::Tensor>& tensors, const torch::Tensor& s) {
  if (tensors.empty()) return;
#if TORCH_VERSION_MAJOR >= 2
  at::_foreach_mul_(tensors, s);
#else
  for (auto& t : tensors) t.mul_(s);
#endif
}

torch::Tensor multi_tensor_norm(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return torch::zeros({});
  torch::NoGradGuard g;
  TensorList norms = at::_foreach_norm(tensors, 2);
  for (auto& n : norms) n = n.to(torch::kFloat);
  return torch::stack(norms).norm(2);
}

}  // namespace clinic
