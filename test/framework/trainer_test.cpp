#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "framework/data/text.h"
#include "framework/optim/optimizers.h"
#include "framework/optim/radam.h"
#include "framework/errors.h"
#include "framework/train/average.h"
#include "framework/train/scaled_step.h"
#include "framework/train/trainer.h"
#include "models/transformer.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

RunConfig copy_config(const TempDir& d, const std::string& residual = "post_ln",
                      const std::vector<std::string>& overrides = {}) {
  test::write_copy_corpus(d.file("corpus"), 400, 40);
  return parse_recipe_text(test::copy_recipe(d.file("corpus"), residual), "copy.yaml", overrides);
}

TEST(Trainer, LossFallsForEveryResidualVariant) {
  for (const char* v : {"post_ln", "pre_ln", "admin", "admin_closed_form", "deepnorm", "rezero"}) {
    TempDir d;
    Trainer t(copy_config(d, v, {"train.max_updates=300", "train.log_interval=60",
                                 "schedule.name=constant"}),
              d.file("run"));
    t.fit();
    auto l = test::logged_losses(d.file("run/metrics.jsonl"));
    ASSERT_EQ(l.size(), 5u) << v;
    EXPECT_LT(l.back(), 0.5 * l.front()) << v << ": " << l.front() << " -> " << l.back();
    EXPECT_TRUE(std::filesystem::exists(d.file("run/checkpoint_last.pt")));
  }
}

TEST(Trainer, GradientAccumulationEqualsOneLargeBatch) {
  TempDir d;
  RunConfig cfg = copy_config(d, "pre_ln", {"model.dropout=0"});
  Trainer a(cfg, d.file("a")), b(cfg, d.file("b"));
  a.setup();
  b.setup();
  const auto& corpus = a.train_data();
  Batch b1 = corpus.make_batch({0, 1, 2}), b2 = corpus.make_batch({3, 4, 5, 6, 7});
  Batch all = corpus.make_batch({0, 1, 2, 3, 4, 5, 6, 7});
  auto sa = a.train_update({b1, b2});
  auto sb = b.train_update({all});
  EXPECT_EQ(sa.tokens, sb.tokens);
  EXPECT_NEAR(sa.loss, sb.loss, 1e-4 * std::abs(sb.loss));
  EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-5 * sb.grad_norm);
  // Compare the accumulated gradients (Adam's first step, ~lr*sign(g), would
  // amplify float summation-order noise in near-zero entries). atol: one fp32
  // ulp of the O(1) per-token logit gradients those entries sum and cancel.
  auto ga = a.model().parameters(), gb = b.model().parameters();
  for (size_t i = 0; i < ga.size(); ++i)
    test::expect_close(ga[i].grad(), gb[i].grad(), 1e-4, 1.2e-7);
}

// data.shape_buckets pads batches to a few shapes (for CUDA graphs); the
// padding must change nothing: the same rows give the same loss, token count,
// gradient norm and gradients as the exact batch (dropout off: its masks
// depend on the shape), and Admin's omega is profiled on the same batch.
TEST(Trainer, ShapeBucketPaddingChangesNoLossOrGradient) {
  for (const char* v : {"post_ln", "pre_ln", "admin"}) {
    TempDir d;
    Trainer a(copy_config(d, v, {"model.dropout=0"}), d.file("a"));
    Trainer b(copy_config(d, v, {"model.dropout=0", "data.shape_buckets=2"}), d.file("b"));
    a.setup();
    b.setup();
    ASSERT_TRUE(a.train_data().shape_lengths.empty());
    ASSERT_FALSE(b.train_data().shape_lengths.empty());
    Batch ea = a.train_data().make_batch({0, 1, 2}), pb = b.train_data().make_batch({0, 1, 2});
    ASSERT_GT(pb.src.numel(), ea.src.numel()) << v << ": the bucketed batch is padded";
    auto sa = a.train_update({ea});
    auto sb = b.train_update({pb});
    EXPECT_EQ(sa.tokens, sb.tokens) << v;
    EXPECT_NEAR(sa.loss, sb.loss, 1e-5 * std::abs(sa.loss)) << v;
    EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-5 * sa.grad_norm) << v;
    auto ga = a.model().parameters(), gb = b.model().parameters();
    for (size_t i = 0; i < ga.size(); ++i) test::expect_close(ga[i].grad(), gb[i].grad(), 1e-4, 1e-6);
  }
  // A whole run in bucket mode: every batch it trains on is bucket-shaped,
  // and it learns.
  TempDir d;
  Trainer t(copy_config(d, "pre_ln", {"data.shape_buckets=3", "train.max_updates=200",
                                      "train.log_interval=50", "schedule.name=constant"}),
            d.file("run"));
  t.fit();
  auto l = test::logged_losses(d.file("run/metrics.jsonl"));
  ASSERT_EQ(l.size(), 4u);
  EXPECT_LT(l.back(), 0.5 * l.front());
  EXPECT_NE(read_file(d.file("run/train.log")).find("[data] shape buckets (rows x length): "),
            std::string::npos);
}

// Issue 33: one device-to-host read per update, through the counted seam,
// and the values it reads are the update's own (the norm of the gradients
// the step used, recomputed here in double).
TEST(Trainer, AnUpdateReadsTheDeviceOnceAndReadsItsOwnValues) {
  TempDir d;
  Trainer t(copy_config(d, "pre_ln", {"model.dropout=0"}), d.file("run"));
  t.setup();
  const auto& corpus = t.train_data();
  for (int u = 0; u < 4; ++u) {
    const int64_t before = t.host_reads().count();
    Batch b1 = corpus.make_batch({0, 1, 2, 3}), b2 = corpus.make_batch({4, 5});
    auto s = t.train_update({b1, b2});
    EXPECT_EQ(s.tokens, b1.tgt_out.ne(kPad).sum().item<int64_t>() + b2.tgt_out.ne(kPad).sum().item<int64_t>());
    EXPECT_EQ(t.host_reads().count() - before, 1) << "update " << u;
    double sq = 0;
    for (const auto& p : t.model().parameters())
      if (p.grad().defined()) sq += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(s.grad_norm, std::sqrt(sq), 1e-5 * std::sqrt(sq)) << "update " << u;
    EXPECT_TRUE(std::isfinite(s.loss) && s.loss > 0 && s.nll > 0);
  }
}

// Issue 33 item 1, train.host_reads: log_interval: the update is decided on
// the device and the host reads nothing until it must (here: a checkpoint),
// then once; the trajectory is the eager one (Adam without decay, fp32:
// every masked operand an exact 1, so bitwise, clipping included), and the
// counts the host reads back are the eager trainer's.
TEST(Trainer, DeferredReadsTrainAsTheEagerTrainerAndReadOnce) {
  TempDir d;
  std::vector<std::string> o = {"model.dropout=0", "train.clip_norm=0.3", "diag.interval=0"};
  auto with = [&](const char* mode) {
    auto v = o;
    v.push_back(std::string("train.host_reads=") + mode);
    return v;
  };
  Trainer eager(copy_config(d, "admin", with("every_update")), d.file("eager"));
  Trainer deferred(copy_config(d, "admin", with("log_interval")), d.file("deferred"));
  eager.setup();
  deferred.setup();
  double gnorm = 0;
  int64_t tokens = 0;
  for (int u = 0; u < 10; ++u) {
    Batch b = eager.train_data().make_batch({u, u + 10, u + 20, u + 30});
    auto se = eager.train_update({b});
    auto sd = deferred.train_update({b});
    ASSERT_FALSE(se.skipped);
    EXPECT_TRUE(sd.deferred && !sd.skipped && std::isnan(sd.loss));
    EXPECT_EQ(sd.tokens, se.tokens);
    gnorm += se.grad_norm;
    tokens += se.tokens;
  }
  EXPECT_GT(gnorm / 10, 0.3) << "the clip must act for this test to test it";
  EXPECT_EQ(eager.host_reads().count(), 10);
  EXPECT_EQ(deferred.host_reads().count(), 0);
  EXPECT_EQ(deferred.state().update, 10);
  auto pe = eager.model().parameters(), pd = deferred.model().parameters();
  for (size_t i = 0; i < pe.size(); ++i)
    ASSERT_TRUE(torch::equal(pe[i], pd[i])) << "parameter " << i;
  deferred.save_checkpoint("interval");
  EXPECT_EQ(deferred.host_reads().count(), 1);
  EXPECT_EQ(deferred.state().update, 10);
  EXPECT_EQ(deferred.state().skipped, 0);
  EXPECT_EQ(deferred.state().tokens, eager.state().tokens);
  EXPECT_EQ(deferred.state().tokens, tokens);
}

// The deferred mode's log lines report what the eager mode's report.
TEST(Trainer, DeferredReadsLogTheEagerFigures) {
  TempDir d;
  auto run = [&](const char* mode) {
    Trainer t(copy_config(d, "pre_ln", {"train.max_updates=24", "train.log_interval=8",
                                        "train.clip_norm=0.5", "model.dropout=0", "diag.interval=0",
                                        std::string("train.host_reads=") + mode}),
              d.file(mode));
    t.fit();
    int64_t valid = 0;
    for (const auto& l : read_lines(d.file(std::string(mode) + "/metrics.jsonl")))
      valid += l.find("\"event\": \"valid\"") != std::string::npos;
    return std::make_tuple(test::logged_losses(d.file(std::string(mode) + "/metrics.jsonl")),
                           t.host_reads().count(), valid);
  };
  auto [le, re, ve] = run("every_update");
  auto [ld, rd, vd] = run("log_interval");
  ASSERT_EQ(le.size(), 3u);
  EXPECT_EQ(ld, le);
  EXPECT_EQ(re, 24);
  EXPECT_EQ(vd, ve);
  // One read per log line, at most one more per validation (an epoch end
  // with unread updates); the final checkpoint finds nothing unread.
  EXPECT_GE(rd, 3);
  EXPECT_LE(rd, 3 + vd);
  EXPECT_GT(vd, 0);
}

// A skipped update, decided on the device: fp16 with an injected overflow
// skips it, halves the scale, moves no parameter, and once read the host's
// counts are the eager trainer's (update, skipped, scale); non-finite
// updates the scaler does not explain stop the run at the read that finds
// train.max_bad_steps of them in a row.
TEST(Trainer, DeferredReadsSkipOnTheDeviceAndCountAsTheEagerTrainer) {
  TempDir d;
  std::vector<std::pair<int64_t, int64_t>> counts;
  std::vector<double> scales;
  for (const char* mode : {"every_update", "log_interval"}) {
    Trainer t(copy_config(d, "post_ln", {"train.precision=fp16", "train.loss_scale_init=64",
                                         "model.dropout=0", "diag.interval=0",
                                         std::string("train.host_reads=") + mode}),
              d.file(mode));
    t.setup();
    for (int u = 0; u < 6; ++u) {
      Batch b = t.train_data().make_batch({u, u + 6, u + 12});
      std::vector<torch::Tensor> before;
      for (const auto& p : t.model().parameters()) before.push_back(p.detach().clone());
      unsigned hook = 0;
      auto w = t.model().named_parameters()["encoder_layers.0.ffn.fc1.weight"];
      if (u == 2) hook = w.register_hook([](torch::Tensor g) { return g * INFINITY; });
      t.train_update({b});
      if (u == 2) {
        w.remove_hook(hook);
        auto params = t.model().parameters();
        for (size_t i = 0; i < before.size(); ++i)
          ASSERT_TRUE(torch::equal(before[i], params[i])) << mode << " parameter " << i;
      }
    }
    t.save_checkpoint("interval");
    counts.emplace_back(t.state().update, t.state().skipped);
    scales.push_back(t.scaler().scale());
  }
  EXPECT_EQ(counts[0], std::make_pair(int64_t{5}, int64_t{1}));
  EXPECT_EQ(counts[1], counts[0]);
  EXPECT_EQ(scales[0], 32);
  EXPECT_EQ(scales[1], scales[0]);

  Trainer t(copy_config(d, "post_ln", {"train.max_bad_steps=2", "train.host_reads=log_interval",
                                       "diag.interval=0"}),
            d.file("bad"));
  t.setup();
  {
    torch::NoGradGuard g;
    t.model().named_parameters()["decoder_layers.1.ffn.fc1.bias"].fill_(NAN);
  }
  Batch b = t.train_data().make_batch({0, 1, 2});
  t.train_update({b});
  t.train_update({b});  // nothing read yet: the device knows, the host does not
  EXPECT_EQ(t.state().update, 2);
  try {
    t.save_checkpoint("interval");
    FAIL() << "expected DivergenceError";
  } catch (const DivergenceError& e) {
    EXPECT_NE(std::string(e.what()).find("2 consecutive non-finite updates"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(t.state().update, 0);
  EXPECT_EQ(t.state().skipped, 2);
  EXPECT_FALSE(std::filesystem::exists(d.file("bad/checkpoint_last.pt")));
  EXPECT_NE(read_file(d.file("bad/metrics.jsonl")).find("\"event\": \"nonfinite\""),
            std::string::npos);
}

// With the stability instruments on (diag.interval 4 here), deferred reads
// hand the spike detector every update's loss at the next read and decide
// each measured update on the host: the metrics file, instrument records
// included, is the eager trainer's but for the clocks, with far fewer reads.
TEST(Trainer, DeferredReadsFeedTheInstrumentsAsTheEagerTrainer) {
  TempDir d;
  auto run = [&](const char* mode) {
    Trainer t(copy_config(d, "admin", {"train.max_updates=24", "train.log_interval=8",
                                       "diag.interval=4", "diag.spike_abs=0.01",
                                       std::string("train.host_reads=") + mode}),
              d.file(mode));
    t.fit();
    std::vector<std::string> lines;
    for (auto l : read_lines(d.file(std::string(mode) + "/metrics.jsonl"))) {
      // The clocks and the memory differ run to run: cut them out.
      for (const char* key : {"\"tokens_per_s\": ", "\"wall_s\": ", "\"rss_mb\": ",
                              "\"peak_rss_mb\": ", "\"seconds\": ", "\"time\": "}) {
        for (auto p = l.find(key); p != std::string::npos; p = l.find(key, p + 1)) {
          auto e = l.find_first_of(",}", p);
          l.erase(p + std::strlen(key), e - p - std::strlen(key));
        }
      }
      lines.push_back(l);
    }
    return std::make_pair(lines, t.host_reads().count());
  };
  auto [le, re] = run("every_update");
  auto [ld, rd] = run("log_interval");
  ASSERT_EQ(le.size(), ld.size());
  for (size_t i = 0; i < le.size(); ++i) EXPECT_EQ(ld[i], le[i]) << "line " << i;
  int64_t spikes = 0;
  for (const auto& l : le) spikes += l.find("\"spikes\": 0") == std::string::npos &&
                                     l.find("\"spikes\": ") != std::string::npos;
  EXPECT_GT(spikes, 0) << "the test needs the spike detector to fire";
  EXPECT_EQ(re, 24);
  EXPECT_LT(rd, re);
}

// Where the update cannot be decided on the device, log_interval says why
// in one line and reads every update; auto does so silently on the CPU.
TEST(Trainer, DeferredReadsFallBackWithOneLineWhereTheyCannot) {
  for (auto [setting, why] : std::vector<std::pair<std::string, std::string>>{
           {"optim.foreach=false", "cannot be decided on the device"},
           {"train.zero_grad=false", "train.zero_grad: false"}}) {
    TempDir d;
    std::vector<std::string> o = {"diag.interval=0", setting, "train.host_reads=log_interval",
                                  "train.max_updates=2"};
    Trainer t(copy_config(d, "pre_ln", o),
              d.file("run"));
    t.fit();
    EXPECT_EQ(t.host_reads().count() >= 2, true) << setting;
    const std::string log = read_file(d.file("run/train.log"));
    EXPECT_NE(log.find("train.host_reads: log_interval: "), std::string::npos) << setting;
    EXPECT_NE(log.find(why), std::string::npos) << setting;
    EXPECT_NE(log.find("reading every update"), std::string::npos) << setting;
  }
}

// Issue 33: the multi-tensor optimizer steps leave CPU training bit-identical
// to the per-tensor classes (every logged figure and every parameter).
TEST(Trainer, MultiTensorStepsTrainBitIdenticallyOnCpu) {
  for (const char* opt : {"adam", "radam"}) {
    TempDir d;
    std::vector<std::string> common = {"train.max_updates=24", "train.log_interval=4",
                                       "train.clip_norm=0.5", std::string("optim.name=") + opt};
    auto with = [&](const char* foreach) {
      auto o = common;
      o.push_back(std::string("optim.foreach=") + foreach);
      return o;
    };
    Trainer a(copy_config(d, "admin", with("true")), d.file("on"));
    Trainer b(copy_config(d, "admin", with("false")), d.file("off"));
    a.fit();
    b.fit();
    auto la = test::logged_losses(d.file("on/metrics.jsonl"));
    auto lb = test::logged_losses(d.file("off/metrics.jsonl"));
    ASSERT_EQ(la.size(), 6u) << opt;
    EXPECT_EQ(la, lb) << opt;
    auto pa = a.model().parameters(), pb = b.model().parameters();
    for (size_t i = 0; i < pa.size(); ++i)
      EXPECT_TRUE(torch::equal(pa[i], pb[i])) << opt << " parameter " << i;
  }
}

// The step rule the trainer and `clinic bench` share, against SGD done by
// hand: a non-finite update moves nothing, calls no hook and halves the
// scale; a finite one clips with the norm before_clip returns, runs
// before_step on the clipped gradient, steps, and counts toward growth.
TEST(ScaledStep, SkipsNonFiniteElseClipsWithTheHooksNormThenSteps) {
  auto p = torch::tensor({1.0, 2.0}, torch::kDouble).requires_grad_(true);
  torch::optim::SGD sgd({p}, torch::optim::SGDOptions(0.5));
  LossScaler scaler(8, 2, 1, true);
  int calls = 0;
  StepHooks count;
  count.before_clip = [&](double n) { ++calls; return n; };
  count.before_step = [&] { ++calls; };
  p.mutable_grad() = torch::tensor({3.0, 4.0}, torch::kDouble);
  EXPECT_FALSE(scaled_step(scaler, false, NAN, 1.0, {p}, sgd, count));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(scaler.scale(), 4);
  EXPECT_TRUE(torch::equal(p.detach(), torch::tensor({1.0, 2.0}, torch::kDouble)));
  // The hook says the norm is 10 (a held gradient added): clipping to 1
  // scales by 1 / (10 + 1e-6), not by 1 / 5.
  std::vector<double> grad_at_step;
  StepHooks hooks;
  hooks.before_clip = [&](double n) {
    EXPECT_DOUBLE_EQ(n, 5.0);
    return 10.0;
  };
  hooks.before_step = [&] {
    auto g = p.grad();
    grad_at_step = {g[0].item<double>(), g[1].item<double>()};
  };
  EXPECT_TRUE(scaled_step(scaler, true, 5.0, 1.0, {p}, sgd, hooks));
  const double f = 1.0 / (10.0 + 1e-6);
  ASSERT_EQ(grad_at_step.size(), 2u);
  EXPECT_DOUBLE_EQ(grad_at_step[0], 3.0 * f);
  EXPECT_DOUBLE_EQ(grad_at_step[1], 4.0 * f);
  EXPECT_DOUBLE_EQ(p[0].item<double>(), 1.0 - 0.5 * 3.0 * f);
  EXPECT_DOUBLE_EQ(p[1].item<double>(), 2.0 - 0.5 * 4.0 * f);
  EXPECT_EQ(scaler.scale(), 4);  // one clean update of the window of 2
  EXPECT_TRUE(scaled_step(scaler, true, 0.5, 1.0, {p}, sgd));  // under the clip: unchanged grad
  EXPECT_EQ(scaler.scale(), 8);
  EXPECT_DOUBLE_EQ(p[0].item<double>(), 1.0 - 0.5 * 3.0 * f - 0.5 * 3.0 * f);
}

TEST(Trainer, LossScalerGrowsBacksOffFloorsAndSkips) {
  LossScaler s(128, 3, 16, true);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 128);
  s.update(false);  // 3 clean updates
  EXPECT_EQ(s.scale(), 256);
  s.update(true);
  EXPECT_EQ(s.scale(), 128);
  for (int i = 0; i < 5; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 16);  // floor
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 16);
  s.update(false);
  EXPECT_EQ(s.scale(), 32);
  LossScaler off(128, 3, 0, false);
  off.update(true);
  EXPECT_EQ(off.scale(), 1);

  // In the trainer (every device): OnDevice.Fp16UsesTheLossScaler, device_test.cpp.
}

TEST(Trainer, NonFiniteValuesAreLocalisedAndStopTheRun) {
  TempDir d;
  Trainer t(copy_config(d, "post_ln", {"train.max_bad_steps=2"}), d.file("run"));
  t.setup();
  Batch b = t.train_data().make_batch({0, 1, 2});
  {
    torch::NoGradGuard g;
    t.model().named_parameters()["decoder_layers.1.ffn.fc1.bias"].fill_(NAN);
  }
  auto s = t.train_update({b});
  EXPECT_TRUE(s.skipped);
  EXPECT_EQ(s.nonfinite_where, "decoder layer 1 ffn output f(x)");
  try {
    t.train_update({b});
    FAIL() << "expected DivergenceError";
  } catch (const DivergenceError& e) {
    EXPECT_NE(std::string(e.what()).find("2 consecutive non-finite updates"), std::string::npos);
  }
}

// Issue 36 item 4: the replay that localises a non-finite update takes the
// training step's path. A model that declares the columns it can output
// (DecoderFeatures::allowed) trains on the criterion's three-argument form;
// when that form fails, the replay named "loss scale overflow (values finite
// in fp32 replay)" because it called the two-argument form, which is fine.
struct AllowedColumnsTransformer : TransformerImpl {
  using TransformerImpl::TransformerImpl;
  DecoderFeatures decode_features(const torch::Tensor& tgt_in, const EncoderOut& enc) override {
    DecoderFeatures f = TransformerImpl::decode_features(tgt_in, enc);
    auto logits = f.weight.defined() ? torch::nn::functional::linear(f.hidden, f.weight) : f.hidden;
    return {logits, torch::Tensor(), torch::ones({logits.size(-1)}, torch::kBool)};
  }
};

TEST(Trainer, NonFiniteLossOfTheAllowedColumnsFormIsLocalised) {
  if (!model_registry().contains("test_allowed_columns"))
    model_registry().add("test_allowed_columns", [](const ModelConfig& c, const VocabInfo& v) {
      return std::make_shared<AllowedColumnsTransformer>(c, v);
    });
  if (!loss_registry().contains("test_nan_over_allowed"))
    loss_registry().add("test_nan_over_allowed", [](const TrainConfig&) {
      Criterion c = loss_registry().get("label_smoothed_cross_entropy")(TrainConfig{});
      c.on_allowed = [](const torch::Tensor& l, const torch::Tensor& t, const torch::Tensor&) {
        LossOut o = label_smoothed_nll(l, t, 0.1, SmoothingMass::kEpsOverV);
        return LossOut{o.loss * std::numeric_limits<double>::quiet_NaN(), o.nll};
      };
      return c;
    });
  TempDir d;
  Trainer t(copy_config(d, "post_ln", {"model.arch=test_allowed_columns",
                                       "train.criterion=test_nan_over_allowed"}),
            d.file("run"));
  t.setup();
  auto s = t.train_update({t.train_data().make_batch({0, 1, 2})});
  EXPECT_TRUE(s.skipped);
  EXPECT_EQ(s.nonfinite_where,
            "loss (train.criterion test_nan_over_allowed, over the model's allowed columns) on "
            "finite model outputs");
}

TEST(Trainer, CorruptCheckpointIsAClearError) {
  TempDir d;
  RunConfig cfg = copy_config(d, "post_ln", {"train.max_updates=3"});
  {
    Trainer t(cfg, d.file("run"));
    t.fit();
  }
  std::string ck = d.file("run/checkpoint_last.pt");
  std::string bytes = read_file(ck);
  test::write_text(ck, bytes.substr(0, bytes.size() / 2));
  std::string e = test::error_of<CheckpointError>([&] { read_checkpoint_meta(ck); });
  EXPECT_NE(e.find("corrupt or truncated"), std::string::npos) << e;
  bytes[bytes.size() - 100] ^= 0x5a;
  test::write_text(ck, bytes);
  e = test::error_of<CheckpointError>([&] { Trainer(cfg, d.file("run")).setup(); });
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
}

TEST(Trainer, ResumeWithAnotherModelShapeIsAClearError) {
  TempDir d;
  {
    Trainer t(copy_config(d, "post_ln", {"train.max_updates=2"}), d.file("run"));
    t.fit();
  }
  std::string e = test::error_of<CheckpointError>(
      [&] { Trainer(copy_config(d, "post_ln", {"model.ffn_dim=48"}), d.file("run")).setup(); });
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  // One line naming each differing key (it printed the whole model section).
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_NE(e.find("model.ffn_dim is 64 there, 48 now"), std::string::npos) << e;
}

// Keys outside model.* may change on resume, and each change is logged.
TEST(Trainer, ResumeLogsEveryRecipeChange) {
  TempDir d;
  {
    Trainer t(copy_config(d, "post_ln", {"train.max_updates=2"}), d.file("run"));
    t.fit();
  }
  {
    Trainer t(copy_config(d, "post_ln", {"train.max_updates=3", "optim.lr=0.001",
                                         "data.vocab_size=100"}),
              d.file("run"));
    t.fit();
    EXPECT_EQ(t.state().update, 3);
  }
  std::string log = read_file(d.file("run/train.log"));
  EXPECT_NE(log.find("resuming with a changed recipe: optim.lr is 0.003 there, 0.001 now"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("resuming with a changed recipe: train.max_updates is 2 there, 3 now"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("[model] transformer (post_ln), "), std::string::npos) << log;
  // The vocabulary stays the checkpoint's, and the log says so.
  EXPECT_NE(log.find("data.vocab_size and data.tokenizer changes take effect only in a new run dir"),
            std::string::npos)
      << log;
}

// Issue 36 item 2: the [model] line names each stack's variant of a mix.
TEST(Trainer, ModelLogLineNamesEachStacksVariant) {
  TempDir d;
  Trainer t(copy_config(d, "post_ln", {"train.max_updates=1", "model.decoder_residual=pre_ln"}),
            d.file("run"));
  t.fit();
  std::string log = read_file(d.file("run/train.log"));
  EXPECT_NE(log.find("[model] transformer (enc post_ln / dec pre_ln), "), std::string::npos) << log;
}

// fairseq: lr_scheduler.step_update(0) before update 1, step_update(k) after
// update k, so update k runs with lr(k - 1). The golden values are the
// inverse_sqrt formula of fairseq's inverse_square_root_schedule.py.
TEST(Trainer, LearningRateFollowsFairseqUpdateTiming) {
  TempDir d;
  const double peak = 0.003, init = 1e-5;
  const int64_t warmup = 4;
  Trainer t(copy_config(d, "post_ln", {"schedule.warmup_updates=4", "schedule.warmup_init_lr=1e-5",
                                       "model.dropout=0"}),
            d.file("run"));
  t.setup();
  auto fairseq_lr = [&](int64_t num_updates) {
    if (num_updates < warmup) return init + num_updates * (peak - init) / warmup;
    return peak * std::sqrt(static_cast<double>(warmup)) / std::sqrt(static_cast<double>(num_updates));
  };
  const auto& corpus = t.train_data();
  for (int64_t k = 1; k <= 7; ++k) {
    t.train_update({corpus.make_batch({k, k + 1})});
    double used = t.optimizer().param_groups()[0].options().get_lr();
    EXPECT_NEAR(used, fairseq_lr(k - 1), 1e-15) << "update " << k;
  }
  EXPECT_EQ(t.state().update, 7);
}

// A run dir moved (or copied without its vocabulary) resumed with a freshly
// built, different vocabulary: "trained with a different vocabulary".
TEST(Trainer, ResumeRestoresTheVocabularyFromTheCheckpoint) {
  TempDir d;
  RunConfig cfg = copy_config(d, "post_ln", {"train.max_updates=2"});
  {
    Trainer t(cfg, d.file("run"));
    t.fit();
  }
  std::string dict = read_file(d.file("run/dict.txt"));
  std::filesystem::rename(d.file("run"), d.file("moved"));
  std::filesystem::remove(d.file("moved/dict.txt"));
  // The corpus changed meanwhile: a rebuilt dictionary would differ.
  std::ofstream(d.file("corpus/train.src"), std::ios::app) << "w0 w0 w0 w0 zz zz zz\n";
  std::ofstream(d.file("corpus/train.tgt"), std::ios::app) << "w0 w0 w0 w0 zz zz zz\n";
  RunConfig more = cfg;
  more.train.max_updates = 3;
  {
    Trainer t(more, d.file("moved"));
    t.fit();
    EXPECT_EQ(t.state().update, 3);
  }
  EXPECT_EQ(read_file(d.file("moved/dict.txt")), dict);
  // A damaged vocabulary file is replaced by the checkpoint's copy too.
  test::write_text(d.file("moved/dict.txt"), "");
  more.train.max_updates = 4;
  Trainer u(more, d.file("moved"));
  u.fit();
  EXPECT_EQ(read_file(d.file("moved/dict.txt")), dict);
}

// d_model 65536 (inside the allowed range) tried to allocate 51 GB and was
// OOM-killed; the recipe's need is now checked before any tensor exists.
TEST(Trainer, ModelTooLargeForMemoryIsRefusedBeforeAllocating) {
  TempDir d;
  Trainer t(copy_config(d, "post_ln", {"model.d_model=65536", "model.ffn_dim=65536"}),
            d.file("run"));
  std::string e = test::error_of<DataError>([&] { t.setup(); });
  EXPECT_NE(e.find("training this model"), std::string::npos) << e;
  EXPECT_NE(e.find("GiB of memory is available"), std::string::npos) << e;
  EXPECT_NE(e.find("lower model.d_model (65536)"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(d.file("run/checkpoint_last.pt")));
}

TEST(Trainer, AveragingEqualsTheMeanOfParameters) {
  TempDir d;
  {
    Trainer t(copy_config(d, "admin", {"train.max_updates=6", "train.save_interval=2",
                                       "train.keep_last=3"}),
              d.file("run"));
    t.fit();
  }
  auto files = select_checkpoints(d.file("run"), 2, "");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[1].find("checkpoint_u6.pt"), std::string::npos);
  average_checkpoints(files, d.file("avg.pt"));
  RunConfig cfg = copy_config(d, "admin");
  auto pa = test::checkpoint_params(cfg.model, files[0]), pb = test::checkpoint_params(cfg.model, files[1]);
  for (const auto& [name, avg] : test::checkpoint_params(cfg.model, d.file("avg.pt")))
    test::expect_close(avg, (pa[name] + pb[name]) / 2, 1e-6, 1e-7);
}

// Recipes that keep epoch checkpoints (IWSLT'14) have no checkpoint_u*.pt:
// --last N found nothing. fairseq's --num-epoch-checkpoints does this.
TEST(Trainer, AverageLastFallsBackToEpochCheckpoints) {
  TempDir d;
  {
    Trainer t(copy_config(d, "post_ln", {"train.max_epochs=3", "train.max_updates=0",
                                         "train.keep_epoch_checkpoints=true"}),
              d.file("run"));
    t.fit();
  }
  auto files = select_checkpoints(d.file("run"), 2, "");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_NE(files[0].find("checkpoint_epoch2.pt"), std::string::npos) << files[0];
  EXPECT_NE(files[1].find("checkpoint_epoch3.pt"), std::string::npos) << files[1];
  std::string e = test::error_of<ConfigError>([&] { select_checkpoints(d.file("run"), 5, ""); });
  EXPECT_NE(e.find("asked for 5 checkpoints, found 3"), std::string::npos) << e;
}

// `average --out RUN/checkpoint_last.pt` then `train` restarted at update 0.
TEST(Trainer, AveragedCheckpointNeverReplacesOrResumesTraining) {
  TempDir d;
  RunConfig cfg = copy_config(d, "post_ln", {"train.max_updates=4", "train.save_interval=2"});
  {
    Trainer t(cfg, d.file("run"));
    t.fit();
  }
  auto files = select_checkpoints(d.file("run"), 2, "");
  std::string last = read_file(d.file("run/checkpoint_last.pt"));
  for (const char* name : {"checkpoint_last.pt", "checkpoint_u4.pt", "checkpoint_best.pt"}) {
    std::string e = test::error_of<ConfigError>(
        [&] { average_checkpoints(files, d.file(std::string("run/") + name)); });
    EXPECT_NE(e.find("training checkpoint"), std::string::npos) << name << ": " << e;
  }
  // Any checkpoint with optimizer state, whatever its name.
  std::filesystem::copy_file(d.file("run/checkpoint_last.pt"), d.file("mine.pt"));
  EXPECT_NE(test::error_of<ConfigError>([&] { average_checkpoints(files, d.file("mine.pt")); }),
            "<no exception>");
  EXPECT_EQ(read_file(d.file("run/checkpoint_last.pt")), last);
  // An averaged file put in place by hand is refused on resume.
  average_checkpoints(files, d.file("avg.pt"));
  EXPECT_FALSE(read_checkpoint_meta(d.file("avg.pt")).has_optimizer);
  std::filesystem::copy_file(d.file("avg.pt"), d.file("run/checkpoint_last.pt"),
                             std::filesystem::copy_options::overwrite_existing);
  std::string e = test::error_of<CheckpointError>([&] { Trainer(cfg, d.file("run")).setup(); });
  EXPECT_NE(e.find("averaged weights without optimizer state"), std::string::npos) << e;
}

// bf16 autocast vs fp32: OnDevice.Bf16AutocastTracksFp32 (device_test.cpp), on every device.

TEST(Trainer, LabelSmoothingMassVariants) {
  auto logits = torch::randn({1, 3, 6});
  auto target = torch::tensor({{4, 5, 0}}, torch::kLong);  // last position is padding
  auto lp = torch::log_softmax(logits, -1)[0];
  double nll = -(lp[0][4] + lp[1][5]).item<double>();
  double smooth = -(lp[0].sum() + lp[1].sum()).item<double>();
  auto v = label_smoothed_nll(logits, target, 0.1, SmoothingMass::kEpsOverV);
  EXPECT_NEAR(v.loss.item<double>(), 0.9 * nll + 0.1 / 6 * smooth, 1e-5);
  EXPECT_NEAR(v.nll.item<double>(), nll, 1e-5);
  auto w = label_smoothed_nll(logits, target, 0.1, SmoothingMass::kEpsOverVMinus1);
  EXPECT_NEAR(w.loss.item<double>(), (1 - 0.1 - 0.02) * nll + 0.02 * smooth, 1e-5);
}

// The loss's closed-form backward against autograd through the plain formula,
// for both smoothing masses, no smoothing, padding, a non-unit upstream
// gradient and bf16 logits (the autocast path).
TEST(Trainer, LabelSmoothedLossGradientMatchesAutograd) {
  torch::manual_seed(3);
  auto target = torch::tensor({{4, 5, 0, 2}, {1, 0, 0, 0}}, torch::kLong);
  const int64_t V = 7;
  struct Case { double eps; SmoothingMass mass; torch::ScalarType dtype; };
  for (auto c : {Case{0.1, SmoothingMass::kEpsOverV, torch::kFloat},
                 Case{0.2, SmoothingMass::kEpsOverVMinus1, torch::kFloat},
                 Case{0.0, SmoothingMass::kEpsOverV, torch::kFloat},
                 Case{0.1, SmoothingMass::kEpsOverV, torch::kBFloat16}}) {
    auto base = (3 * torch::randn({2, 4, V})).to(c.dtype);
    auto x = base.clone().requires_grad_(true);
    auto out = label_smoothed_nll(x, target, c.eps, c.mass);
    (2.5 * out.loss).backward();
    ASSERT_EQ(x.grad().scalar_type(), c.dtype);

    auto y = base.to(torch::kFloat).clone().requires_grad_(true);
    auto lp = torch::log_softmax(y, -1).view({-1, V});
    auto keep = target.reshape({-1, 1}).ne(0).to(torch::kFloat);
    auto nll = -(lp.gather(1, target.reshape({-1, 1})) * keep).sum();
    auto smooth = -(lp.sum(-1, true) * keep).sum();
    double a = 1 - c.eps, b = c.eps / V;
    if (c.mass == SmoothingMass::kEpsOverVMinus1) b = c.eps / (V - 1), a = 1 - c.eps - b;
    auto ref = a * nll + b * smooth;
    (2.5 * ref).backward();
    double tol = c.dtype == torch::kFloat ? 1e-5 : 1e-2;
    EXPECT_NEAR(out.loss.item<double>(), ref.item<double>(), tol * 10) << c.eps;
    EXPECT_NEAR(out.nll.item<double>(), nll.item<double>(), tol * 10) << c.eps;
    EXPECT_TRUE(torch::allclose(x.grad().to(torch::kFloat), y.grad(), tol, tol)) << c.eps;
    // Padding rows get no gradient.
    EXPECT_EQ(x.grad()[1].narrow(0, 1, 3).abs().sum().item<double>(), 0.0);
  }
}

// The chunked linear + loss (no [N, V] logits) against the logits path:
// loss, nll and both gradients, for chunks that split the rows unevenly, a
// single chunk, padding, both smoothing masses, and bf16 compute.
TEST(Trainer, FusedLinearLossMatchesTheLogitsPath) {
  torch::manual_seed(5);
  const int64_t B = 3, T = 5, d = 8, V = 11;
  auto target = torch::randint(1, V, {B, T}, torch::kLong);
  target[2].narrow(0, 2, 3).fill_(0);  // padding
  struct Case { double eps; SmoothingMass mass; torch::ScalarType dtype; int64_t chunk; };
  for (auto c : {Case{0.1, SmoothingMass::kEpsOverV, torch::kFloat, 4},
                 Case{0.2, SmoothingMass::kEpsOverVMinus1, torch::kFloat, 7},
                 Case{0.0, SmoothingMass::kEpsOverV, torch::kFloat, 0},
                 Case{0.1, SmoothingMass::kEpsOverV, torch::kBFloat16, 6}}) {
    auto h0 = torch::randn({B, T, d}), w0 = torch::randn({V, d});
    auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto out = fused_linear_label_smoothed_nll(h, w, target, c.eps, c.mass, c.dtype, c.chunk);
    (1.5 * out.loss).backward();
    ASSERT_EQ(h.grad().scalar_type(), torch::kFloat);

    auto hr = h0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
    auto logits = torch::nn::functional::linear(hr.to(c.dtype), wr.to(c.dtype));
    auto ref = label_smoothed_nll(logits, target, c.eps, c.mass);
    (1.5 * ref.loss).backward();
    double tol = c.dtype == torch::kFloat ? 1e-5 : 2e-2;
    EXPECT_NEAR(out.loss.item<double>(), ref.loss.item<double>(),
                tol * std::abs(ref.loss.item<double>())) << c.chunk;
    EXPECT_NEAR(out.nll.item<double>(), ref.nll.item<double>(),
                tol * std::abs(ref.nll.item<double>())) << c.chunk;
    EXPECT_TRUE(torch::allclose(h.grad(), hr.grad(), tol, tol)) << c.chunk;
    EXPECT_TRUE(torch::allclose(w.grad(), wr.grad(), tol, tol * 5)) << c.chunk;
    EXPECT_EQ(h.grad()[2].narrow(0, 2, 3).abs().sum().item<double>(), 0.0);

    // Without gradients (validation): the same loss, nothing kept for backward.
    torch::NoGradGuard g;
    auto e = fused_linear_label_smoothed_nll(h0, w0, target, c.eps, c.mass, c.dtype, c.chunk);
    EXPECT_EQ(e.loss.item<double>(), out.loss.item<double>());
    EXPECT_FALSE(e.loss.requires_grad());
  }
  // fp16 compute takes the logits path (its gradient must see the loss scale
  // before it is rounded to fp16): Criterion gives exactly label_smoothed_nll.
  Criterion crit = loss_registry().get("label_smoothed_cross_entropy")(TrainConfig{});
  auto h = torch::randn({B, T, d}), w = torch::randn({V, d});
  auto via = crit(DecoderFeatures{h, w, torch::Tensor()}, target, torch::kFloat).loss.item<double>();
  auto fused = fused_linear_label_smoothed_nll(h, w, target, TrainConfig{}.label_smoothing,
                                               SmoothingMass::kEpsOverV, torch::kFloat)
                   .loss.item<double>();
  EXPECT_EQ(via, fused);
  auto logits = torch::nn::functional::linear(h, w);
  EXPECT_EQ(crit(DecoderFeatures{logits, torch::Tensor(), torch::Tensor()}, target, torch::kFloat).loss.item<double>(),
            crit(logits, target).loss.item<double>());
}

TEST(Trainer, NoDecayGroupHoldsBiasesNormsAndOmega) {
  TempDir d;
  RunConfig cfg = copy_config(d, "admin", {"optim.name=radam", "optim.weight_decay=0.01",
                                           "optim.no_decay_bias_norm=true"});
  auto m = build_model(cfg.model, VocabInfo{16, 16, true});
  auto opt = build_optimizer(*m, cfg.optim);
  ASSERT_EQ(opt->param_groups().size(), 2u);
  std::set<torch::TensorImpl*> no_decay;
  for (const auto& p : opt->param_groups()[1].params()) no_decay.insert(p.unsafeGetTensorImpl());
  for (const auto& p : m->named_parameters()) {
    bool nd = p.key().find("bias") != std::string::npos || p.key().find("norm.") != std::string::npos ||
              p.key().find("omega") != std::string::npos;
    EXPECT_EQ(no_decay.count(p.value().unsafeGetTensorImpl()) > 0, nd) << p.key();
  }
  auto& o0 = static_cast<RAdamOptions&>(opt->param_groups()[0].options());
  auto& o1 = static_cast<RAdamOptions&>(opt->param_groups()[1].options());
  EXPECT_DOUBLE_EQ(o0.weight_decay(), 0.01);
  EXPECT_DOUBLE_EQ(o1.weight_decay(), 0.0);
  // The Clinic default decays everything: one group.
  cfg.optim.no_decay_bias_norm = false;
  EXPECT_EQ(build_optimizer(*m, cfg.optim)->param_groups().size(), 1u);
}

// A group at lr 0 is frozen: its parameters end bit-identical to their init
// (Adam, AdamW's decoupled decay and the schedule all scale with lr), while
// every other parameter moves.
TEST(Trainer, GroupAtLrZeroIsFrozen) {
  for (const char* opt : {"adam", "adamw"}) {
    TempDir d;
    RunConfig cfg = copy_config(
        d, "post_ln",
        {std::string("optim.name=") + opt, "optim.weight_decay=0.1", "train.max_updates=5",
         "optim.groups=[{name: frozen, match: 'encoder_layers\\.0\\..*\\.norm\\.bias', lr: 0}]"});
    Trainer t(cfg, d.file("run"));
    t.setup();
    auto init = test::named_weights(t.model());
    t.fit();
    int frozen = 0;
    for (const auto& p : t.model().named_parameters()) {
      bool in_group = p.key().rfind("encoder_layers.0.", 0) == 0 &&
                      p.key().find(".norm.bias") != std::string::npos;
      bool same = torch::equal(p.value(), init.at(p.key()));
      EXPECT_EQ(same, in_group) << opt << " " << p.key();
      frozen += in_group;
    }
    EXPECT_EQ(frozen, 2) << opt;  // the attention and FFN sublayers' LayerNorm biases
  }
}

TEST(Trainer, EvalBleuIsReportedAtValidation) {
  TempDir d;
  Trainer t(copy_config(d, "pre_ln", {"train.eval_bleu=true", "train.validate_interval=20",
                                      "train.max_updates=20"}),
            d.file("run"));
  t.fit();
  std::string metrics = read_file(d.file("run/metrics.jsonl"));
  EXPECT_NE(metrics.find("\"valid_bleu\": "), std::string::npos) << metrics;
  EXPECT_TRUE(std::filesystem::exists(d.file("run/checkpoint_best.pt")));
  // best is the checkpoint written at that validation (a second name for that
  // save's file), intact after the final save replaced checkpoint_last.pt.
  int64_t best_update = -1;
  for (const auto& line : read_lines(d.file("run/metrics.jsonl")))
    if (line.find("\"best\": 1") != std::string::npos)
      best_update = std::stoll(line.substr(line.find("\"update\": ") + 10));
  ASSERT_GT(best_update, 0) << metrics;
  EXPECT_EQ(read_checkpoint_meta(d.file("run/checkpoint_best.pt")).state.update, best_update);
}

// An epoch-end validation that is the best so far is saved once: the epoch
// checkpoint and checkpoint_best.pt are two names of one file (a second
// serialisation would give best a file of its own).
TEST(Trainer, BestAtAnEpochEndIsTheEpochCheckpointsFile) {
  TempDir d;
  Trainer t(copy_config(d, "post_ln", {"train.max_epochs=2", "train.max_updates=0",
                                       "train.keep_epoch_checkpoints=true",
                                       "train.validate_interval=0"}),
            d.file("run"));
  t.fit();
  int64_t best_epoch = -1, epoch = 0;
  for (const auto& line : read_lines(d.file("run/metrics.jsonl")))
    if (line.find("\"event\": \"valid\"") != std::string::npos) {
      ++epoch;
      if (line.find("\"best\": 1") != std::string::npos) best_epoch = epoch;
    }
  ASSERT_GT(best_epoch, 0);
  EXPECT_TRUE(std::filesystem::equivalent(
      d.file("run/checkpoint_best.pt"),
      d.file("run/checkpoint_epoch" + std::to_string(best_epoch) + ".pt")));
  EXPECT_EQ(read_checkpoint_meta(d.file("run/checkpoint_best.pt")).state.update,
            read_checkpoint_meta(d.file("run/checkpoint_epoch" + std::to_string(best_epoch) +
                                        ".pt"))
                .state.update);
  // Issue 36 item 3: one serialisation per epoch; the final save after the
  // last epoch's holds the same state and only links (it wrote it again).
  EXPECT_EQ(t.checkpoint_writes(), 2);
  EXPECT_TRUE(std::filesystem::equivalent(d.file("run/checkpoint_last.pt"),
                                          d.file("run/checkpoint_epoch2.pt")));
  // An interval save on an epoch's last update is written again at the
  // epoch's end (the data position and validation differ): resumable there.
  TempDir d2;
  Trainer u(copy_config(d2, "post_ln", {"train.max_epochs=1", "train.max_updates=0",
                                        "train.save_interval=1", "train.validate_interval=0"}),
            d2.file("run"));
  u.fit();
  EXPECT_EQ(u.checkpoint_writes(), u.state().update + 1);
  EXPECT_EQ(read_checkpoint_meta(d2.file("run/checkpoint_last.pt")).state.position.epoch, 2);
}

// SIGTERM finishes the current update, checkpoints and exits 0.
TEST(Trainer, SigtermCheckpointsAndExitsZero) {
  TempDir d;
  test::write_copy_corpus(d.file("corpus"), 400, 40);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("corpus")));
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string cmd = test::clinic_bin() + " train " + d.file("r.yaml") + " --run-dir " +
                      d.file("run") + " --set train.max_updates=100000 --set train.save_interval=1" +
                      " >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    ::_exit(127);
  }
  for (int i = 0; i < 1200 && !std::filesystem::exists(d.file("run/checkpoint_u3.pt")); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto meta = read_checkpoint_meta(d.file("run/checkpoint_last.pt"));
  EXPECT_GE(meta.state.update, 3);
  EXPECT_LT(meta.state.update, 100000);
}

// A child `clinic train` killed with SIGKILL and resumed ends bit-identical
// to an uninterrupted run.
// optim.groups in the trainer: each group's lr follows its own schedule in
// metrics.jsonl (lr_<name>, computed here from the formulas), and a resume
// continues bit-identically (per-group optimizer state in the checkpoint).
TEST(Trainer, ParameterGroupsFollowTheirSchedulesAndResumeExactly) {
  TempDir d;
  const std::vector<std::string> common = {
      "optim.groups=[{name: enc, match: 'encoder_layers\\..*', lr: 0.002, weight_decay: 0.1, "
      "schedule: {name: noam, warmup_updates: 4, noam_dim: 1}}, "
      "{name: dec, glob: 'decoder_layers.*', lr: 0.01}]",
      "train.log_interval=1", "train.save_interval=1", "model.dropout=0.2"};
  auto run = [&](const std::string& dir, int updates) {
    auto o = common;
    o.push_back("train.max_updates=" + std::to_string(updates));
    Trainer t(copy_config(d, "pre_ln", o), d.file(dir));
    t.fit();
  };
  run("straight", 8);
  run("resumed", 3);
  run("resumed", 8);
  int seen = 0;
  for (const auto& l : read_lines(d.file("straight/metrics.jsonl"))) {
    if (l.find("\"update\"") != 1 || l.find("\"lr_enc\"") == std::string::npos) continue;
    auto num = [&](const std::string& key) {
      return std::stod(l.substr(l.find("\"" + key + "\": ") + key.size() + 4));
    };
    const double u = num("update"), k = u + 1;  // the logged lr is the next update's
    EXPECT_NEAR(num("lr_enc"), 0.002 * std::min(std::pow(k, -0.5), k * std::pow(4.0, -1.5)), 1e-12);
    EXPECT_NEAR(num("lr_dec"), u * 0.01 / 10, 1e-12);  // recipe's inverse_sqrt, warmup 10
    EXPECT_NEAR(num("lr"), u * 0.003 / 10, 1e-12);     // top-level: optim.lr 0.003
    ++seen;
  }
  EXPECT_EQ(seen, 8);
  // Other groups on resume: one error naming both layouts (the optimizer
  // state is per group); a changed lr alone is a logged recipe change.
  std::string e = test::error_of<CheckpointError>([&] {
    Trainer t(copy_config(d, "pre_ln", {"optim.groups=[{name: enc, match: 'encoder.*'}]", "model.dropout=0.2",
                                        "train.max_updates=9"}),
              d.file("resumed"));
    t.setup();
  });
  EXPECT_NE(e.find("optim.groups places parameters differently"), std::string::npos) << e;
  RunConfig cfg = copy_config(d, "pre_ln");
  CheckpointMeta mb;
  auto pa = test::checkpoint_params(cfg.model, d.file("straight/checkpoint_last.pt"));
  auto pb = test::checkpoint_params(cfg.model, d.file("resumed/checkpoint_last.pt"), &mb);
  ASSERT_EQ(mb.state.update, 8);
  for (const auto& [name, a] : pa) EXPECT_TRUE(torch::equal(a, pb[name])) << name;
}

TEST(Trainer, ResumeAfterSigkillIsBitIdentical) {
  TempDir d;
  test::write_copy_corpus(d.file("corpus"), 400, 40);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("corpus"), "admin"));
  std::string common = " train " + d.file("r.yaml") +
                       " --set train.max_updates=60 --set train.save_interval=1"
                       " --set train.log_interval=4 --set data.max_tokens=64";
  std::string out;
  ASSERT_EQ(test::run_shell(test::clinic_bin() + common + " --run-dir " + d.file("straight"), &out), 0)
      << out;
  for (int kill_after : {5, 13}) {
    std::string run = d.file("killed" + std::to_string(kill_after));
    pid_t pid = ::fork();
    if (pid == 0) {
      std::string cmd = test::clinic_bin() + common + " --run-dir " + run + " >/dev/null 2>&1";
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
      ::_exit(127);
    }
    std::string marker = run + "/checkpoint_u" + std::to_string(kill_after) + ".pt";
    for (int i = 0; i < 6000 && !std::filesystem::exists(marker); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
    ASSERT_EQ(test::run_shell(test::clinic_bin() + common + " --run-dir " + run, &out), 0) << out;
    RunConfig cfg = parse_recipe_text(test::copy_recipe(d.file("corpus"), "admin"), "r");
    CheckpointMeta ma, mb;
    auto pa = test::checkpoint_params(cfg.model, d.file("straight/checkpoint_last.pt"), &ma);
    auto pb = test::checkpoint_params(cfg.model, run + "/checkpoint_last.pt", &mb);
    EXPECT_EQ(ma.state.update, 60);
    EXPECT_EQ(mb.state.update, 60);
    for (const auto& [name, a] : pa)
      EXPECT_TRUE(torch::equal(a, pb[name])) << "kill at " << kill_after << ": " << name;
  }
}

}  // namespace
}  // namespace clinic
