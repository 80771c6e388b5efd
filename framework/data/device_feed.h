#pragma once
// Batches to the training device one update ahead (issue 33 item 1).
//
// BatchStream's worker thread makes each batch on the host (and pins it when
// the device is a GPU: BatchStream's `pin`); the feed hands the trainer batch
// i on the device after starting the copy of batch i + 1, so that copy runs
// while update i does. On CUDA the copy goes to a side stream, non_blocking
// from page-locked memory, and the update's stream waits for its event
// before reading it; on the CPU "copying" is handing the batch over.
//
// Data parallel: only this rank's batches (every world-th from its rank) are
// copied; the others are counted and dropped, as the trainer's update loop
// takes every world-th batch of an update.
#include <cstdint>
#include <memory>
#include <optional>

#include <torch/torch.h>

#include "framework/data/batcher.h"

namespace clinic {

/// How a batch reaches the device: a seam, so the feed's order is tested on
/// the CPU with a recording copier.
class BatchCopier {
 public:
  virtual ~BatchCopier() = default;
  /// Start moving `host` to the device; the returned batch's tensors hold
  /// it once ready() has been called on it.
  virtual Batch start(const Batch& host) = 0;
  /// Make the stream that runs the update wait for `b`'s copy.
  virtual void ready(Batch& b) = 0;
};

/// A side-stream copier for a CUDA device (built with CLINIC_WITH_CUDA), a
/// plain `to(device)` one otherwise.
std::unique_ptr<BatchCopier> make_batch_copier(torch::Device device);

/// Data parallel's one ownership rule: rank `rank` of `world` trains on the
/// k-th batch of a plan (or of an update: it takes a multiple of world) when
/// k % world == rank. The feed and the trainer's fixed-batch path both ask.
inline bool rank_owns(int64_t k, int64_t world, int64_t rank) { return k % world == rank; }

struct FedBatch {
  Batch batch;       // on the device when mine, else the host batch (not to be used)
  bool mine = true;  // this rank trains on it
};

class DeviceFeed {
 public:
  /// Rank `rank` of `world` trains on the k-th batch the stream gives when
  /// k % world == rank (k from 0: an update takes a multiple of world).
  DeviceFeed(BatchStream& stream, std::unique_ptr<BatchCopier> copier, int64_t world = 1,
             int64_t rank = 0);
  /// The next batch of the plan, or nullopt at its end.
  std::optional<FedBatch> next();

 private:
  std::optional<FedBatch> fetch();  // the stream's next batch, its copy started when mine
  BatchStream& stream_;
  std::unique_ptr<BatchCopier> copier_;
  int64_t index_ = 0, world_, rank_;
  std::optional<FedBatch> ahead_;
  bool primed_ = false;
};

/// A plan's batches on `device`: the stream (pinned when the device is a
/// GPU) and its feed (that device's copier) made together, so pinning and
/// copying cannot disagree.
class DeviceBatches {
 public:
  DeviceBatches(const ParallelCorpus& corpus, std::vector<std::vector<int64_t>> plan,
                int64_t start, int64_t prefetch, torch::Device device, int64_t world = 1,
                int64_t rank = 0)
      : stream_(corpus, std::move(plan), start, prefetch, device.is_cuda()),
        feed_(stream_, make_batch_copier(device), world, rank) {}
  /// The next batch of the plan, or nullopt at its end.
  std::optional<FedBatch> next() { return feed_.next(); }

 private:
  BatchStream stream_;  // before feed_, which holds a reference to it
  DeviceFeed feed_;
};

}  // namespace clinic
