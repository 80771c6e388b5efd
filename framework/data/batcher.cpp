#include "framework/data/batcher.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "framework/errors.h"

namespace clinic {

std::vector<std::vector<int64_t>> plan_epoch(const ParallelCorpus& c,
                                             int64_t max_tokens,
                                             int64_t max_sentences,
                                             uint64_t seed, int64_t epoch,
                                             bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(c.size()));
  std::iota(order.begin(), order.end(), 0);
  // mt19937_64 is specified bit-exactly by the standard; std::shuffle's use
  // of it is libstdc++'s, fixed for a given toolchain.
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  if (shuffle) std::shuffle(order.begin(), order.end(), rng);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (c.src_len(a) != c.src_len(b)) return c.src_len(a) < c.src_len(b);
    return c.tgt_len(a) < c.tgt_len(b);
  });
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> cur;
  int64_t longest = 0;
  for (int64_t k : order) {
    int64_t len = std::max(c.src_len(k), c.tgt_len(k));
    if (len > max_tokens)
      throw DataError(fmt::format(
          "sentence pair at line {} has {} tokens, more than data.max_tokens = "
          "{}; raise max_tokens or lower data.max_source_len/max_target_len",
          c.keep[k] + 1, len, max_tokens));
    int64_t new_longest = std::max(longest, len);
    // With shape buckets a batch costs its bucket's length, not its own.
    const int64_t cost = c.shape_lengths.empty() ? new_longest
                                                 : c.shape_lengths[c.shape_bucket(new_longest)];
    bool full = (static_cast<int64_t>(cur.size()) + 1) * cost > max_tokens ||
                (max_sentences > 0 &&
                 static_cast<int64_t>(cur.size()) + 1 > max_sentences);
    if (full && !cur.empty()) {
      batches.push_back(std::move(cur));
      cur.clear();
      new_longest = len;
    }
    cur.push_back(k);
    longest = new_longest;
  }
  if (!cur.empty()) batches.push_back(std::move(cur));
  if (shuffle) std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

BatchStream::BatchStream(const ParallelCorpus& corpus,
                         std::vector<std::vector<int64_t>> plan, int64_t start,
                         int64_t prefetch, bool pin)
    : corpus_(corpus),
      plan_(std::move(plan)),
      next_produce_(start),
      prefetch_(std::max<int64_t>(prefetch, 1)),
      pin_(pin) {
  worker_ = std::thread([this] { run(); });
}

BatchStream::~BatchStream() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void BatchStream::run() {
  try {
    for (;;) {
      int64_t i;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] {
          return stop_ || static_cast<int64_t>(ready_.size()) < prefetch_;
        });
        if (stop_ || next_produce_ >= static_cast<int64_t>(plan_.size())) break;
        i = next_produce_++;
      }
      Batch b = corpus_.make_batch(plan_[i]);
      if (pin_)  // the host-side copy here, off the trainer's thread
        for (torch::Tensor* t : {&b.src, &b.tgt_in, &b.tgt_out}) *t = t->pin_memory();
      {
        std::lock_guard<std::mutex> l(mu_);
        ready_.push_back(std::move(b));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> l(mu_);
    error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
  }
  cv_.notify_all();
}

std::optional<Batch> BatchStream::next() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !ready_.empty() || done_; });
  if (ready_.empty()) {
    if (error_) std::rethrow_exception(error_);
    return std::nullopt;
  }
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  l.unlock();
  cv_.notify_all();
  return b;
}

}  // namespace clinic
