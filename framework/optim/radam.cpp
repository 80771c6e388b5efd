#include "framework/optim/radam.h"

#include <torch/serialize/archive.h>

#include <cmath>

#include "framework/optim/state_key.h"

namespace clinic {

void RAdamOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  archive.write("flavour", torch::IValue(static_cast<int64_t>(flavour())));
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(degenerate_to_sgd);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(decoupled_weight_decay);
}

void RAdamOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  c10::IValue f;
  archive.read("flavour", f);
  flavour(static_cast<RAdamFlavour>(f.toInt()));
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, degenerate_to_sgd);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, decoupled_weight_decay);
}

void RAdamParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg_sq);
}

void RAdamParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg_sq);
}

RAdam::RAdam(std::vector<torch::optim::OptimizerParamGroup> param_groups,
             RAdamOptions defaults)
    : Optimizer(std::move(param_groups),
                std::make_unique<RAdamOptions>(defaults)) {
  TORCH_CHECK(defaults.lr() >= 0, "Invalid learning rate: ", defaults.lr());
  TORCH_CHECK(defaults.eps() >= 0, "Invalid epsilon value: ", defaults.eps());
  auto [b1, b2] = defaults.betas();
  TORCH_CHECK(0 <= b1 && b1 < 1.0, "Invalid beta parameter at index 0: ", b1);
  TORCH_CHECK(0 <= b2 && b2 < 1.0, "Invalid beta parameter at index 1: ", b2);
  TORCH_CHECK(defaults.weight_decay() >= 0, "Invalid weight_decay value: ",
              defaults.weight_decay());
}

double RAdam::rho(double beta2, int64_t t) {
  double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
  double b2t = std::pow(beta2, static_cast<double>(t));
  return rho_inf - 2.0 * t * b2t / (1.0 - b2t);
}

double RAdam::rectifier(double beta2, int64_t t) {
  double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
  double r = rho(beta2, t);
  return std::sqrt((r - 4) * (r - 2) * rho_inf /
                   ((rho_inf - 4) * (rho_inf - 2) * r));
}

torch::Tensor RAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& o = static_cast<RAdamOptions&>(group.options());
    const auto [beta1, beta2] = o.betas();
    const double lr = o.lr(), wd = o.weight_decay();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      torch::Tensor grad = p.grad();
      auto key = optim_state_key(p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto s = std::make_unique<RAdamParamState>();
        s->exp_avg(torch::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& st = static_cast<RAdamParamState&>(*it->second);
      const int64_t t = st.step() + 1;
      st.step(t);

      const bool torch_flavour = o.flavour() == RAdamFlavour::kTorch;
      if (torch_flavour && wd != 0) {
        if (o.decoupled_weight_decay())
          p.mul_(1 - lr * wd);
        else
          grad = grad.add(p, wd);
      }
      auto& m = st.exp_avg();
      auto& v = st.exp_avg_sq();
      m.mul_(beta1).add_(grad, 1 - beta1);
      v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);

      const double bc1 = 1 - std::pow(beta1, static_cast<double>(t));
      const double bc2 = 1 - std::pow(beta2, static_cast<double>(t));
      const double rho_t = rho(beta2, t);
      const bool rectified = torch_flavour ? rho_t > 5.0 : rho_t >= 5.0;

      if (o.flavour() == RAdamFlavour::kClinic && wd != 0) p.add_(p, -wd * lr);
      if (rectified) {
        if (o.flavour() == RAdamFlavour::kReference && wd != 0)
          p.add_(p, -wd * lr);
        // step = lr * r_t * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
        const double step_size =
            lr * rectifier(beta2, t) * std::sqrt(bc2) / bc1;
        p.addcdiv_(m, v.sqrt().add_(o.eps()), -step_size);
      } else if (torch_flavour ||
                 (o.flavour() == RAdamFlavour::kReference &&
                  o.degenerate_to_sgd())) {
        if (o.flavour() == RAdamFlavour::kReference && wd != 0)
          p.add_(p, -wd * lr);
        p.add_(m, -lr / bc1);
      }
    }
  }
  return loss;
}

void RAdam::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
}

void RAdam::load(torch::serialize::InputArchive& archive) {
  serialize(*this, archive);
}

}  // namespace clinic
