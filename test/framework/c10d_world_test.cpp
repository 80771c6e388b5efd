// The c10d World itself (framework/distributed/c10d_world.cpp), below the
// trainer: bucketed gradient sums, totals, broadcast, all_gather, barrier.
// Gloo: two ranks as two threads of this process (one TCPStore, two process
// groups). NCCL: one rank on the GPU (NCCL refuses two ranks on one device,
// and the GPU machine has one), which still runs every staging path: device
// buckets, CPU tensors through the device, the host-blocking barrier.
// The oracle is the gradient written out by hand (loss linear in each
// parameter), summed over ranks in plain arithmetic.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <thread>

#include "framework/distributed/c10d_world.h"

namespace clinic {
namespace {

// Parameters of several shapes; with 64-byte buckets most get a bucket of
// their own and some share one, so both the hook-launched and the
// finish-launched paths run.
std::vector<torch::Tensor> make_params(torch::Device dev) {
  std::vector<torch::Tensor> ps;
  const std::vector<std::vector<int64_t>> shapes = {{3, 4}, {5}, {2}, {7, 2}, {1}, {6}};
  for (size_t i = 0; i < shapes.size(); ++i)
    ps.push_back(torch::linspace(0.0, 1.0, torch::empty(shapes[i]).numel())
                     .reshape(shapes[i])
                     .to(dev)
                     .set_requires_grad(true));
  return ps;
}

// The coefficient rank r's micro-batch b multiplies parameter k with:
// loss = sum_k c(r, b, k) * sum(p_k * w_k), so d loss / d p_k = c * w_k.
double coef(int r, int b, size_t k) { return (r + 1) * 0.5 + b * 0.25 + static_cast<double>(k); }
torch::Tensor weight(const torch::Tensor& p, size_t k) {
  return torch::linspace(-1.0, 1.0, p.numel()).reshape(p.sizes()).to(p.device()) *
         static_cast<double>(k + 1);
}

// One update of rank `r`: two micro-batches (the hook adds the second to the
// first's accumulated gradient); rank 1 never touches parameter 4, whose
// gradient then comes from rank 0 alone.
void run_update(World& w, std::vector<torch::Tensor>& ps, int r, torch::Tensor& totals) {
  for (int b = 0; b < 2; ++b) {
    w.before_backward(b == 1);
    torch::Tensor loss = torch::zeros({}, ps[0].options().requires_grad(false));
    for (size_t k = 0; k < ps.size(); ++k) {
      if (r == 1 && k == 4) continue;
      loss = loss + coef(r, b, k) * (ps[k] * weight(ps[k], k)).sum();
    }
    loss.backward();
  }
  w.finish_gradients(totals);
}

torch::Tensor expected_grad(const torch::Tensor& p, size_t k, int world) {
  double c = 0;
  for (int r = 0; r < world; ++r)
    for (int b = 0; b < 2; ++b)
      if (!(r == 1 && k == 4)) c += coef(r, b, k);
  return (c * weight(p, k)).cpu();
}

// What each rank saw, for the main thread to check.
struct RankResult {
  std::vector<torch::Tensor> grads;
  torch::Tensor totals, broadcast, gathered0, gathered1;
  std::string error;
};

void rank_body(const std::string& backend, torch::Device dev, int r, int world, int port,
               RankResult& out) {
  try {
    DistEnv env;
    env.rank = r;
    env.world_size = world;
    env.local_rank = r;
    env.master_port = port;
    auto w = make_c10d_world(env, backend, std::chrono::seconds(60), /*bucket_bytes=*/64);
    auto ps = make_params(dev);
    w->attach(ps);
    torch::Tensor totals = torch::tensor({1.5 * (r + 1), 10.0, 100.0 + r, 0.0}, torch::kDouble);
    run_update(*w, ps, r, totals);
    for (auto& p : ps) out.grads.push_back(p.grad().cpu());
    out.totals = totals;
    // Root 1 when there is one: the value must come from the other rank.
    torch::Tensor t = torch::full({3}, static_cast<float>(r + 7));
    w->broadcast(t, world - 1);
    out.broadcast = t;
    auto g = w->all_gather(torch::full({5}, static_cast<uint8_t>(r + 40), torch::kUInt8));
    out.gathered0 = g.at(0);
    if (g.size() > 1) out.gathered1 = g.at(1);
    w->barrier();
  } catch (const std::exception& e) {
    out.error = e.what();
  }
}

void check(const std::vector<RankResult>& res, torch::Device dev) {
  const int world = static_cast<int>(res.size());
  auto ps = make_params(dev);
  for (int r = 0; r < world; ++r) {
    const RankResult& x = res[r];
    ASSERT_TRUE(x.error.empty()) << "rank " << r << ": " << x.error;
    ASSERT_EQ(x.grads.size(), ps.size());
    for (size_t k = 0; k < ps.size(); ++k)
      EXPECT_TRUE(torch::allclose(x.grads[k], expected_grad(ps[k], k, world), 1e-5, 1e-6))
          << "rank " << r << " parameter " << k << ":\n" << x.grads[k] << "\nexpected\n"
          << expected_grad(ps[k], k, world);
    double loss = 0, rank_sum = 0;
    for (int q = 0; q < world; ++q) loss += 1.5 * (q + 1), rank_sum += 100.0 + q;
    EXPECT_TRUE(x.totals.is_cpu());
    EXPECT_EQ(x.totals.scalar_type(), torch::kDouble);
    EXPECT_DOUBLE_EQ(x.totals[0].item<double>(), loss);
    EXPECT_DOUBLE_EQ(x.totals[1].item<double>(), 10.0 * world);
    EXPECT_DOUBLE_EQ(x.totals[2].item<double>(), rank_sum);
    EXPECT_TRUE(x.broadcast.is_cpu());
    EXPECT_TRUE(torch::equal(x.broadcast, torch::full({3}, static_cast<float>(world - 1 + 7))));
    EXPECT_TRUE(torch::equal(x.gathered0, torch::full({5}, 40, torch::kUInt8)));
    if (world > 1) {
      EXPECT_TRUE(torch::equal(x.gathered1, torch::full({5}, 41, torch::kUInt8)));
    }
  }
}

TEST(C10dWorld, TwoGlooRanksSumBucketedGradientsAndTotals) {
  if (!backend_available("gloo")) GTEST_SKIP() << "this LibTorch build has no c10d Gloo headers";
  const int port = free_local_port();
  std::vector<RankResult> res(2);
  std::thread other([&] { rank_body("gloo", torch::kCPU, 1, 2, port, res[1]); });
  rank_body("gloo", torch::kCPU, 0, 2, port, res[0]);
  other.join();
  check(res, torch::kCPU);
}

TEST(C10dWorld, NcclRankSumsOnTheGpuAndStagesHostTensors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here (scripts/gpu-check.sh)";
  if (!backend_available("nccl"))
    GTEST_SKIP() << "this build has no c10d NCCL (needs a CUDA LibTorch 2.x and nccl.h)";
  std::vector<RankResult> res(1);
  rank_body("nccl", torch::Device(torch::kCUDA, 0), 0, 1, free_local_port(), res[0]);
  check(res, torch::Device(torch::kCUDA, 0));
}

TEST(C10dWorld, BackendChoiceAndMissingBackendsAreClear) {
  EXPECT_EQ(resolve_backend("auto", "cpu"), "gloo");
  EXPECT_EQ(resolve_backend("auto", "cuda"), "nccl");
  EXPECT_EQ(resolve_backend("gloo", "cuda"), "gloo");
  EXPECT_EQ(resolve_backend("auto", "auto"), torch::cuda::is_available() ? "nccl" : "gloo");
  DistEnv env;
  env.world_size = 2;
  try {
    make_c10d_world(env, "mpi", std::chrono::seconds(1));
    FAIL() << "mpi accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("expected gloo or nccl"), std::string::npos) << e.what();
  }
  for (const std::string b : {"gloo", "nccl"}) {
    if (backend_available(b)) continue;
    try {
      make_c10d_world(env, b, std::chrono::seconds(1));
      FAIL() << b << " accepted by a build without it";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("built without c10d's " + b), std::string::npos)
          << e.what();
    }
  }
}

// One GPU per rank: cuda:LOCAL_RANK, and a LOCAL_RANK past the visible GPUs
// is one error naming the setting (train.device and NCCL share this check).
TEST(C10dWorld, RankGpuIsLocalRankAndRefusesMissingGpus) {
  const int n = static_cast<int>(torch::cuda::device_count());
  for (int local : {n, n + 1}) {
    try {
      rank_gpu(3, local, "train.device = cuda");
      FAIL() << "LOCAL_RANK " << local << " accepted with " << n << " GPU(s)";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()),
                fmt::format("train.device = cuda: rank 3 has LOCAL_RANK {} but {} CUDA device(s) "
                            "are visible (one GPU per rank)",
                            local, n));
    }
  }
  for (int local = 0; local < n; ++local) EXPECT_EQ(rank_gpu(0, local, "x").index(), local);
}

}  // namespace
}  // namespace clinic
