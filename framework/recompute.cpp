#include "framework/recompute.h"

#include <ATen/Context.h>

#include "framework/amp/autocast.h"

namespace clinic {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Closure : torch::CustomClassHolder {
  RecomputeFn fn;
  at::Generator generator;
  torch::Tensor rng_state;  // generator state when the forward started
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kFloat;
};

torch::Tensor generator_state(at::Generator& g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void set_generator_state(at::Generator& g, const torch::Tensor& s) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(s);
}

struct Recompute : public torch::autograd::Function<Recompute> {
  static torch::Tensor forward(AutogradContext* ctx, at::TensorList inputs,
                               c10::intrusive_ptr<Closure> closure) {
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["closure"] = c10::IValue::make_capsule(closure);
    return closure->fn(inputs.vec());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto closure = c10::static_intrusive_pointer_cast<Closure>(
        ctx->saved_data["closure"].toCapsule());
    auto saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> inputs;
    for (const auto& t : saved) inputs.push_back(t.detach().requires_grad_(t.requires_grad()));
    // Replay the first run's dropout masks, then leave the generator where the
    // whole forward had left it, so later draws match a run without recompute.
    torch::Tensor now = generator_state(closure->generator);
    set_generator_state(closure->generator, closure->rng_state);
    torch::Tensor out;
    {
      torch::AutoGradMode grad(true);
      AutocastGuard autocast(inputs.front().device().type(),
                             closure->autocast ? closure->autocast_dtype : at::kFloat);
      out = closure->fn(inputs);
    }
    set_generator_state(closure->generator, now);
    torch::autograd::backward({out}, {grads[0]});
    variable_list result;
    for (const auto& t : inputs) result.push_back(t.requires_grad() ? t.grad() : torch::Tensor());
    result.emplace_back();  // the closure
    return result;
  }
};

}  // namespace

torch::Tensor recompute_in_backward(const RecomputeFn& fn,
                                    const std::vector<torch::Tensor>& inputs) {
  TORCH_CHECK(!inputs.empty(), "recompute_in_backward needs at least one input");
  bool any = false;
  for (const auto& t : inputs) {
    TORCH_CHECK(t.defined(), "recompute_in_backward: undefined input");
    any = any || t.requires_grad();
  }
  if (!torch::GradMode::is_enabled() || !any) return fn(inputs);
  auto closure = c10::make_intrusive<Closure>();
  closure->fn = fn;
  const auto device_type = inputs.front().device().type();
  closure->generator = at::globalContext().defaultGenerator(device_type);
  closure->rng_state = generator_state(closure->generator);
  closure->autocast = autocast_enabled(device_type);
  closure->autocast_dtype = autocast_get_dtype(device_type);
  return Recompute::apply(at::TensorList(inputs), closure);
}

}  // namespace clinic
