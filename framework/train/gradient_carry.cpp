#include "framework/train/gradient_carry.h"

#include <fmt/format.h>

#include "framework/amp/grad_scaler.h"
#include "framework/errors.h"

namespace clinic {

double GradientCarry::add_to(const std::vector<torch::Tensor>& params, double norm) const {
  if (!on_ || kept_.empty()) return norm;
  torch::NoGradGuard g;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (!kept_[i].defined()) continue;
    if (p.grad().defined())
      p.mutable_grad().add_(kept_[i]);
    else
      p.mutable_grad() = kept_[i].clone();  // no gradient this update: the kept one alone
  }
  return scale_grads_and_norm(params, 1.0).item<double>();  // factor 1: the norm only
}

void GradientCarry::keep(const std::vector<torch::Tensor>& params) {
  if (!on_) return;
  kept_.assign(params.size(), torch::Tensor());
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].grad().defined()) kept_[i] = params[i].grad().detach().clone();
}

void GradientCarry::save(std::map<std::string, torch::Tensor>& extras) const {
  for (size_t i = 0; i < kept_.size(); ++i)
    if (kept_[i].defined()) extras[fmt::format("grad_carry/{}", i)] = kept_[i];
}

void GradientCarry::restore(const std::map<std::string, torch::Tensor>& extras,
                            const std::vector<torch::Tensor>& params, const std::string& path) {
  if (!on_) return;
  std::vector<torch::Tensor> kept(params.size());
  bool any = false;
  for (const auto& [key, t] : extras) {
    if (key.rfind("grad_carry/", 0) != 0) continue;
    const std::string index = key.substr(11);
    size_t i = params.size();  // not a parameter index: refused below
    if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos &&
        index.size() < 10)
      i = std::stoul(index);
    if (i >= params.size() || !t.sizes().equals(params[i].sizes()))
      throw CheckpointError(fmt::format(
          "{}: its carried gradient {} does not fit this model's parameter (train.zero_grad: "
          "false); resume with the model that wrote it",
          path, key));
    kept[i] = t.to(params[i].device(), params[i].scalar_type());
    any = true;
  }
  if (any) kept_ = std::move(kept);
}

}  // namespace clinic
