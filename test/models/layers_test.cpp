#include "models/layers.h"

#include <functional>
#include <limits>

#include "test/support.h"

namespace clinic {
namespace {

TEST(Dropout, KeepsOneMinusPOfElementsIndependently) {
  torch::manual_seed(3);
  const int64_t n = 1 << 20;  // binomial std of the kept fraction <= 5e-4
  for (double p : {0.1, 0.3, 0.5}) {
    auto keep = dropout_keep_mask(torch::empty({n / 1024, 1024}), p).to(torch::kDouble);
    EXPECT_EQ(keep.sizes(), (std::vector<int64_t>{n / 1024, 1024}));
    EXPECT_NEAR(keep.mean().item<double>(), 1 - p, 3e-3) << "p=" << p;
    // Four neighbouring elements share one 64-bit draw: they must still be
    // independent, so every lane offset i..i+3 keeps pairs with (1-p)^2.
    auto flat = keep.view(-1);
    for (int64_t lag : {1, 2, 3, 4}) {
      double both = (flat.narrow(0, 0, n - lag) * flat.narrow(0, lag, n - lag)).mean().item<double>();
      EXPECT_NEAR(both, (1 - p) * (1 - p), 3e-3) << "p=" << p << " lag=" << lag;
    }
    // Each of the 4 lanes of a word keeps 1 - p on its own.
    for (int64_t lane = 0; lane < 4; ++lane)
      EXPECT_NEAR(flat.view({-1, 4}).select(1, lane).mean().item<double>(), 1 - p, 5e-3);
  }
}

TEST(Dropout, ScalesKeptElementsAndBackpropagatesThroughTheSameMask) {
  const double p = 0.25;
  auto x = (torch::rand({64, 33}) + 0.5).requires_grad_();  // no zeros, odd size
  torch::manual_seed(11);
  auto y = apply_dropout(x, p, true);
  torch::manual_seed(11);
  auto keep = dropout_keep_mask(x, p);
  auto expected = x.detach() * keep / (1 - p);
  EXPECT_TRUE(torch::allclose(y.detach(), expected, 1e-6, 1e-7));
  auto g = torch::randn_like(y);
  y.backward(g);
  EXPECT_TRUE(torch::allclose(x.grad(), g * keep / (1 - p), 1e-6, 1e-7));
  // Another draw gives another mask.
  EXPECT_FALSE(torch::equal(dropout_keep_mask(x, p), keep));
}

// The vectorised fp32 and bf16 kernels against the mask: kept elements
// scaled (bf16 rounded as c10::BFloat16 rounds, NaN and inf kept), the rest 0.
TEST(Dropout, Fp32AndBf16KernelsApplyTheMaskAndRoundLikeTorch) {
  const double p = 0.3;
  auto x = torch::randn({3, 1000}) * 100;
  x[0][1] = std::numeric_limits<float>::quiet_NaN();
  x[0][2] = std::numeric_limits<float>::infinity();
  x[0][3] = -0.0f;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto xd = x.to(dtype);
    torch::manual_seed(21);
    auto y = apply_dropout(xd, p, true);
    torch::manual_seed(21);
    auto keep = dropout_keep_mask(xd, p);
    ASSERT_EQ(y.scalar_type(), dtype);
    auto expected = (xd.to(torch::kFloat) * (1 / (1 - p))).to(dtype).masked_fill(keep.logical_not(), 0);
    EXPECT_TRUE(torch::equal(y.isnan(), expected.isnan())) << dtype;
    auto finite = expected.isnan().logical_not();
    EXPECT_TRUE(torch::equal(y.masked_select(finite), expected.masked_select(finite))) << dtype;
    double frac = keep.to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(frac, 1 - p, 0.03) << dtype;
  }
}

// The mask is filled in parallel from one seed: the same at any thread count,
// and a fresh seed per call.
TEST(Dropout, MaskDependsOnTheSeedNotOnTheThreadCount) {
  auto like = torch::empty({3, 100003});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  torch::manual_seed(21);
  auto one = dropout_keep_mask(like, 0.3);
  at::set_num_threads(2);
  torch::manual_seed(21);
  auto two = dropout_keep_mask(like, 0.3);
  auto next = dropout_keep_mask(like, 0.3);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, two));
  EXPECT_FALSE(torch::equal(two, next));
  // The seed is drawn from the default generator: drawing from it first changes the mask.
  torch::manual_seed(21);
  (void)torch::rand({1});
  EXPECT_FALSE(torch::equal(dropout_keep_mask(like, 0.3), one));
}

// Every operand layout attention produces (contiguous, transposed views,
// a permuted one, strided and broadcast ones), forward and both gradients.
TEST(HeadBmm, MatchesTorchBmmForwardAndBackward) {
  torch::manual_seed(4);
  auto base_a = torch::randn({6, 5, 7}), base_b = torch::randn({6, 7, 3});
  struct Case { const char* name; std::function<torch::Tensor(const torch::Tensor&)> fa, fb; };
  auto id = [](const torch::Tensor& t) { return t; };
  std::vector<Case> cases = {
      {"contiguous", id, id},
      {"a transposed", [](const torch::Tensor& t) { return t.transpose(1, 2).contiguous().transpose(1, 2); }, id},
      {"b transposed", id, [](const torch::Tensor& t) { return t.transpose(1, 2).contiguous().transpose(1, 2); }},
      {"a permuted", [](const torch::Tensor& t) { return t.permute({2, 0, 1}).contiguous().permute({1, 2, 0}); }, id},
      {"b strided (copied)", id, [](const torch::Tensor& t) { return t.repeat({1, 1, 2}).slice(2, 0, 6, 2); }},
      {"a rows broadcast (copied)", [](const torch::Tensor& t) { return t.narrow(1, 0, 1).expand_as(t); }, id},
      {"b batch broadcast", id, [](const torch::Tensor& t) { return t.narrow(0, 0, 1).expand_as(t); }},
  };
  for (const auto& c : cases) {
    auto a1 = base_a.clone().requires_grad_(), b1 = base_b.clone().requires_grad_();
    auto a2 = base_a.clone().requires_grad_(), b2 = base_b.clone().requires_grad_();
    auto y1 = head_bmm(c.fa(a1), c.fb(b1));
    auto y2 = torch::bmm(c.fa(a2), c.fb(b2));
    ASSERT_EQ(y1.sizes(), y2.sizes()) << c.name;
    EXPECT_TRUE(torch::allclose(y1, y2, 1e-5, 1e-6)) << c.name;
    auto g = torch::randn_like(y2);
    y1.backward(g);
    y2.backward(g);
    EXPECT_TRUE(torch::allclose(a1.grad(), a2.grad(), 1e-5, 1e-6)) << c.name;
    EXPECT_TRUE(torch::allclose(b1.grad(), b2.grad(), 1e-5, 1e-6)) << c.name;
  }
  // 4-D per-head views of [B, L, H, dh] projections, as attention passes
  // them: alpha folded in, the result in q's memory order (merging heads is a
  // view), gradients in their inputs' memory order.
  {
    const int64_t B = 2, L = 5, S = 4, H = 3, dh = 4;
    auto qkv0 = torch::randn({B, L, 3 * H * dh}), mem0 = torch::randn({B, S, 2 * H * dh});
    auto run = [&](bool ours, torch::Tensor* gq, torch::Tensor* gm) {
      auto qkv = qkv0.clone().requires_grad_(), mem = mem0.clone().requires_grad_();
      auto heads = [&](const torch::Tensor& t) { return t.view({B, -1, H, dh}).transpose(1, 2); };
      auto q = heads(qkv.narrow(2, 0, H * dh)), k = heads(mem.narrow(2, 0, H * dh)),
           v = heads(mem.narrow(2, H * dh, H * dh));
      torch::Tensor ctx;
      if (ours) {
        auto p = torch::softmax(head_bmm(q, k.transpose(2, 3), 0.5), -1);
        ctx = head_bmm(p, v, 1.0, q);
        if (head_bmm_uses_blas()) {
          EXPECT_TRUE(ctx.transpose(1, 2).is_contiguous());
        }
      } else {
        auto p = torch::softmax(torch::matmul(q, k.transpose(2, 3)) * 0.5, -1);
        ctx = torch::matmul(p, v);
      }
      auto y = ctx.transpose(1, 2).reshape({B, L, H * dh});
      y.backward(torch::arange(y.numel(), torch::kFloat).view(y.sizes()).sin());
      *gq = qkv.grad();
      *gm = mem.grad();
      return y.detach();
    };
    torch::Tensor gq1, gm1, gq2, gm2;
    auto y1 = run(true, &gq1, &gm1), y2 = run(false, &gq2, &gm2);
    EXPECT_TRUE(torch::allclose(y1, y2, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(gq1, gq2, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(gm1, gm2, 1e-5, 1e-6));
  }
  // Empty batches and non-fp32 inputs take torch::bmm.
  EXPECT_EQ(head_bmm(torch::randn({0, 5, 7}), torch::randn({0, 7, 3})).sizes(),
            (std::vector<int64_t>{0, 5, 3}));
  auto d = head_bmm(base_a.to(torch::kDouble), base_b.to(torch::kDouble));
  EXPECT_TRUE(torch::allclose(d, torch::bmm(base_a, base_b).to(torch::kDouble), 1e-5, 1e-6));
}

TEST(Dropout, ReluDropoutEqualsReluThenDropout) {
  const double p = 0.2;
  auto x = torch::randn({40, 50}, torch::kDouble).requires_grad_();
  torch::manual_seed(5);
  auto y = apply_relu_dropout(x, p, true);
  auto g = torch::randn_like(y);
  y.backward(g);
  torch::manual_seed(5);
  auto keep = dropout_keep_mask(x, p);
  auto x2 = x.detach().clone().requires_grad_();
  auto y2 = torch::relu(x2) * keep / (1 - p);
  y2.backward(g);
  EXPECT_TRUE(torch::allclose(y.detach(), y2.detach()));
  EXPECT_TRUE(torch::allclose(x.grad(), x2.grad()));
  EXPECT_GT((y.detach() == 0).logical_and(x.detach() > 0).sum().item<int64_t>(), 0);
}

TEST(Dropout, IsTheIdentityInEvalModeOrAtZero) {
  auto x = torch::randn({8, 8});
  EXPECT_TRUE(apply_dropout(x, 0.3, false).is_same(x));
  EXPECT_TRUE(apply_dropout(x, 0.0, true).is_same(x));
  EXPECT_TRUE(torch::equal(apply_relu_dropout(x, 0.3, false), torch::relu(x)));
  EXPECT_THROW(apply_dropout(x, 1.0, true), c10::Error);
}

// Decoder self-attention tells the attention its future mask is the causal
// one (LibTorch 2.x: SDPA with is_causal, no mask tensor, the flash kernel's
// condition). Against attention written out by hand (softmax(q k^T / sqrt(dh)
// + mask) v, then out_proj), forward and input gradient, with the flag and
// without it (the explicit-mask path), and with key padding (no shortcut).
TEST(Attention, CausalFlagAndExplicitMaskGiveTheHandWrittenAttention) {
  torch::manual_seed(3);
  const int64_t B = 2, T = 7, d = 16, H = 4, dh = d / H;
  MultiheadAttention attn(MultiheadAttentionOptions(d, H));
  attn->eval();
  auto future = torch::ones({T, T}, torch::kBool).triu(1);
  auto reference = [&](const torch::Tensor& x, const torch::Tensor& pad) {
    auto qkv = torch::nn::functional::linear(x, attn->in_proj_weight, attn->in_proj_bias).chunk(3, -1);
    auto split = [&](const torch::Tensor& t) { return t.view({B, T, H, dh}).transpose(1, 2); };
    auto scores = torch::matmul(split(qkv[0]), split(qkv[1]).transpose(2, 3)) / std::sqrt(double(dh));
    scores = scores.masked_fill(future, -INFINITY);
    if (pad.defined()) scores = scores.masked_fill(pad.view({B, 1, 1, T}), -INFINITY);
    auto ctx = torch::matmul(torch::softmax(scores, -1), split(qkv[2]));
    return attn->out_proj(ctx.transpose(1, 2).reshape({B, T, d}));
  };
  auto pad = torch::zeros({B, T}, torch::kBool);
  pad[1][T - 1] = true;  // a padded key: must not take the causal shortcut
  for (bool flag : {true, false}) {
    for (bool padded : {false, true}) {
      auto x = torch::randn({B, T, d}).requires_grad_(true);
      auto xr = x.detach().clone().requires_grad_(true);
      torch::Tensor kp = padded ? pad : torch::Tensor();
      auto y = attn(x, x, kp, future, nullptr, nullptr, flag);
      auto yr = reference(xr, kp);
      test::expect_close(y, yr, 1e-5, 1e-6);
      auto g = torch::randn_like(y);
      y.backward(g);
      yr.backward(g);
      test::expect_close(x.grad(), xr.grad(), 1e-4, 1e-6);
    }
  }
}

}  // namespace
}  // namespace clinic
