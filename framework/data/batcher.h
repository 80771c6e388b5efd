#pragma once
// fairseq-style token-budget batching with a deterministic, resumable order
// and a background thread that prepares the tensors ahead of the trainer.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "framework/data/corpus.h"

namespace clinic {

/// Batches of one epoch, each a list of rows of `corpus` (indices into
/// corpus.keep). Rows are shuffled with (seed, epoch), stably sorted by
/// (source, target) length, cut so that rows x longest side <= max_tokens
/// (and rows <= max_sentences when > 0); the batch order is then shuffled
/// with the same seed. shuffle = false keeps length order (validation).
std::vector<std::vector<int64_t>> plan_epoch(const ParallelCorpus& corpus,
                                             int64_t max_tokens,
                                             int64_t max_sentences,
                                             uint64_t seed, int64_t epoch,
                                             bool shuffle);

/// Where the trainer is in the data: batches of `epoch` before `batch` are
/// consumed. Saved in checkpoints so a resumed run sees the same batches.
struct DataPosition {
  int64_t epoch = 1;
  int64_t batch = 0;
};

/// Iterates a plan from a start index, preparing up to `prefetch` batches on
/// a background thread; `pin`: in page-locked memory (for a GPU's
/// asynchronous copies, device_feed.h; needs a CUDA build).
class BatchStream {
 public:
  BatchStream(const ParallelCorpus& corpus,
              std::vector<std::vector<int64_t>> plan, int64_t start,
              int64_t prefetch, bool pin = false);
  ~BatchStream();
  BatchStream(const BatchStream&) = delete;
  BatchStream& operator=(const BatchStream&) = delete;
  /// The next batch, or nullopt at the end of the plan.
  std::optional<Batch> next();
  int64_t size() const { return static_cast<int64_t>(plan_.size()); }

 private:
  void run();
  const ParallelCorpus& corpus_;
  std::vector<std::vector<int64_t>> plan_;
  int64_t next_produce_, prefetch_;
  bool pin_;
  std::deque<Batch> ready_;
  bool done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
};

}  // namespace clinic
