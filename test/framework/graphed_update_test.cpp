// train.cuda_graph (framework/train/graphed_update.h) on the CPU: no CUDA
// graph runs here, so the capture backend is a stand-in that does what a
// capture does to the protocol: capture() records the body and runs
// nothing, replay() runs the recorded body again. What that checks: the
// warm-up / capture / replay sequence makes every update exactly once, the
// body reads its batch and token count only from the static buffers (the
// host's counts there are -1), and an update trained through it is the
// deferred trainer's update.
#include <fstream>
#include <stdexcept>

#include "framework/optim/multi_tensor.h"
#include "framework/train/graphed_update.h"
#include "framework/train/trainer.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

struct Recorder : GraphCapturer {
  std::function<void()> body;
  int* replays;
  explicit Recorder(int* r) : replays(r) {}
  void capture(const std::function<void()>& b) override { body = b; }
  void replay() override {
    ++*replays;
    body();
  }
};

struct Refuser : GraphCapturer {
  void capture(const std::function<void()>&) override {
    throw std::runtime_error("operation not permitted when stream is capturing\nmore");
  }
  void replay() override { throw std::logic_error("never captured"); }
};

// write_copy_corpus with lengths 2 to 29, so that data.shape_buckets=2
// gives two shapes (its own lengths, 2 to 7, round to one).
void write_long_copy_corpus(const std::string& dir) {
  test::write_copy_corpus(dir, 2, 40);
  std::ofstream s(dir + "/train.src"), t(dir + "/train.tgt");
  uint64_t x = 11;
  auto next = [&] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % 1000000);
  };
  for (int i = 0; i < 400; ++i) {
    std::string line;
    for (int j = 0, len = 2 + next() % 28; j < len; ++j)
      line += (j ? " w" : "w") + std::to_string(next() % 12);
    s << line << "\n";
    t << line << "\n";
  }
}

RunConfig graph_config(const TempDir& d, const std::vector<std::string>& extra) {
  write_long_copy_corpus(d.file("corpus"));
  std::vector<std::string> o = {"model.dropout=0", "train.clip_norm=0.3", "diag.interval=0",
                                "train.host_reads=log_interval", "data.shape_buckets=2",
                                "optim.name=radam"};
  o.insert(o.end(), extra.begin(), extra.end());
  return parse_recipe_text(test::copy_recipe(d.file("corpus"), "admin"), "copy.yaml", o);
}

// Rows of two lengths: the copy corpus's sentences sorted by length, so
// the two bucket shapes both occur, in an irregular order.
std::vector<std::vector<int64_t>> graph_rows(const ParallelCorpus& c, int updates) {
  std::vector<int64_t> order(c.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return c.src_len(a) < c.src_len(b); });
  std::vector<std::vector<int64_t>> rows;
  for (int u = 0; u < updates; ++u) {
    const bool long_one = (u * 7) % 3 == 0;
    const size_t base = long_one ? order.size() - 40 : 0;
    rows.push_back({order[base + u], order[base + u + 1], order[base + u + 2]});
  }
  return rows;
}

TEST(UpdateGraphs, EveryUpdateOnceThroughWarmUpCaptureAndReplay) {
  TempDir d;
  Trainer deferred(graph_config(d, {}), d.file("deferred"));
  Trainer eager(graph_config(d, {"train.cuda_graph=true"}), d.file("eager"));
  Trainer graphed(graph_config(d, {"train.cuda_graph=true"}), d.file("graphed"));
  int replays = 0;
  graphed.set_graph_capturer([&] { return std::make_unique<Recorder>(&replays); });
  deferred.setup();
  eager.setup();
  graphed.setup();
  ASSERT_EQ(deferred.update_graphs(), nullptr);
  ASSERT_NE(eager.update_graphs(), nullptr);
  ASSERT_NE(graphed.update_graphs(), nullptr);
  const int n = 14;
  std::map<std::vector<int64_t>, int> runs;
  for (const auto& r : graph_rows(deferred.train_data(), n)) {
    Batch b = deferred.train_data().make_batch(r);
    runs[{b.src.size(0), b.src.size(1)}] += 1;
    auto sd = deferred.train_update({b});
    auto se = eager.train_update({b});
    auto sg = graphed.train_update({b});
    EXPECT_TRUE(sg.deferred && se.deferred && sd.deferred);
    EXPECT_EQ(sg.tokens, sd.tokens);
  }
  ASSERT_EQ(runs.size(), 2u) << "both bucket shapes must occur";
  const auto* g = graphed.update_graphs();
  EXPECT_EQ(g->shapes(), 2u);
  EXPECT_EQ(g->captures(), 2);
  EXPECT_EQ(g->replays(), n - 2);  // the first update of each shape is the warm-up
  EXPECT_EQ(replays, n - 2);
  EXPECT_TRUE(g->refused().empty());
  EXPECT_EQ(eager.update_graphs()->captures(), 0);
  EXPECT_EQ(graphed.host_reads().count(), 0);
  auto pd = deferred.model().parameters(), pe = eager.model().parameters(),
       pg = graphed.model().parameters();
  Trainer fresh(graph_config(d, {}), d.file("fresh"));
  fresh.setup();
  auto p0 = fresh.model().parameters();
  double moved = 0, off = 0;
  for (size_t i = 0; i < pd.size(); ++i) {
    // The same kernels on the CPU, replayed or not: bit for bit.
    ASSERT_TRUE(torch::equal(pg[i], pe[i])) << "parameter " << i;
    moved = std::max(moved, (pd[i] - p0[i]).abs().max().item<double>());
    off = std::max(off, (pg[i] - pd[i]).abs().max().item<double>());
  }
  // Device coefficients against the host's (CapturableStep): rounding,
  // which training amplifies (1.7e-3 of the way the weights moved in 14
  // updates, measured). The first update lost, i.e. every step count one
  // behind (a bug this test found), is 0.5 of it.
  EXPECT_GT(moved, 2e-3) << "the updates must move the weights";
  EXPECT_LT(off, 1e-2 * moved);
  graphed.save_checkpoint("interval");
  deferred.save_checkpoint("interval");
  EXPECT_EQ(graphed.host_reads().count(), 1);
  EXPECT_EQ(graphed.state().update, n);
  EXPECT_EQ(graphed.state().tokens, deferred.state().tokens);
  EXPECT_EQ(graphed.state().skipped, 0);
}

// A capture that fails (a model reading the device on the host, say) runs
// that update eagerly, says so once, and every later update is eager: the
// run is the eager-body run, bit for bit, with no update lost or doubled.
TEST(UpdateGraphs, AFailedCaptureGoesOnEagerlyWithOneLine) {
  TempDir d;
  Trainer eager(graph_config(d, {"train.cuda_graph=true"}), d.file("eager"));
  Trainer refused(graph_config(d, {"train.cuda_graph=true"}), d.file("refused"));
  refused.set_graph_capturer([] { return std::make_unique<Refuser>(); });
  eager.setup();
  refused.setup();
  const int n = 8;
  for (const auto& r : graph_rows(eager.train_data(), n)) {
    Batch b = eager.train_data().make_batch(r);
    eager.train_update({b});
    refused.train_update({b});
  }
  const auto* g = refused.update_graphs();
  EXPECT_EQ(g->refused(), "operation not permitted when stream is capturing");
  EXPECT_EQ(g->captures(), 0);
  EXPECT_EQ(g->replays(), 0);
  auto pe = eager.model().parameters(), pr = refused.model().parameters();
  for (size_t i = 0; i < pe.size(); ++i) ASSERT_TRUE(torch::equal(pe[i], pr[i])) << i;
  refused.save_checkpoint("interval");
  EXPECT_EQ(refused.state().update, n);
  const std::string log = read_file(d.file("refused/train.log"));
  const std::string line = "train.cuda_graph: capture failed";
  ASSERT_NE(log.find(line), std::string::npos);
  EXPECT_EQ(log.find(line, log.find(line) + 1), std::string::npos) << "said once";
}

TEST(UpdateGraphs, FallsBackWithOneLineWhereUpdatesCannotBeCaptured) {
  for (auto [setting, why] : std::vector<std::pair<std::string, std::string>>{
           {"train.host_reads=every_update", "decided on the host"},
           {"data.shape_buckets=0", "without data.shape_buckets"},
           {"train.update_freq=2", "train.update_freq > 1"}}) {
    TempDir d;
    Trainer t(graph_config(d, {"train.cuda_graph=true", "train.max_updates=2", setting}),
              d.file("run"));
    t.fit();
    EXPECT_EQ(t.update_graphs(), nullptr) << setting;
    const std::string log = read_file(d.file("run/train.log"));
    EXPECT_NE(log.find("train.cuda_graph: "), std::string::npos) << setting;
    EXPECT_NE(log.find(why), std::string::npos) << setting;
    EXPECT_NE(log.find("eager updates"), std::string::npos) << setting;
  }
}

// The protocol alone: the body sees the same buffers every update of a
// shape, filled with this update's data; a layout change recaptures.
TEST(UpdateGraphs, BuffersCarryEachUpdatesDataAndALayoutChangeRecaptures) {
  torch::Tensor acc = torch::zeros({}, torch::kDouble);
  std::vector<const void*> seen;
  UpdateGraphs graphs(
      [&](const Batch& b, const torch::Tensor& tokens) {
        EXPECT_EQ(b.tgt_tokens, -1);
        seen.push_back(b.src.data_ptr());
        acc.add_(b.src.sum().to(torch::kDouble) * 1000 + tokens);
      },
      [](int64_t n) { return torch::full({}, static_cast<double>(n), torch::kDouble); },
      [] {
        static int unused = 0;
        return std::make_unique<Recorder>(&unused);
      });
  double expect = 0;
  for (int u = 0; u < 6; ++u) {
    Batch b;
    b.src = torch::full({2, 3}, u + 1, torch::kLong);
    b.tgt_in = b.tgt_out = torch::zeros({2, 4}, torch::kLong);
    b.tgt_tokens = 10 + u;
    graphs.run(b, u < 4 ? 1 : 2);
    expect += 6.0 * (u + 1) * 1000 + (10 + u);
    EXPECT_DOUBLE_EQ(acc.item<double>(), expect) << "update " << u;
  }
  EXPECT_EQ(graphs.captures(), 2);  // update 1 (second of the shape), update 4 (new layout)
  EXPECT_EQ(graphs.replays(), 5);
  for (const void* p : seen) EXPECT_EQ(p, seen.front());
}

}  // namespace
}  // namespace clinic
