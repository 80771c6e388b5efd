// Device-parametrised tests: each runs on the CPU and, where
// torch::cuda::is_available(), on CUDA; the CUDA instance skips with its
// reason elsewhere. The oracle is always the fp32 CPU computation of the same
// seeded model and batch (independent kernels: MKL/OpenBLAS vs cuBLAS/SDPA).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "framework/amp/autocast.h"
#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/eval/search.h"
#include "framework/model.h"
#include "framework/train/checkpoint.h"
#include "framework/train/graphed_update.h"
#include "framework/train/trainer.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

class OnDevice : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda" && !torch::cuda::is_available())
      GTEST_SKIP() << "no CUDA device here (torch::cuda::is_available() is false; "
                      "the CUDA instance runs on a GPU machine: scripts/gpu-check.sh)";
  }
  torch::Device device() const {
    return GetParam() == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  }
  /// The copy-task recipe of the trainer tests on this device.
  RunConfig config(const TempDir& d, const std::string& residual,
                   std::vector<std::string> overrides = {}) const {
    test::write_copy_corpus(d.file("corpus"), 400, 40);
    overrides.push_back("train.device=" + GetParam());
    return parse_recipe_text(test::copy_recipe(d.file("corpus"), residual), "copy.yaml",
                             overrides);
  }
};

// cuda and cuda:0 are the same device here (parameters carry the index).
bool same_device(const torch::Device& a, const torch::Device& b) {
  return a.type() == b.type() && (!a.has_index() || !b.has_index() || a.index() == b.index());
}

INSTANTIATE_TEST_SUITE_P(Devices, OnDevice, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

torch::Tensor device_ids(const std::vector<std::vector<int64_t>>& rows, torch::Device dev) {
  auto t = torch::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())},
                        torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t.to(dev);
}

// Every parameter and buffer moves, the output stays on the device (no silent
// CPU fallback), and logits and gradients match the CPU model.
TEST_P(OnDevice, ModelForwardBackwardMatchesTheCpuModel) {
  for (const char* residual : {"post_ln", "pre_ln", "admin"}) {
    ModelConfig mc = test::tiny_model(residual, 2, 32);
    torch::manual_seed(7);
    auto ref = build_model(mc, VocabInfo{24, 24, true});
    torch::manual_seed(7);
    auto dev = build_model(mc, VocabInfo{24, 24, true});
    dev->to(device());
    for (const auto& p : dev->named_parameters()) ASSERT_TRUE(same_device(p.value().device(), device())) << p.key();
    for (const auto& b : dev->named_buffers()) ASSERT_TRUE(same_device(b.value().device(), device())) << b.key();
    std::vector<std::vector<int64_t>> src = {{5, 6, 7, 8, kEos}, {9, 10, 11, kEos, kPad}};
    std::vector<std::vector<int64_t>> tgt = {{kBos, 5, 6, 7, 8}, {kBos, 9, 10, 11, kPad}};
    auto want = ref->forward(device_ids(src, torch::kCPU), device_ids(tgt, torch::kCPU));
    auto got = dev->forward(device_ids(src, device()), device_ids(tgt, device()));
    ASSERT_TRUE(same_device(got.device(), device())) << residual;
    test::expect_close(got.cpu(), want, 1e-4, 1e-4);
    want.logsumexp(-1).sum().backward();
    got.logsumexp(-1).sum().backward();
    auto rp = ref->named_parameters();
    for (const auto& p : dev->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << residual << " " << p.key();
      ASSERT_TRUE(same_device(p.value().grad().device(), device())) << p.key();
      test::expect_close(p.value().grad().cpu(), rp[p.key()].grad(), 1e-3, 1e-4);
    }
  }
}

// The trainer puts model, optimizer state and batches on the device and
// follows the CPU trainer's losses update by update.
TEST_P(OnDevice, TrainerFollowsTheCpuTrainer) {
  TempDir d;
  std::vector<std::vector<double>> losses(2);
  for (int k = 0; k < 2; ++k) {
    RunConfig cfg = config(d, "admin", {"model.dropout=0"});
    if (k == 0) cfg.train.device = "cpu";
    Trainer t(cfg, d.file("run" + std::to_string(k)));
    t.setup();
    ASSERT_TRUE(same_device(t.device(), k == 0 ? torch::Device(torch::kCPU) : device()));
    for (int u = 0; u < 6; ++u) {
      auto s = t.train_update({t.train_data().make_batch({u, u + 6, u + 12, u + 18})});
      ASSERT_FALSE(s.skipped);
      losses[k].push_back(s.loss / s.tokens);
    }
    for (const auto& p : t.model().parameters()) ASSERT_TRUE(same_device(p.device(), t.device()));
  }
  EXPECT_LT(losses[1].back(), losses[1].front());
  for (size_t u = 0; u < losses[0].size(); ++u)
    EXPECT_NEAR(losses[1][u], losses[0][u], 2e-3 * losses[0][u]) << "update " << u;
}

// bf16 = autocast(bf16): the forward really computes in bf16 on the device,
// and the first update's loss is within 2 % of fp32.
TEST_P(OnDevice, Bf16AutocastTracksFp32) {
  TempDir d;
  double loss[2];
  int i = 0;
  for (const char* prec : {"fp32", "bf16"}) {
    Trainer t(config(d, "pre_ln", {std::string("train.precision=") + prec, "model.dropout=0"}),
              d.file(std::string("run_") + prec));
    t.setup();
    auto s = t.train_update({t.train_data().make_batch({0, 1, 2, 3, 4, 5})});
    ASSERT_FALSE(s.skipped) << prec;
    EXPECT_TRUE(std::isfinite(s.grad_norm)) << prec;
    loss[i++] = s.loss / s.tokens;
    if (std::string(prec) == "bf16") {
      Batch b = t.train_data().make_batch({0, 1});
      AutocastGuard guard(device().type(), torch::kBFloat16);
      EXPECT_EQ(t.model().forward(b.src.to(device()), b.tgt_in.to(device())).scalar_type(),
                torch::kBFloat16);
    }
  }
  EXPECT_NEAR(loss[1], loss[0], 0.02 * loss[0]);
}

// train.host_reads (device_step.h): on CUDA `auto` decides the update on
// the device (no read per update) and follows the eager trainer; on the
// CPU `auto` stays eager. fp16 with the loss scaler on the device.
TEST_P(OnDevice, DeferredReadsFollowTheEagerTrainer) {
  TempDir d;
  std::vector<std::vector<torch::Tensor>> params;
  std::vector<int64_t> reads;
  for (const char* mode : {"every_update", "auto"}) {
    Trainer t(config(d, "admin", {"model.dropout=0", "diag.interval=0", "train.clip_norm=0.3",
                                  "train.precision=fp16", std::string("train.host_reads=") + mode}),
              d.file(mode));
    t.setup();
    for (int u = 0; u < 6; ++u) t.train_update({t.train_data().make_batch({u, u + 6, u + 12})});
    reads.push_back(t.host_reads().count());
    t.save_checkpoint("interval");
    EXPECT_EQ(t.state().update, 6) << mode;
    std::vector<torch::Tensor> ps;
    for (const auto& p : t.model().parameters()) ps.push_back(p.detach().cpu());
    params.push_back(ps);
  }
  EXPECT_EQ(reads[0], 6);
  EXPECT_EQ(reads[1], device().is_cuda() ? 0 : 6);
  for (size_t i = 0; i < params[0].size(); ++i)
    test::expect_close(params[1][i], params[0][i], 1e-4, 1e-5);
}

// fp16 = autocast(fp16) + the loss scaler: on CUDA the forward computes in
// half precision; everywhere an overflowing gradient skips the update and
// halves the scale, and a clean update then steps.
TEST_P(OnDevice, Fp16UsesTheLossScaler) {
  TempDir d;
  Trainer ref(config(d, "post_ln", {"train.precision=fp32", "model.dropout=0"}), d.file("ref"));
  ref.setup();
  Batch b = ref.train_data().make_batch({0, 1, 2});
  double want = ref.train_update({b}).loss;
  Trainer t(config(d, "post_ln", {"train.precision=fp16", "train.loss_scale_init=64",
                                  "model.dropout=0"}),
            d.file("run"));
  t.setup();
  if (device().is_cuda()) {
    AutocastGuard guard(device().type(), torch::kHalf);
    EXPECT_EQ(t.model().forward(b.src.to(device()), b.tgt_in.to(device())).scalar_type(),
              torch::kHalf);
  }
  std::vector<torch::Tensor> before;
  for (const auto& p : t.model().parameters()) before.push_back(p.detach().clone());
  auto w = t.model().named_parameters()["encoder_layers.0.ffn.fc1.weight"];
  // Inject an overflowing gradient, as fp16 backward produces one.
  unsigned hook = w.register_hook([](torch::Tensor g) { return g * INFINITY; });
  auto s1 = t.train_update({b});
  w.remove_hook(hook);
  EXPECT_TRUE(s1.skipped);
  EXPECT_EQ(t.scaler().scale(), 32);
  EXPECT_EQ(t.state().update, 0);
  EXPECT_EQ(t.state().skipped, 1);
  auto params = t.model().parameters();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], params[i]));
  auto s2 = t.train_update({b});
  ASSERT_FALSE(s2.skipped);
  EXPECT_EQ(t.state().update, 1);
  EXPECT_NEAR(s2.loss, want, 0.01 * want);  // fp16 compute, fp32 loss
}

// A checkpoint holds every generator the run draws from: a resumed run with
// dropout continues exactly where an uninterrupted one would (on CUDA within
// float tolerance: its backward kernels may sum in another order; different
// dropout masks would differ by far more).
TEST_P(OnDevice, ResumeContinuesTheDropoutStream) {
  TempDir d;
  auto run = [&](const std::string& dir, int64_t updates) {
    Trainer t(config(d, "pre_ln", {"model.dropout=0.3", "train.max_updates=" + std::to_string(updates),
                                   "train.save_interval=1", "train.log_interval=1"}),
              d.file(dir));
    t.fit();
  };
  run("straight", 8);
  run("resumed", 4);
  run("resumed", 8);
  RunConfig cfg = config(d, "pre_ln");
  CheckpointMeta ma, mb;
  auto pa = test::checkpoint_params(cfg.model, d.file("straight/checkpoint_last.pt"), &ma);
  auto pb = test::checkpoint_params(cfg.model, d.file("resumed/checkpoint_last.pt"), &mb);
  ASSERT_EQ(ma.state.update, 8);
  ASSERT_EQ(mb.state.update, 8);
  EXPECT_EQ(ma.rng_state.cuda.size(), cuda_devices());
  for (const auto& [name, a] : pa) {
    if (device().is_cpu())
      EXPECT_TRUE(torch::equal(a, pb[name])) << name;
    else
      test::expect_close(a, pb[name], 1e-5, 1e-6);
  }
}

// The generator states round-trip through capture/restore on every device.
TEST_P(OnDevice, RngStateRoundTrips) {
  auto draw = [&] { return torch::rand({64}, torch::TensorOptions().device(device())).cpu(); };
  RngState s = capture_rng_state();
  auto first = draw();
  EXPECT_FALSE(torch::equal(first, draw()));
  EXPECT_EQ(restore_rng_state(s), cuda_devices());
  EXPECT_TRUE(torch::equal(first, draw()));
}

// The beam tests' case: one seeded tiny model on the CPU (the oracle) and its
// twin moved to the device, the options and the two sources (one padded).
struct BeamCase {
  explicit BeamCase(torch::Device dev) : device(dev) {
    ModelConfig mc = test::tiny_model("pre_ln", 2, 32);
    torch::manual_seed(3);
    ref = build_model(mc, VocabInfo{24, 24, true});
    torch::manual_seed(3);
    model = build_model(mc, VocabInfo{24, 24, true});
    model->to(dev);
    options.beam = 4;
    options.nbest = 2;
    options.max_len_b = 8;
  }
  torch::Tensor cpu_sources() const { return device_ids(sources, torch::kCPU); }
  torch::Tensor device_sources() const { return device_ids(sources, device); }

  torch::Device device;
  std::shared_ptr<Seq2SeqModel> ref, model;
  SearchOptions options;
  std::vector<std::vector<int64_t>> sources = {{5, 6, 7, 8, kEos}, {9, 10, 11, kEos, kPad}};
};

// The same n-best lists: tokens exactly, scores within 1e-4.
void expect_same_nbest(const std::vector<std::vector<Hypothesis>>& got,
                       const std::vector<std::vector<Hypothesis>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size());
    for (size_t k = 0; k < want[i].size(); ++k) {
      EXPECT_EQ(got[i][k].tokens, want[i][k].tokens) << "sentence " << i << " rank " << k;
      EXPECT_NEAR(got[i][k].score, want[i][k].score, 1e-4);
    }
  }
}

// Beam search on the device returns the CPU model's hypotheses.
TEST_P(OnDevice, BeamSearchMatchesTheCpuModel) {
  BeamCase c(device());
  expect_same_nbest(beam_search(*c.model, c.device_sources(), c.options),
                    beam_search(*c.ref, c.cpu_sources(), c.options));
}

// train.cuda_graph on the device (issue 33 item 3): on CUDA the update is
// captured once (at its second run) and replayed by the real CUDA graph; on
// the CPU it runs eagerly on the static buffers. Against the deferred
// trainer of the same device (the same update un-captured, the step's
// coefficients on the host): within 1 % of the way the weights moved (the
// CPU's stand-in test measured 0.17 %), and on CUDA one capture, the other
// updates replays, nothing refused.
TEST_P(OnDevice, CudaGraphUpdatesFollowTheDeferredTrainer) {
  TempDir d;
  std::vector<std::vector<torch::Tensor>> params;
  for (bool graph : {false, true}) {
    Trainer t(config(d, "admin", {"model.dropout=0", "diag.interval=0", "train.clip_norm=0.3",
                                  "train.host_reads=log_interval", "data.shape_buckets=2",
                                  "optim.name=radam",
                                  std::string("train.cuda_graph=") + (graph ? "true" : "false")}),
              d.file(graph ? "graph" : "deferred"));
    t.setup();
    const int n = 8;
    for (int u = 0; u < n; ++u) t.train_update({t.train_data().make_batch({0, 1, 2})});
    if (graph) {
      const UpdateGraphs* g = t.update_graphs();
      ASSERT_NE(g, nullptr);
      EXPECT_TRUE(g->refused().empty()) << g->refused();
      EXPECT_EQ(g->captures(), device().is_cuda() ? 1 : 0);
      EXPECT_EQ(g->replays(), device().is_cuda() ? n - 1 : 0);
    }
    std::vector<torch::Tensor> ps;
    for (const auto& p : t.model().parameters()) ps.push_back(p.detach().cpu());
    params.push_back(ps);
  }
  Trainer fresh(config(d, "admin", {"model.dropout=0"}), d.file("fresh"));
  fresh.setup();
  auto p0 = fresh.model().parameters();
  double moved = 0, off = 0;
  for (size_t i = 0; i < params[0].size(); ++i) {
    moved = std::max(moved, (params[0][i] - p0[i].detach().cpu()).abs().max().item<double>());
    off = std::max(off, (params[1][i] - params[0][i]).abs().max().item<double>());
  }
  EXPECT_GT(moved, 0);
  EXPECT_LE(off, 0.01 * moved) << "off " << off << ", moved " << moved;
}

// eval.cuda_graph on the device: the static cache, on CUDA its step captured
// and replayed by the real CUDA graph; the n-best of the growing cache on
// the CPU model.
TEST_P(OnDevice, StaticCacheBeamSearchMatchesTheCpuModel) {
  BeamCase c(device());
  auto want = beam_search(*c.ref, c.cpu_sources(), c.options);
  c.options.cuda_graph = true;
  SearchStats st;
  auto got = beam_search(*c.model, c.device_sources(), c.options, &st);
  EXPECT_TRUE(st.static_cache);
  EXPECT_TRUE(st.refused.empty()) << st.refused;
  EXPECT_EQ(st.captures, device().is_cuda() ? 1 : 0);
  EXPECT_EQ(st.replays > 0, device().is_cuda());
  expect_same_nbest(got, want);
}

}  // namespace
}  // namespace clinic
