#pragma once
// train.cuda_graph (issue 33 item 3): one captured update per batch shape.
//
// With train.host_reads: log_interval an update is already kernels only
// (device_step.h): forward, backward, unscale and norm, the device's skip /
// clip / loss-scale decisions, and the optimizer's launch() with the lr and
// step counts in device tensors (CapturableStep). What still varies between
// two updates of the same shape is data: the batch and its token count. So
// each shape (data.shape_buckets pads every batch to one of a few) gets
// static buffers that the host fills before the update, and a graph of the
// body that reads them:
//   1st update of a shape   the body runs eagerly on the buffers (warm-up:
//                           lazy initialisations, gradients allocated);
//   2nd                     captured (a capture runs nothing), then replayed;
//   later                   the buffers filled, the graph replayed: one launch.
// A graph is captured again when the optimizer's layout changed (its state
// tensors replaced by a load). Should a capture fail (a model that reads the
// device on the host, say), the update runs eagerly, one log line says why,
// and every later update is eager.
//
// The capture backend is a seam (graph_capture.h): CUDA's graph, or none
// (the body runs eagerly on the static buffers, what the CPU does), or a
// test's stand-in that records the body and replays it, which checks the
// protocol on the CPU.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/graph_capture.h"
#include "framework/model.h"

namespace clinic {

class UpdateGraphs {
 public:
  /// The update: kernels only, reading the batch and its token count (a
  /// 0-dim double made by `make_tokens`) from the buffers it is handed,
  /// which are the same tensors every time for one shape.
  using Body = std::function<void(const Batch& statics, const torch::Tensor& tokens)>;
  /// `make` null: no capture, the body runs eagerly on the static buffers.
  UpdateGraphs(Body body, std::function<torch::Tensor(int64_t)> make_tokens, MakeCapturer make);
  /// One update of `batch` (already on the device). `layout`: the
  /// optimizer's CapturableStep::layout() after its stage().
  void run(const Batch& batch, uint64_t layout);
  /// Why capture stopped (empty while it works).
  const std::string& refused() const { return refused_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  size_t shapes() const { return entries_.size(); }

 private:
  struct Entry {
    Batch statics;
    torch::Tensor tokens;
    std::unique_ptr<GraphCapturer> graph;
    uint64_t layout = 0;
    int64_t runs = 0;
  };
  Body body_;
  std::function<torch::Tensor(int64_t)> make_tokens_;
  MakeCapturer make_;
  std::map<std::vector<int64_t>, Entry> entries_;
  std::string refused_;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace clinic
