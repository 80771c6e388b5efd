#pragma once
// Capturing a run of kernels once and replaying it (CUDA graphs, issue 33
// item 3): the seam that train.cuda_graph (train/graphed_update.h) and
// eval.cuda_graph (beam search's decoder step, eval/search.h) share. A
// test's stand-in records the body and replays it, which checks a caller's
// protocol on the CPU.
#include <functional>
#include <memory>

namespace clinic {

class GraphCapturer {
 public:
  virtual ~GraphCapturer() = default;
  /// Record `body`'s kernels without running them (throws if it cannot).
  virtual void capture(const std::function<void()>& body) = 0;
  /// Run what was recorded.
  virtual void replay() = 0;
};
using MakeCapturer = std::function<std::unique_ptr<GraphCapturer>()>;

/// CUDA's graph capture (at::cuda::CUDAGraph on a side stream, the autocast
/// cache off while capturing); null where clinic was built without CUDA.
MakeCapturer cuda_graph_capturer();

}  // namespace clinic
