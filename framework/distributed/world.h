#pragma once
// The processes of one data-parallel training job, as the trainer sees them
// (issue 23). The trainer calls a World at fixed points of an update and of
// a checkpoint; this base class is one process, where every call is a no-op,
// so the single-process path has no `if (rank)` and no cost.
#include <fmt/format.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "framework/errors.h"

namespace clinic {

/// The GPU of one rank of a data-parallel job: cuda:LOCAL_RANK, one GPU per
/// rank (torchrun's convention). `setting` names what asked for a GPU, for the
/// error when this machine has fewer GPUs than ranks.
inline torch::Device rank_gpu(int rank, int local_rank, const std::string& setting) {
  const auto n = static_cast<int>(torch::cuda::device_count());
  if (local_rank >= n)
    throw ConfigError(fmt::format("{}: rank {} has LOCAL_RANK {} but {} CUDA device(s) are "
                                  "visible (one GPU per rank)",
                                  setting, rank, local_rank, n));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

class World {
 public:
  virtual ~World() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  /// This process's index on its machine (torchrun's LOCAL_RANK): a CUDA job
  /// trains on device cuda:local_rank().
  virtual int local_rank() const { return 0; }
  /// The one process that writes logs, metrics and checkpoints.
  bool is_writer() const { return rank() == 0; }
  /// "world size 2, backend gloo" for the log.
  virtual std::string describe() const { return "world size 1"; }

  /// The trainable parameters whose gradients are summed over ranks (called
  /// once, after the optimizer is built).
  virtual void attach(const std::vector<torch::Tensor>& /*params*/) {}
  /// Before one micro-batch's backward: with `last` the backward's gradient
  /// hooks start summing buckets over ranks as they become ready.
  virtual void before_backward(bool /*last*/) {}
  /// After the update's backward passes: every parameter's .grad holds the
  /// sum over ranks, and `totals` (float64: loss, nll, tokens, ...) is summed
  /// in place.
  virtual void finish_gradients(torch::Tensor& /*totals*/) {}
  /// Rank `root`'s `t` on every rank (in place).
  virtual void broadcast(torch::Tensor& /*t*/, int /*root*/ = 0) {}
  /// Every rank's `t` (same shape and dtype on all ranks), by rank.
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& t) { return {t}; }
  virtual void barrier() {}
};

}  // namespace clinic
