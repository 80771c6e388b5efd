#include "framework/distributed/gloo_world.h"

#include <fmt/format.h>

#include "framework/errors.h"

#ifdef CLINIC_WITH_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace clinic {

#ifdef CLINIC_WITH_GLOO
namespace {

class GlooWorld : public World {
 public:
  GlooWorld(const DistEnv& env, std::chrono::milliseconds timeout, int64_t bucket_bytes)
      : env_(env), bucket_bytes_(bucket_bytes) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    opts->threads = 2;
    pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>(fmt::format("clinic/{}", env.restart), store),
        env.rank, env.world_size, opts);
  }

  int rank() const override { return env_.rank; }
  int size() const override { return env_.world_size; }
  std::string describe() const override {
    return fmt::format("world size {}, backend gloo (rank {}, rendezvous {}:{})", env_.world_size,
                       env_.rank, env_.master_addr, env_.master_port);
  }

  void attach(const std::vector<torch::Tensor>& params) override {
    params_ = params;
    bucket_of_.assign(params.size(), 0);
    offset_of_.assign(params.size(), 0);
    buckets_.clear();
    // Reverse order: the backward pass produces the last layers' gradients first.
    for (size_t k = params.size(); k-- > 0;) {
      const int64_t bytes = params[k].numel() * 4;
      if (buckets_.empty() || buckets_.back().bytes + bytes > bucket_bytes_) buckets_.emplace_back();
      Bucket& b = buckets_.back();
      bucket_of_[k] = buckets_.size() - 1;
      offset_of_[k] = b.numel;
      b.members.push_back(k);
      b.numel += params[k].numel();
      b.bytes += bytes;
    }
    for (auto& b : buckets_) b.flat = torch::zeros({b.numel}, torch::kFloat);
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
    std::vector<torch::Tensor> t = {totals};
    auto totals_work = pg_->allreduce(t);
    for (auto& b : buckets_) {
      b.work->wait();
      for (size_t k : b.members) {
        auto src = b.flat.narrow(0, offset_of_[k], params_[k].numel()).view(params_[k].sizes());
        auto& g = params_[k].mutable_grad();
        if (!g.defined()) g = torch::zeros_like(params_[k]);
        g.copy_(src);
      }
    }
    totals_work->wait();
  }

  void broadcast(torch::Tensor& t, int root) override {
    std::vector<torch::Tensor> v = {t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    pg_->broadcast(v, o)->wait();
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& t) override {
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int r = 0; r < env_.world_size; ++r) out[0].push_back(torch::empty_like(t));
    std::vector<torch::Tensor> in = {t.contiguous()};
    pg_->allgather(out, in)->wait();
    return out[0];
  }

  void barrier() override { pg_->barrier()->wait(); }

 private:
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    int64_t numel = 0, bytes = 0, pending = 0;
    std::vector<bool> filled;
    torch::Tensor flat;  // float32
    c10::intrusive_ptr<c10d::Work> work;
  };

  // A leaf's hook sees the gradient of this backward pass before it is
  // accumulated into .grad: the update's gradient is .grad + g.
  void on_gradient(size_t k, const torch::Tensor& g) {
    if (!armed_) return;
    Bucket& b = buckets_[bucket_of_[k]];
    size_t m = 0;
    while (b.members[m] != k) ++m;
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
  int64_t bucket_bytes_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_of_;
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace

bool gloo_available() { return true; }

std::unique_ptr<World> make_gloo_world(const DistEnv& env, std::chrono::milliseconds timeout,
                                       int64_t bucket_bytes) {
  try {
    return std::make_unique<GlooWorld>(env, timeout, bucket_bytes);
  } catch (const c10::Error& e) {
    throw DataError(fmt::format("rank {} of {}: c10d rendezvous at {}:{} failed: {}", env.rank,
                                env.world_size, env.master_addr, env.master_port,
                                e.what_without_backtrace()));
  }
}
#else
bool gloo_available() { return false; }

std::unique_ptr<World> make_gloo_world(const DistEnv& env, std::chrono::milliseconds,
                                       int64_t) {
  throw DataError(fmt::format(
      "world size {}: this clinic was built without c10d's Gloo backend (LibTorch without "
      "distributed support, or no Gloo headers: libgloo-dev on Debian)",
      env.world_size));
}
#endif

}  // namespace clinic
