#include "framework/distributed/c10d_world.h"

#include <fmt/format.h>

#include "framework/errors.h"

#if defined(CLINIC_WITH_GLOO) || defined(CLINIC_WITH_NCCL)
#define CLINIC_WITH_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef CLINIC_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef CLINIC_WITH_NCCL
// ProcessGroupNCCL.hpp is empty unless the build says NCCL is there.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace clinic {

bool backend_available(const std::string& backend) {
#ifdef CLINIC_WITH_GLOO
  if (backend == "gloo") return true;
#endif
#ifdef CLINIC_WITH_NCCL
  if (backend == "nccl") return true;
#endif
  (void)backend;
  return false;
}

std::string resolve_backend(const std::string& configured, const std::string& train_device) {
  if (configured != "auto") return configured;
  const bool cuda =
      train_device == "cuda" || (train_device == "auto" && torch::cuda::is_available());
  return cuda ? "nccl" : "gloo";
}

#ifdef CLINIC_WITH_C10D
namespace {

// c10d's process groups became "backends" behind a dispatching ProcessGroup
// in LibTorch 2.x; both expose the same collectives.
#if TORCH_VERSION_MAJOR >= 2
using CommGroup = c10d::Backend;
#else
using CommGroup = c10d::ProcessGroup;
#endif

c10::intrusive_ptr<CommGroup> make_group(const std::string& backend,
                                         const c10::intrusive_ptr<c10d::Store>& store,
                                         const DistEnv& env, std::chrono::milliseconds timeout) {
#ifdef CLINIC_WITH_GLOO
  if (backend == "gloo") {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    opts->threads = 2;
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
  }
#endif
#ifdef CLINIC_WITH_NCCL
  if (backend == "nccl") {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
  }
#endif
  throw ConfigError("train.dist_backend " + backend + ": not in this build");
}

class C10dWorld : public World {
 public:
  C10dWorld(const DistEnv& env, const std::string& backend, std::chrono::milliseconds timeout,
            int64_t bucket_bytes)
      : env_(env), backend_(backend), bucket_bytes_(bucket_bytes) {
    if (backend == "nccl") {
#ifdef CLINIC_WITH_NCCL
      comm_device_ = rank_gpu(env.rank, env.local_rank, "train.dist_backend nccl");
      c10::cuda::set_device(comm_device_.index());
#endif
    }
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    pg_ = make_group(
        backend, c10::make_intrusive<c10d::PrefixStore>(fmt::format("clinic/{}", env.restart), store),
        env, timeout);
  }

  int rank() const override { return env_.rank; }
  int size() const override { return env_.world_size; }
  int local_rank() const override { return env_.local_rank; }
  std::string describe() const override {
    return fmt::format("world size {}, backend {} (rank {}, local rank {}, rendezvous {}:{})",
                       env_.world_size, backend_, env_.rank, env_.local_rank, env_.master_addr,
                       env_.master_port);
  }

  void attach(const std::vector<torch::Tensor>& params) override {
    params_ = params;
    bucket_of_.assign(params.size(), 0);
    member_of_.assign(params.size(), 0);
    offset_of_.assign(params.size(), 0);
    buckets_.clear();
    // Reverse order: the backward pass produces the last layers' gradients first.
    for (size_t k = params.size(); k-- > 0;) {
      const int64_t bytes = params[k].numel() * 4;
      if (buckets_.empty() || buckets_.back().bytes + bytes > bucket_bytes_) buckets_.emplace_back();
      Bucket& b = buckets_.back();
      bucket_of_[k] = buckets_.size() - 1;
      member_of_[k] = b.members.size();
      offset_of_[k] = b.numel;
      b.members.push_back(k);
      b.numel += params[k].numel();
      b.bytes += bytes;
    }
    // Gloo sums host buffers, NCCL device buffers: a CUDA job on Gloo stages
    // its gradients through the host.
    for (auto& b : buckets_)
      b.flat = torch::zeros({b.numel}, torch::TensorOptions(torch::kFloat).device(comm_device_));
    for (size_t k = 0; k < params.size(); ++k)
      params_[k].register_hook([this, k](const torch::Tensor& g) { on_gradient(k, g); });
  }

  void before_backward(bool last) override {
    armed_ = last;
    if (!last) return;
    for (auto& b : buckets_) {
      b.pending = static_cast<int64_t>(b.members.size());
      b.filled.assign(b.members.size(), false);
      b.work.reset();
    }
    next_launch_ = 0;
  }

  void finish_gradients(torch::Tensor& totals) override {
    armed_ = false;
    // Parameters this rank's batches did not reach (or no batch at all):
    // their current gradient, zero when undefined, joins the sum.
    for (size_t bi = 0; bi < buckets_.size(); ++bi) {
      Bucket& b = buckets_[bi];
      for (size_t m = 0; m < b.members.size(); ++m)
        if (!b.filled[m]) {
          size_t k = b.members[m];
          auto dst = b.flat.narrow(0, offset_of_[k], params_[k].numel());
          const auto& g = params_[k].grad();
          if (g.defined()) dst.copy_(g.reshape(-1)); else dst.zero_();
          b.filled[m] = true;
          --b.pending;
        }
    }
    launch_ready();
    std::vector<torch::Tensor> t = {staged(totals)};
    auto totals_work = pg_->allreduce(t);
    for (auto& b : buckets_) {
      b.work->wait();  // NCCL: the current stream waits; the host does not
      for (size_t k : b.members) {
        auto src = b.flat.narrow(0, offset_of_[k], params_[k].numel()).view(params_[k].sizes());
        auto& g = params_[k].mutable_grad();
        if (!g.defined()) g = torch::zeros_like(params_[k]);
        g.copy_(src);
      }
    }
    totals_work->wait();
    if (!t[0].is_same(totals)) totals.copy_(t[0]);  // device -> host: synchronises
  }

  void broadcast(torch::Tensor& t, int root) override {
    std::vector<torch::Tensor> v = {staged(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    pg_->broadcast(v, o)->wait();
    if (!v[0].is_same(t)) t.copy_(v[0]);
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& t) override {
    std::vector<torch::Tensor> in = {staged(t.contiguous())};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int r = 0; r < env_.world_size; ++r) out[0].push_back(torch::empty_like(in[0]));
    pg_->allgather(out, in)->wait();
    for (auto& x : out[0]) x = x.to(t.device());  // synchronises when staged
    return out[0];
  }

  // A one-element sum read back on the host: every backend blocks the host
  // until all ranks arrived (NCCL's own barrier guesses a device per rank).
  void barrier() override {
    std::vector<torch::Tensor> v = {torch::ones({1}, torch::TensorOptions(torch::kFloat).device(comm_device_))};
    pg_->allreduce(v)->wait();
    (void)v[0].item<float>();
  }

 private:
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    int64_t numel = 0, bytes = 0, pending = 0;
    std::vector<bool> filled;
    torch::Tensor flat;  // float32, on comm_device_
    c10::intrusive_ptr<c10d::Work> work;
  };

  // `t` on the device the backend communicates from (a copy when elsewhere).
  torch::Tensor staged(const torch::Tensor& t) const {
    return t.device() == comm_device_ ? t : t.to(comm_device_);
  }

  // A leaf's hook sees the gradient of this backward pass before it is
  // accumulated into .grad: the update's gradient is .grad + g.
  void on_gradient(size_t k, const torch::Tensor& g) {
    if (!armed_) return;
    Bucket& b = buckets_[bucket_of_[k]];
    const size_t m = member_of_[k];
    if (b.filled[m]) return;
    torch::NoGradGuard ng;
    auto dst = b.flat.narrow(0, offset_of_[k], params_[k].numel());
    const auto& acc = params_[k].grad();
    if (acc.defined()) dst.copy_((acc + g).reshape(-1));
    else dst.copy_(g.reshape(-1));
    b.filled[m] = true;
    if (--b.pending == 0) launch_ready();
  }

  // Buckets go out in index order on every rank (collectives match by order).
  void launch_ready() {
    while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
      std::vector<torch::Tensor> t = {buckets_[next_launch_].flat};
      buckets_[next_launch_].work = pg_->allreduce(t);
      ++next_launch_;
    }
  }

  DistEnv env_;
  std::string backend_;
  int64_t bucket_bytes_;
  torch::Device comm_device_ = torch::kCPU;
  c10::intrusive_ptr<CommGroup> pg_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, member_of_;
  std::vector<int64_t> offset_of_;
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace
#endif  // CLINIC_WITH_C10D

std::unique_ptr<World> make_c10d_world(const DistEnv& env, const std::string& backend,
                                       std::chrono::milliseconds timeout, int64_t bucket_bytes) {
  if (backend != "gloo" && backend != "nccl")
    throw ConfigError("train.dist_backend " + backend + ": expected gloo or nccl");
  if (!backend_available(backend))
    throw ConfigError(fmt::format(
        "world size {}: this clinic was built without c10d's {} backend ({})", env.world_size,
        backend,
        backend == "gloo"
            ? "LibTorch without distributed support, or no Gloo headers: libgloo-dev on Debian; "
              "the PyPI wheels ship none"
            : "NCCL needs a CUDA LibTorch 2.x and nccl.h; on CPU use train.dist_backend gloo"));
#ifdef CLINIC_WITH_C10D
  try {
    return std::make_unique<C10dWorld>(env, backend, timeout, bucket_bytes);
  } catch (const c10::Error& e) {
    throw DataError(fmt::format("rank {} of {}: c10d {} rendezvous at {}:{} failed: {}", env.rank,
                                env.world_size, backend, env.master_addr, env.master_port,
                                e.what_without_backtrace()));
  }
#else
  (void)timeout;
  (void)bucket_bytes;
  return nullptr;  // unreachable: backend_available() said no
#endif
}

}  // namespace clinic
