#include "framework/optim/multi_tensor.h"

#include <ATen/ATen.h>

#include <cmath>
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

// m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2, the
// per-tensor classes' exact op sequence (mul_ then add_ / addcmul_).
void update_moments(Bucket& b, const TensorList& grads, double beta1, double beta2) {
  at::_foreach_mul_(b.exp_avg, beta1);
  at::_foreach_add_(b.exp_avg, grads, 1 - beta1);
  at::_foreach_mul_(b.exp_avg_sq, beta2);
  at::_foreach_addcmul_(b.exp_avg_sq, grads, grads, 1 - beta2);
}

// Adam's step with bias corrections: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
void adam_update(Bucket& b, double lr, double beta1, double beta2, double eps) {
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(b.step));
  const double bc2 = 1 - std::pow(beta2, static_cast<double>(b.step));
  TensorList denom = at::_foreach_sqrt(b.exp_avg_sq);
  at::_foreach_div_(denom, std::sqrt(bc2));
  at::_foreach_add_(denom, eps);
  at::_foreach_addcdiv_(b.params, b.exp_avg, denom, -(lr / bc1));
}

torch::Tensor run_closure(torch::optim::Optimizer::LossClosure& closure) {
  if (closure == nullptr) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

torch::Tensor MultiTensorAdam::step(LossClosure closure) {
  for (auto& group : param_groups_)  // AMSGrad: the per-tensor step (not in foreach here)
    if (static_cast<torch::optim::AdamOptions&>(group.options()).amsgrad())
      return torch::optim::Adam::step(closure);
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    for (Bucket& b : gather<torch::optim::AdamParamState>(state_, group.params())) {
      // L2 decay added to the gradient (a new tensor, as grad.add(p, wd)).
      TensorList grads = o.weight_decay() != 0
                             ? at::_foreach_add(b.grads, b.params, o.weight_decay())
                             : b.grads;
      update_moments(b, grads, beta1, beta2);
      adam_update(b, o.lr(), beta1, beta2, o.eps());
    }
  }
  return loss;
}

torch::Tensor MultiTensorAdamW::step(LossClosure closure) {
  for (auto& group : param_groups_)
    if (static_cast<torch::optim::AdamWOptions&>(group.options()).amsgrad())
      return torch::optim::AdamW::step(closure);
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    for (Bucket& b : gather<torch::optim::AdamWParamState>(state_, group.params())) {
      // Decoupled decay first, p *= 1 - lr * wd (Loshchilov & Hutter).
      if (o.weight_decay() != 0) at::_foreach_mul_(b.params, 1 - o.lr() * o.weight_decay());
      update_moments(b, b.grads, beta1, beta2);
      adam_update(b, o.lr(), beta1, beta2, o.eps());
    }
  }
  return loss;
}

torch::Tensor MultiTensorRAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
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
          at::_foreach_mul_(b.params, 1 - lr * wd);
        else
          grads = at::_foreach_add(b.grads, b.params, wd);
      }
      update_moments(b, grads, beta1, beta2);
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(t));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(t));
      const double rho_t = rho(beta2, t);
      const bool rectified = torch_flavour ? rho_t > 5.0 : rho_t >= 5.0;
      if (o.flavour() == RAdamFlavour::kClinic && wd != 0)
        at::_foreach_add_(b.params, b.params, -wd * lr);
      if (rectified) {
        if (reference && wd != 0) at::_foreach_add_(b.params, b.params, -wd * lr);
        TensorList denom = at::_foreach_sqrt(b.exp_avg_sq);
        at::_foreach_add_(denom, o.eps());
        at::_foreach_addcdiv_(b.params, b.exp_avg, denom,
                              -(lr * rectifier(beta2, t) * std::sqrt(bc2) / bc1));
      } else if (torch_flavour || (reference && o.degenerate_to_sgd())) {
        if (reference && wd != 0) at::_foreach_add_(b.params, b.params, -wd * lr);
        at::_foreach_add_(b.params, b.exp_avg, -lr / bc1);
      }
    }
  }
  return loss;
}

torch::Tensor multi_tensor_norm(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return torch::zeros({});
  torch::NoGradGuard g;
  TensorList norms = at::_foreach_norm(tensors, 2);
  for (auto& n : norms) n = n.to(torch::kFloat);
  return torch::stack(norms).norm(2);
}

}  // namespace clinic
