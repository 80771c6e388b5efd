#include "framework/train/graphed_update.h"

#include <ATen/autocast_mode.h>

#ifdef CLINIC_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace clinic {

#ifdef CLINIC_WITH_CUDA
namespace {

// One CUDA graph. Capture happens on a side stream (CUDA refuses to capture
// the legacy default stream) that first waits for the work already queued;
// the ambient stream then waits for the side stream. Replays go to the
// ambient stream. Each graph has its own memory pool: its activations stay
// reserved for its replays (a handful of shapes: data.shape_buckets).
// Dropout: the default CUDA generator is registered with every capture by
// ATen, and each replay advances its Philox offset, so every replay draws
// fresh masks. The autocast cache is off while capturing: a cached cast
// would be freed when the autocast region ends, under a graph that reads it.
class CudaGraphCapturer : public GraphCapturer {
 public:
  void capture(const std::function<void()>& body) override {
    c10::cuda::device_synchronize();
    at::cuda::CUDAStream ambient = at::cuda::getCurrentCUDAStream();
    at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
    at::cuda::CUDAEvent queued;
    queued.record(ambient);
    queued.block(side);
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    struct Restore {
      bool cache;
      ~Restore() { at::autocast::set_autocast_cache_enabled(cache); }
    } restore{cache};
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      graph_.capture_begin();
      try {
        body();
      } catch (...) {
        // End the capture so the stream is usable again; the graph is dropped.
        try {
          graph_.capture_end();
        } catch (...) {
        }
        throw;
      }
      graph_.capture_end();
    }
    at::cuda::CUDAEvent captured;
    captured.record(side);
    captured.block(ambient);
  }
  void replay() override { graph_.replay(); }

 private:
  at::cuda::CUDAGraph graph_;
};

}  // namespace

MakeCapturer cuda_graph_capturer() {
  return [] { return std::unique_ptr<GraphCapturer>(new CudaGraphCapturer()); };
}
#else
MakeCapturer cuda_graph_capturer() { return nullptr; }
#endif

UpdateGraphs::UpdateGraphs(Body body, std::function<torch::Tensor(int64_t)> make_tokens,
                           MakeCapturer make)
    : body_(std::move(body)), make_tokens_(std::move(make_tokens)), make_(std::move(make)) {}

void UpdateGraphs::run(const Batch& batch, uint64_t layout) {
  // The key: every shape the body sees (source and target lengths may differ).
  std::vector<int64_t> key;
  for (const torch::Tensor* t : {&batch.src, &batch.tgt_in, &batch.tgt_out})
    for (int64_t d : t->sizes()) key.push_back(d);
  auto [it, fresh] = entries_.try_emplace(key);
  Entry& e = it->second;
  torch::NoGradGuard ng;
  if (fresh) {
    e.statics.src = torch::empty_like(batch.src);
    e.statics.tgt_in = torch::empty_like(batch.tgt_in);
    e.statics.tgt_out = torch::empty_like(batch.tgt_out);
    e.tokens = make_tokens_(0);
    // The host's counts are not data a graph could see change: -1, so a
    // body that read them would be wrong at once, graph or not.
    e.statics.src_tokens = e.statics.tgt_tokens = -1;
  }
  // The data of this update into the buffers the body (and its graph) reads.
  e.statics.src.copy_(batch.src, /*non_blocking=*/true);
  e.statics.tgt_in.copy_(batch.tgt_in, true);
  e.statics.tgt_out.copy_(batch.tgt_out, true);
  e.tokens.fill_(static_cast<double>(batch.tgt_tokens));
  e.runs += 1;
  {
    at::AutoGradMode grad(true);
    const bool can_capture = make_ != nullptr && refused_.empty() && e.runs >= 2;
    if (can_capture && (!e.graph || e.layout != layout)) {
      std::unique_ptr<GraphCapturer> g = make_();
      try {
        g->capture([&] { body_(e.statics, e.tokens); });
        e.graph = std::move(g);
        e.layout = layout;
        captures_ += 1;
      } catch (const std::exception& ex) {
        // A capture runs nothing, so the update is still to be made: eagerly.
        std::string what = ex.what();
        refused_ = what.substr(0, what.find('\n'));
        for (auto& kv : entries_) kv.second.graph.reset();
      }
    }
    if (refused_.empty() && e.graph) {
      e.graph->replay();
      replays_ += 1;
    } else {
      body_(e.statics, e.tokens);
    }
  }
}

}  // namespace clinic
