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

// Tensors of one group that step together: same device, dtype and step.
struct MultiTensorBucket {
  int64_t step = 0;
  std::vector<torch::Tensor> params, grads, exp_avg, exp_avg_sq;
};

// What stage() leaves for launch() (CapturableStep). A bucket here is one
// group's tensors on one (device, dtype), whatever their step counts.
struct CapturePlan {
  struct Bucket : MultiTensorBucket {
    size_t group = 0;
    std::vector<OptimStateKey> keys;  // which tensors, in order
    torch::Tensor steps;  // [n] double on the device: each tensor's step count
  };
  std::vector<torch::Tensor> lr;  // per group: 0-dim double on the device
  std::vector<Bucket> buckets;
  bool dirty = true;    // device step counts to be rebuilt from the host's
  // Changes whenever a bucket's tensors do (other tensors, or the same
  // state replaced by load()): a graph captured under another layout reads
  // memory the step no longer uses and must be captured again.
  uint64_t layout = 0;
};

namespace {

using TensorList = std::vector<torch::Tensor>;
using Bucket = MultiTensorBucket;

// p's state, created as the per-tensor class creates it (zeros_like, step
// 0) when missing, with its step advanced by one. p has a dense gradient.
template <typename State, typename Map>
State& advance(Map& state, const torch::Tensor& p) {
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
  return st;
}

// Walks a group's parameters with gradients, advancing each one's state
// (advance) and buckets them. `State` is the per-tensor class's
// state type, so checkpoints are interchangeable with it.
template <typename State, typename Map>
std::vector<Bucket> gather(Map& state, const TensorList& params) {
  std::map<std::tuple<std::string, int, int64_t>, Bucket> by;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    State& st = advance<State>(state, p);
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

// ---- capturable steps (CapturableStep) ------------------------------------

bool same_memory(const TensorList& a, const TensorList& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].data_ptr() != b[i].data_ptr()) return false;
  return true;
}

// stage(): the host's half. Walks the groups as gather() does (same state,
// same host step counts), writes each group's lr into its device tensor and
// buckets the tensors by (group, device, dtype). The device copies of the
// step counts are kept where a bucket holds the same tensors as before;
// otherwise (first stage, a tensor gained or lost its gradient, a load or a
// retraction) they are rebuilt from the host's, one host-to-device copy.
template <typename State, typename Map, typename LrOf>
void stage_plan(CapturePlan& plan, Map& state,
                std::vector<torch::optim::OptimizerParamGroup>& groups, LrOf lr_of) {
  std::vector<CapturePlan::Bucket> next;
  std::vector<std::vector<double>> host_steps;
  std::map<std::tuple<size_t, std::string, int>, size_t> index;
  plan.lr.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const auto& p : groups[g].params()) {
      if (!p.grad().defined()) continue;
      State& st = advance<State>(state, p);
      const auto key = optim_state_key(p);
      auto [pos, fresh] =
          index.emplace(std::make_tuple(g, p.device().str(), static_cast<int>(p.scalar_type())), next.size());
      if (fresh) {
        next.emplace_back();
        next.back().group = g;
        host_steps.emplace_back();
      }
      CapturePlan::Bucket& b = next[pos->second];
      b.keys.push_back(key);
      b.params.push_back(p);
      b.grads.push_back(p.grad());
      b.exp_avg.push_back(st.exp_avg());
      b.exp_avg_sq.push_back(st.exp_avg_sq());
      host_steps[pos->second].push_back(static_cast<double>(st.step() - 1));  // launch() adds 1
      if (!plan.lr[g].defined())
        plan.lr[g] = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(p.device()));
    }
    if (plan.lr[g].defined()) plan.lr[g].fill_(lr_of(groups[g].options()));
  }
  // The device step counts keep their memory (a captured graph reads it):
  // a bucket of the same tensors as before keeps its tensor, and when the
  // host's counts changed under it (a load, a retraction) they are copied in.
  bool changed = next.size() != plan.buckets.size();
  for (size_t i = 0; i < next.size(); ++i) {
    CapturePlan::Bucket& b = next[i];
    const CapturePlan::Bucket* same = nullptr;
    for (const auto& old : plan.buckets)
      if (old.group == b.group && old.keys == b.keys) same = &old;
    if (same != nullptr) {
      b.steps = same->steps;
      if (plan.dirty) b.steps.copy_(torch::tensor(host_steps[i], torch::kDouble));
      changed = changed || !same_memory(same->params, b.params) ||
                !same_memory(same->grads, b.grads) || !same_memory(same->exp_avg, b.exp_avg) ||
                !same_memory(same->exp_avg_sq, b.exp_avg_sq);
    } else {
      b.steps = torch::tensor(host_steps[i], torch::kDouble).to(b.params.front().device());
      changed = true;
    }
  }
  if (changed) ++plan.layout;
  plan.buckets = std::move(next);
  plan.dirty = false;
}

// f where the guard is ok, 1 where not (f a tensor of coefficients).
torch::Tensor guarded_factor(const Guard& g, const torch::Tensor& f) {
  return g.on() ? torch::where(g.ok, f, torch::ones_like(f)) : f;
}

// t[i] *= f[i] for a list and a [n] tensor of per-tensor coefficients.
void mul_each_(TensorList& ts, const torch::Tensor& f) {
  const TensorList fs = f.unbind();
  for (size_t i = 0; i < ts.size(); ++i) ts[i].mul_(fs[i]);
}

// p[i] += c[i] * m[i] / (sqrt(v[i]) / bc2_sqrt[i] + eps): Adam's and RAdam's
// adaptive step with device coefficients. A guarded skip has c = 0, and
// m / denom is finite (m is, denom >= eps), so the parameters stay bit for bit.
void adaptive_step(CapturePlan::Bucket& b, torch::Tensor c, const torch::Tensor& bc2_sqrt,
                   double eps, const Guard& g) {
  if (g.on()) c = c * g.ok;
  TensorList denom = at::_foreach_sqrt(b.exp_avg_sq);
  if (bc2_sqrt.defined()) {
    const TensorList bs = bc2_sqrt.unbind();
    for (size_t i = 0; i < denom.size(); ++i) denom[i].div_(bs[i]);
  }
  at::_foreach_add_(denom, eps);
  TensorList upd = at::_foreach_div(b.exp_avg, denom);
  mul_each_(upd, c);
  at::_foreach_add_(b.params, upd);
}

// Adam's moments and bias-corrected step with the lr and step counts on
// the device (Adam and AdamW differ only in where the decay goes).
void adam_device_step(CapturePlan::Bucket& b, const TensorList& grads, const torch::Tensor& lr,
                      double beta1, double beta2, double eps, const Guard& g) {
  update_moments(b, grads, beta1, beta2, g);
  adaptive_step(b, -lr / (1 - torch::pow(beta1, b.steps)), (1 - torch::pow(beta2, b.steps)).sqrt(),
                eps, g);
}

template <typename Options>
double lr_of_options(const torch::optim::OptimizerOptions& o) {
  return static_cast<const Options&>(o).lr();
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
  if (plan_) {
    stage();
    launch();
    return loss;
  }
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

void MultiTensorAdam::retract_steps(int64_t k) {
  retract<torch::optim::AdamParamState>(state_, k);
  if (plan_) plan_->dirty = true;
}

torch::Tensor MultiTensorAdamW::step(LossClosure closure) {
  if (!can_guard()) return torch::optim::AdamW::step(closure);  // AMSGrad: the per-tensor step
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  if (plan_) {
    stage();
    launch();
    return loss;
  }
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

void MultiTensorAdamW::retract_steps(int64_t k) {
  retract<torch::optim::AdamWParamState>(state_, k);
  if (plan_) plan_->dirty = true;
}

torch::Tensor MultiTensorRAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  if (plan_) {
    stage();
    launch();
    return loss;
  }
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

void MultiTensorRAdam::retract_steps(int64_t k) {
  retract<RAdamParamState>(state_, k);
  if (plan_) plan_->dirty = true;
}

// ---- CapturableStep -----------------------------------------------------------
// set_capturable / load / stage / layout are MultiTensorStep's, the same for
// the three classes; launch() is each one's step with device coefficients
// (the branches of its step() above, as arithmetic on [n] tensors of
// per-tensor values).
template <class Base, class State, class Options>
void MultiTensorStep<Base, State, Options>::load(torch::serialize::InputArchive& archive) {
  Base::load(archive);
  if (plan_) plan_->dirty = true;
}

template <class Base, class State, class Options>
void MultiTensorStep<Base, State, Options>::set_capturable(bool on) {
  TORCH_CHECK(!on || this->can_guard(), "AMSGrad has no capturable step");
  if (!on) plan_.reset();
  else if (!plan_) plan_ = std::make_shared<CapturePlan>();
}

template <class Base, class State, class Options>
void MultiTensorStep<Base, State, Options>::stage() {
  TORCH_CHECK(plan_, "stage() needs set_capturable(true)");
  stage_plan<State>(*plan_, this->state_, this->param_groups_, lr_of_options<Options>);
}

template <class Base, class State, class Options>
uint64_t MultiTensorStep<Base, State, Options>::layout() const {
  return plan_ ? plan_->layout : 0;
}

template class MultiTensorStep<torch::optim::Adam, torch::optim::AdamParamState,
                               torch::optim::AdamOptions>;
template class MultiTensorStep<torch::optim::AdamW, torch::optim::AdamWParamState,
                               torch::optim::AdamWOptions>;
template class MultiTensorStep<RAdam, RAdamParamState, RAdamOptions>;

void MultiTensorAdam::launch() {
  TORCH_CHECK(plan_, "MultiTensorAdam::launch() needs set_capturable(true)");
  torch::NoGradGuard no_grad;
  // The guard is consumed here, not in stage(): inside a graph the ok
  // tensor is computed by the same replay, after the host staged.
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (CapturePlan::Bucket& b : plan_->buckets) {
    auto& o = static_cast<torch::optim::AdamOptions&>(param_groups_[b.group].options());
    const auto [beta1, beta2] = o.betas();
    b.steps.add_(1);
    TensorList grads = o.weight_decay() != 0
                           ? at::_foreach_add(b.grads, b.params, o.weight_decay())
                           : b.grads;
    adam_device_step(b, grads, plan_->lr[b.group].to(b.steps.device()), beta1, beta2, o.eps(),
                     guard);
  }
}

void MultiTensorAdamW::launch() {
  TORCH_CHECK(plan_, "MultiTensorAdamW::launch() needs set_capturable(true)");
  torch::NoGradGuard no_grad;
  // The guard is consumed here, not in stage(): inside a graph the ok
  // tensor is computed by the same replay, after the host staged.
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (CapturePlan::Bucket& b : plan_->buckets) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(param_groups_[b.group].options());
    const auto [beta1, beta2] = o.betas();
    b.steps.add_(1);
    const torch::Tensor lr = plan_->lr[b.group].to(b.steps.device());
    if (o.weight_decay() != 0) mul_all_(b.params, guarded_factor(guard, 1 - lr * o.weight_decay()));
    adam_device_step(b, b.grads, lr, beta1, beta2, o.eps(), guard);
  }
}

// RAdam with t a tensor: rho_t, the threshold and the rectifier per tensor;
// the host's `if (rectified) ... else if (sgd) ...` becomes two coefficients,
// each 0 where its branch is not taken.
void MultiTensorRAdam::launch() {
  TORCH_CHECK(plan_, "MultiTensorRAdam::launch() needs set_capturable(true)");
  torch::NoGradGuard no_grad;
  // The guard is consumed here, not in stage(): inside a graph the ok
  // tensor is computed by the same replay, after the host staged.
  const Guard guard(guard_);
  guard_ = torch::Tensor();
  for (CapturePlan::Bucket& b : plan_->buckets) {
    auto& o = static_cast<RAdamOptions&>(param_groups_[b.group].options());
    const auto [beta1, beta2] = o.betas();
    const double wd = o.weight_decay();
    const bool torch_flavour = o.flavour() == RAdamFlavour::kTorch;
    const bool reference = o.flavour() == RAdamFlavour::kReference;
    const bool sgd = torch_flavour || (reference && o.degenerate_to_sgd());
    b.steps.add_(1);
    const torch::Tensor& t = b.steps;
    const torch::Tensor lr = plan_->lr[b.group].to(t.device());
    TensorList grads = b.grads;
    if (torch_flavour && wd != 0) {
      if (o.decoupled_weight_decay())
        mul_all_(b.params, guarded_factor(guard, 1 - lr * wd));
      else
        grads = at::_foreach_add(b.grads, b.params, wd);
    }
    update_moments(b, grads, beta1, beta2, guard);
    const torch::Tensor b2t = torch::pow(beta2, t);
    const torch::Tensor bc1 = 1 - torch::pow(beta1, t), bc2 = 1 - b2t;
    const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    const torch::Tensor rho_t = rho_inf - 2.0 * t * b2t / bc2;  // RAdam::rho
    const torch::Tensor rectified = torch_flavour ? rho_t > 5.0 : rho_t >= 5.0;
    // RAdam::rectifier; the clamp keeps the lanes below rho_t = 4 (not taken) finite.
    const torch::Tensor r =
        ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).clamp_min(0).sqrt();
    const torch::Tensor zero = torch::zeros_like(t);
    if (wd != 0 && o.flavour() == RAdamFlavour::kClinic)
      mul_all_(b.params, guarded_factor(guard, 1 - wd * lr));
    if (wd != 0 && reference) {  // decays only on the steps that update
      const torch::Tensor steps_here = sgd ? torch::ones_like(t) : rectified.to(torch::kDouble);
      mul_each_(b.params, guarded_factor(guard, 1 - wd * lr * steps_here));
    }
    adaptive_step(b, torch::where(rectified, -lr * r * bc2.sqrt() / bc1, zero), torch::Tensor(),
                  o.eps(), guard);
    if (sgd) {
      torch::Tensor c = torch::where(rectified, zero, -lr / bc1);
      if (guard.on()) c = c * guard.ok;
      const TensorList cs = c.unbind();  // p += c * m, one coefficient a tensor
      for (size_t i = 0; i < b.params.size(); ++i) b.params[i].add_(b.exp_avg[i] * cs[i]);
    }
  }
}

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
