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

}  // namespace clinic
