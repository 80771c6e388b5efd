#include "framework/data/device_feed.h"

#ifdef CLINIC_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace clinic {

namespace {
class PlainCopier : public BatchCopier {
 public:
  explicit PlainCopier(torch::Device d) : device_(d) {}
  Batch start(const Batch& host) override {
    return host.src.device() == device_ ? host : host.to(device_);
  }
  void ready(Batch&) override {}

 private:
  torch::Device device_;
};

#ifdef CLINIC_WITH_CUDA
// The copy on a side stream: the update running on the ambient stream does
// not wait for it, and the next update waits only for its own batch (one
// event: the feed readies a batch before it starts the next copy). The
// tensors were allocated on the side stream; record_stream tells the caching
// allocator the ambient stream uses them, so their memory is not handed out
// again before that stream is done with them.
class CudaCopier : public BatchCopier {
 public:
  explicit CudaCopier(torch::Device d)
      : device_(d), side_(at::cuda::getStreamFromPool(false, d.index() < 0 ? 0 : d.index())) {}
  Batch start(const Batch& host) override {
    c10::cuda::CUDAStreamGuard on_side(side_);
    Batch b = host.to(device_);  // pinned by the stream's worker: asynchronous
    copied_.record(side_);
    return b;
  }
  void ready(Batch& b) override {
    at::cuda::CUDAStream ambient = at::cuda::getCurrentCUDAStream(side_.device_index());
    copied_.block(ambient);
    for (torch::Tensor* t : {&b.src, &b.tgt_in, &b.tgt_out})
      if (t->defined() && t->is_cuda()) t->record_stream(ambient);
  }

 private:
  torch::Device device_;
  at::cuda::CUDAStream side_;
  at::cuda::CUDAEvent copied_;
};
#endif
}  // namespace

std::unique_ptr<BatchCopier> make_batch_copier(torch::Device device) {
#ifdef CLINIC_WITH_CUDA
  if (device.is_cuda()) return std::make_unique<CudaCopier>(device);
#endif
  return std::make_unique<PlainCopier>(device);
}

DeviceFeed::DeviceFeed(BatchStream& stream, std::unique_ptr<BatchCopier> copier, int64_t world,
                       int64_t rank)
    : stream_(stream), copier_(std::move(copier)), world_(world), rank_(rank) {}

std::optional<FedBatch> DeviceFeed::fetch() {
  auto b = stream_.next();
  if (!b) return std::nullopt;
  FedBatch f;
  f.mine = rank_owns(index_, world_, rank_);
  index_ += 1;
  f.batch = f.mine ? copier_->start(*b) : std::move(*b);
  return f;
}

std::optional<FedBatch> DeviceFeed::next() {
  if (!primed_) {
    ahead_ = fetch();
    primed_ = true;
  }
  std::optional<FedBatch> now = std::move(ahead_);
  if (!now) return std::nullopt;
  if (now->mine) copier_->ready(now->batch);
  ahead_ = fetch();  // batch i + 1 on its way while update i runs
  return now;
}

}  // namespace clinic
