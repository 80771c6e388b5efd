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
// smooth_i = -sum_v on_v log p_{i,v} over the V' = sum_v on_v columns the
// model can output (on: [1, V] 0/1, DecoderFeatures::allowed; undefined or
// empty = all, V' = V). Its gradient in closed form,
//   d loss / d logit_{i,v} = keep_i ((a + b V') p_{i,v} - b on_v - a [v = t_i]),
// replaces autograd's gather/sum backward (a zero-filled [N, V] scatter, a
// broadcast [N, V] add, then log_softmax's backward): one exp pass and two
// in-place passes over the largest tensor of the step. lprobs: [N, V] fp32,
// kept for backward, as log_softmax's own backward would keep it. A
// ruled-out column (logit -1e9) has p = 0 and on = 0: no gradient, and it
// adds 0 * (-1e9) = 0 to the smoothing sum.
// {a nll + b smooth, nll} summed over rows with weight keep [N, 1], from
// lprobs [N, V] fp32 and target ids [N, 1].
std::pair<torch::Tensor, torch::Tensor> smoothed_terms(const torch::Tensor& lprobs,
                                                       const torch::Tensor& tgt,
                                                       const torch::Tensor& keep, double a,
                                                       double b,
                                                       const torch::Tensor& on = {}) {
  auto nll = (lprobs.gather(1, tgt) * keep).sum().neg_();
  auto loss = a * nll;
  const bool masked = on.defined() && on.numel() > 0;
  if (b != 0)
    loss.sub_(((masked ? lprobs * on : lprobs).sum(-1, /*keepdim=*/true) * keep).sum(), b);
  return {loss, nll};
}

// The gradient above, in place in probs = exp(lprobs) [N, V], row weights w
// [N, 1]; n_on = V' (the count of on's ones, or V).
torch::Tensor smoothed_grad_(torch::Tensor probs, const torch::Tensor& tgt,
                             const torch::Tensor& w, double a, double b,
                             const torch::Tensor& on = {}, double n_on = -1) {
  const bool masked = on.defined() && on.numel() > 0;
  probs.mul_(w * (a + b * (masked ? n_on : static_cast<double>(probs.size(1)))));
  if (b != 0) probs.sub_(masked ? w * b * on : w * b);
  return probs.scatter_add_(1, tgt, w * -a);
}

struct SmoothedNll : public torch::autograd::Function<SmoothedNll> {
  /// on: [1, V] float 0/1 over the allowed columns, or empty (all columns;
  /// an autograd Function's tensor argument must be defined).
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& target, double a, double b,
                               const torch::Tensor& on, double n_on) {
    const int64_t V = logits.size(-1);
    auto lprobs = torch::log_softmax(logits.to(torch::kFloat), -1).view({-1, V});
    auto tgt = target.reshape({-1, 1});
    auto keep = tgt.ne(kPad).to(torch::kFloat);                 // [N, 1]
    auto [loss, nll] = smoothed_terms(lprobs, tgt, keep, a, b, on);
    ctx->save_for_backward({lprobs, tgt, keep});
    ctx->saved_data["a"] = a;
    ctx->saved_data["b"] = b;
    ctx->saved_data["on"] = on;
    ctx->saved_data["n_on"] = n_on;
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
    auto grad = smoothed_grad_(lprobs.exp(), tgt, saved[2] * g[0], a, b,
                               ctx->saved_data["on"].toTensor(),
                               ctx->saved_data["n_on"].toDouble());
    auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.view(ctx->saved_data["sizes"].toIntVector()).to(dtype), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// label_smoothed_nll of logits = h · Wᵀ without the [N, V] tensor (the
// "fused linear cross-entropy" of Liger-Kernel and Apple's Cut Cross-Entropy,
// here with the closed-form gradient above). Per chunk of rows: logits, fp32
// log-softmax, the loss terms and, when training, d loss / d logits (needs
// only p), folded at once into grad_h = G·W and grad_W += Gᵀ·h. Backward then
// only scales both by the upstream gradient (a scalar). grad_W accumulates in
// fp32: under autocast one bf16 GEMM over all rows would round once; here
// each chunk's bf16 product is rounded, then summed in fp32.
struct ChunkedLoss {
  torch::Tensor loss, nll, grad_h, grad_w;
};

ChunkedLoss chunked_loss(const torch::Tensor& hidden, const torch::Tensor& weight,
                         const torch::Tensor& target, double a, double b,
                         torch::ScalarType cdt, int64_t chunk, bool need_h,
                         bool need_w) {
  const int64_t d = hidden.size(-1), V = weight.size(0);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == d, "fused loss: weight ",
              weight.sizes(), " does not match hidden ", hidden.sizes());
  auto h = hidden.reshape({-1, d}).to(cdt);  // [N, d]
  auto w = weight.to(cdt);                   // [V, d]
  auto tgt = target.reshape({-1, 1});        // [N, 1]
  const int64_t N = h.size(0);
  TORCH_CHECK(tgt.size(0) == N, "fused loss: target ", target.sizes(),
              " does not match hidden ", hidden.sizes());
  auto keep = tgt.ne(kPad).to(torch::kFloat);  // [N, 1]
  if (chunk <= 0) chunk = std::max<int64_t>(256, (int64_t{1} << 23) / V);
  ChunkedLoss out;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(h.device());
  out.loss = torch::zeros({}, f32);
  out.nll = torch::zeros({}, f32);
  if (need_h) out.grad_h = torch::empty({N, d}, h.options());
  if (need_w) out.grad_w = torch::zeros({V, d}, f32);
  for (int64_t s = 0; s < N; s += chunk) {
    const int64_t n = std::min(chunk, N - s);
    auto hc = h.narrow(0, s, n);
    auto lp = torch::log_softmax(torch::mm(hc, w.t()).to(torch::kFloat), -1);  // [n, V]
    auto tc = tgt.narrow(0, s, n);
    auto kc = keep.narrow(0, s, n);
    auto [loss, nll] = smoothed_terms(lp, tc, kc, a, b);
    out.loss.add_(loss);
    out.nll.add_(nll);
    if (!need_h && !need_w) continue;
    auto gc = smoothed_grad_(lp.exp_(), tc, kc, a, b).to(cdt);  // lp is dead: reuse it
    if (need_h) {
      auto dst = out.grad_h.narrow(0, s, n);  // rows of a contiguous tensor
      torch::mm_out(dst, gc, w);
    }
    if (need_w) {
      if (cdt == torch::kFloat)
        out.grad_w.addmm_(gc.t(), hc);
      else
        out.grad_w.add_(torch::mm(gc.t(), hc));
    }
  }
  return out;
}

struct FusedLinearSmoothedNll : public torch::autograd::Function<FusedLinearSmoothedNll> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& target,
                               double a, double b, int64_t cdt, int64_t chunk) {
    auto r = chunked_loss(hidden, weight, target, a, b, static_cast<at::ScalarType>(cdt),
                          chunk, hidden.requires_grad(), weight.requires_grad());
    ctx->saved_data["grad_h"] = r.grad_h;
    ctx->saved_data["grad_w"] = r.grad_w;
    ctx->saved_data["h_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    ctx->saved_data["h_sizes"] = hidden.sizes().vec();
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->mark_non_differentiable({r.nll});
    return {r.loss, r.nll};
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    torch::Tensor gh, gw;
    auto grad_h = ctx->saved_data["grad_h"].toTensor();
    auto grad_w = ctx->saved_data["grad_w"].toTensor();
    if (grad_h.defined())
      gh = (grad_h * g[0])
               .to(static_cast<at::ScalarType>(ctx->saved_data["h_dtype"].toInt()))
               .view(ctx->saved_data["h_sizes"].toIntVector());
    if (grad_w.defined())
      gw = (grad_w * g[0]).to(static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt()));
    return {gh, gw, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

std::pair<double, double> smoothing_weights(double eps, SmoothingMass mass, int64_t V) {
  if (eps == 0) return {1.0, 0.0};
  if (mass == SmoothingMass::kEpsOverV) return {1.0 - eps, eps / V};
  double b = eps / (V - 1);
  return {1.0 - eps - b, b};
}

}  // namespace

LossOut label_smoothed_nll(const torch::Tensor& logits,
                           const torch::Tensor& target, double eps,
                           SmoothingMass mass) {
  auto [a, b] = smoothing_weights(eps, mass, logits.size(-1));
  auto out = SmoothedNll::apply(logits, target, a, b, torch::empty({0}), -1.0);
  return LossOut{out[0], out[1]};
}

LossOut label_smoothed_nll(const torch::Tensor& logits, const torch::Tensor& target,
                           double eps, SmoothingMass mass, const torch::Tensor& allowed) {
  const int64_t V = logits.size(-1);
  TORCH_CHECK(allowed.dim() == 1 && allowed.size(0) == V, "label_smoothed_nll: allowed ",
              allowed.sizes(), " does not match logits ", logits.sizes());
  const int64_t n_on = allowed.sum().item<int64_t>();
  TORCH_CHECK(n_on > 0, "label_smoothed_nll: no allowed column");
  auto on = allowed.to(torch::TensorOptions().dtype(torch::kFloat).device(logits.device()))
                .unsqueeze(0);  // [1, V]
  auto [a, b] = smoothing_weights(eps, mass, n_on);
  auto out = SmoothedNll::apply(logits, target, a, b, on, static_cast<double>(n_on));
  return LossOut{out[0], out[1]};
}

LossOut fused_linear_label_smoothed_nll(const torch::Tensor& hidden,
                                        const torch::Tensor& weight,
                                        const torch::Tensor& target, double eps,
                                        SmoothingMass mass,
                                        torch::ScalarType compute_dtype,
                                        int64_t chunk_rows) {
  auto [a, b] = smoothing_weights(eps, mass, weight.size(0));
  if (!torch::GradMode::is_enabled() || (!hidden.requires_grad() && !weight.requires_grad())) {
    auto r = chunked_loss(hidden, weight, target, a, b, compute_dtype, chunk_rows, false, false);
    return LossOut{r.loss, r.nll};
  }
  auto out = FusedLinearSmoothedNll::apply(hidden, weight, target, a, b,
                                           static_cast<int64_t>(compute_dtype), chunk_rows);
  return LossOut{out[0], out[1]};
}

LossOut Criterion::operator()(const DecoderFeatures& f, const torch::Tensor& target,
                              torch::ScalarType compute_dtype) const {
  if (!f.weight.defined())
    return f.allowed.defined() && on_allowed ? on_allowed(f.hidden, target, f.allowed)
                                             : on_logits(f.hidden, target);
  // fp16: the fused form forms d loss / d logits before the loss scale is
  // applied (backward), and fp16 would flush its small entries to zero.
  if (on_features && compute_dtype != torch::kHalf)
    return on_features(f.hidden, f.weight, target, compute_dtype);
  return on_logits(torch::nn::functional::linear(f.hidden.to(compute_dtype),
                                                 f.weight.to(compute_dtype)),
                   target);
}

void register_builtin_losses() {
  auto& r = loss_registry();
  auto smoothed = [](double eps, SmoothingMass mass) {
    Criterion c;
    c.on_logits = [eps, mass](const torch::Tensor& l, const torch::Tensor& t) {
      return label_smoothed_nll(l, t, eps, mass);
    };
    c.on_features = [eps, mass](const torch::Tensor& h, const torch::Tensor& w,
                                const torch::Tensor& t, torch::ScalarType cdt) {
      return fused_linear_label_smoothed_nll(h, w, t, eps, mass, cdt);
    };
    c.on_allowed = [eps, mass](const torch::Tensor& l, const torch::Tensor& t,
                               const torch::Tensor& allowed) {
      return label_smoothed_nll(l, t, eps, mass, allowed);
    };
    return c;
  };
  r.add("label_smoothed_cross_entropy", [smoothed](const TrainConfig& c) {
    auto mass = c.smoothing_mass == "eps_over_v_minus_1"
                    ? SmoothingMass::kEpsOverVMinus1
                    : SmoothingMass::kEpsOverV;
    return smoothed(c.label_smoothing, mass);
  });
  r.add("cross_entropy", [smoothed](const TrainConfig&) {
    return smoothed(0.0, SmoothingMass::kEpsOverV);
  });
}

}  // namespace clinic
