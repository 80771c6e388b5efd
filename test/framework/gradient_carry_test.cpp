// train.zero_grad: false (framework/train/gradient_carry.*) against a plain
// training loop that never calls zero_grad(): backward() adds into .grad,
// clip_grad_norm_ scales the sum in place, Adam steps on it.
#include <map>

#include "framework/data/corpus.h"
#include "framework/errors.h"
#include "framework/registry.h"
#include "framework/train/trainer.h"
#include "test/support.h"

namespace clinic {
namespace {

// Case B's toy without dropout (so both loops see the same function), a
// constant lr large enough that carrying the gradients changes the weights
// visibly, and an eps well above the float noise of near-zero gradients.
RunConfig toy(bool zero_grad, int64_t updates) {
  register_builtins();
  return load_recipe("cases/toy_loss_spikes_no_zero_grad",
                     {"model.dropout=0", "model.attention_dropout=0", "diag.interval=0",
                      "schedule.name=constant", "schedule.warmup_updates=0", "optim.lr=0.01",
                      "optim.eps=1e-4",
                      std::string("train.zero_grad=") + (zero_grad ? "true" : "false"),
                      "train.max_updates=" + std::to_string(updates), "train.log_interval=1"});
}

double max_difference(const std::map<std::string, torch::Tensor>& a,
                      const std::map<std::string, torch::Tensor>& b) {
  double worst = 0;
  for (const auto& [name, t] : a)
    worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  return worst;
}

TEST(GradientCarry, TrainerStepsLikeALoopThatNeverZeroesGradients) {
  const int64_t K = 12;
  test::TempDir d;
  RunConfig cfg = toy(false, K);
  Trainer t(cfg, d.file("carry"));
  t.setup();
  // The reference: the same initial weights, torch's Adam, clip_grad_norm_,
  // and no zero_grad() anywhere.
  auto ref = build_model(cfg.model, VocabInfo{6, 6, true});
  {
    torch::NoGradGuard g;
    auto init = test::named_weights(t.model());
    for (auto& p : ref->named_parameters()) p.value().copy_(init.at(p.key()));
  }
  std::vector<torch::Tensor> rp;
  for (auto& p : ref->parameters())
    if (p.requires_grad()) rp.push_back(p);
  torch::optim::Adam opt(rp, torch::optim::AdamOptions(0.01).betas({0.9, 0.98}).eps(1e-4));
  Batch b = fixed_batch(cfg.data);
  auto target = torch::tensor({0, 1, 1, 0}, torch::kLong);  // ids 4, 5 are tokens 0, 1
  for (int64_t k = 0; k < K; ++k) {
    UpdateStats s = t.train_update({b});
    auto logits = ref->forward(b.src, b.tgt_in).narrow(2, 4, 2).reshape({-1, 2});
    torch::nn::functional::cross_entropy(logits, target).backward();
    double norm = torch::nn::utils::clip_grad_norm_(rp, 1.0);
    opt.step();
    // The logged gradient norm is the carried sum's, the one the clip saw.
    EXPECT_NEAR(s.grad_norm, norm, 1e-4 * norm) << "update " << k + 1;
  }
  EXPECT_LT(max_difference(test::named_weights(t.model()), test::named_weights(*ref)), 2e-5);

  // The default loop zeroes: its weights are not the reference's.
  test::TempDir z;
  Trainer zt(toy(true, K), z.file("zero"));
  zt.setup();
  for (int64_t k = 0; k < K; ++k) zt.train_update({b});
  EXPECT_GT(max_difference(test::named_weights(zt.model()), test::named_weights(*ref)), 1e-3);
}

// A resumed run carries the gradients the interrupted one had kept.
TEST(GradientCarry, ResumeCarriesTheKeptGradients) {
  test::TempDir d;
  Trainer whole(toy(false, 8), d.file("whole"));
  whole.fit();
  {
    Trainer first(toy(false, 4), d.file("halves"));
    first.fit();
  }
  Trainer second(toy(false, 8), d.file("halves"));
  second.fit();
  ASSERT_EQ(second.state().update, 8);
  const auto whole_w = test::named_weights(whole.model());
  EXPECT_LT(max_difference(test::named_weights(second.model()), whole_w), 1e-6);
  // Without the kept gradients (a checkpoint of the first half, stripped of
  // them, as train.zero_grad: true writes none) the second half differs.
  {
    Trainer first(toy(true, 4), d.file("zeroed"));
    first.fit();
  }
  Trainer other(toy(false, 8), d.file("zeroed"));
  other.fit();
  EXPECT_GT(max_difference(test::named_weights(other.model()), whole_w), 1e-4);
}

// Kept gradients that do not fit the model (a damaged or foreign checkpoint)
// are refused with the checkpoint's path and the key.
TEST(GradientCarry, RestoreRefusesGradientsThatDoNotFit) {
  std::vector<torch::Tensor> params{torch::zeros({2, 3}), torch::zeros({4})};
  GradientCarry carry(true);
  for (const auto& [key, t] : std::vector<std::pair<std::string, torch::Tensor>>{
           {"grad_carry/1", torch::zeros({5})},      // wrong shape
           {"grad_carry/2", torch::zeros({4})},      // no such parameter
           {"grad_carry/x1", torch::zeros({4})},     // not an index
           {"grad_carry/", torch::zeros({4})}}) {
    std::string e = test::error_of<CheckpointError>(
        [&] { carry.restore({{key, t}}, params, "run/checkpoint_last.pt"); });
    EXPECT_NE(e.find("run/checkpoint_last.pt: its carried gradient " + key + " does not fit"),
              std::string::npos)
        << e;
  }
  carry.restore({{"grad_carry/1", torch::ones({4})}}, params, "ok.pt");  // fits
  EXPECT_DOUBLE_EQ(carry.add_to(params, 0.0), 2.0);  // the kept ones as the gradient: norm 2
}

}  // namespace
}  // namespace clinic
