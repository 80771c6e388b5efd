#include "framework/graph_capture.h"

#ifdef CLINIC_WITH_CUDA
#include <ATen/autocast_mode.h>
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

}  // namespace clinic
