#include "models/layers.h"

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

}  // namespace
}  // namespace clinic
