#pragma once
// Parallel corpora as token ids, cached in a binary file that is memory-mapped
// on later runs and rebuilt when the text or the vocabulary changes.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/model.h"

namespace clinic {

/// Token ids of one side of a split: line i is ids[offsets[i], offsets[i+1]).
class TokenCache {
 public:
  /// Open `cache_path` if it matches the text and vocabulary, else encode
  /// `text_path` with `tok` and write the cache atomically first.
  static std::shared_ptr<TokenCache> open_or_build(const std::string& text_path,
                                                   const std::string& cache_path,
                                                   Tokenizer& tok);
  /// In-memory corpus (tests, translation input).
  static std::shared_ptr<TokenCache> from_ids(
      const std::vector<std::vector<int32_t>>& ids);
  ~TokenCache();
  int64_t lines() const { return n_; }
  int64_t length(int64_t i) const {
    return static_cast<int64_t>(offsets_[i + 1] - offsets_[i]);
  }
  const int32_t* line(int64_t i) const { return ids_ + offsets_[i]; }

 private:
  TokenCache() = default;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<uint64_t> own_offsets_;
  std::vector<int32_t> own_ids_;
  const uint64_t* offsets_ = nullptr;
  const int32_t* ids_ = nullptr;
  int64_t n_ = 0;
};

/// Sentence pairs that passed the filters. Row lengths include EOS.
struct ParallelCorpus {
  std::shared_ptr<TokenCache> src, tgt;
  std::vector<int64_t> keep;  // line indices used
  int64_t src_len(int64_t k) const { return src->length(keep[k]) + 1; }
  int64_t tgt_len(int64_t k) const { return tgt->length(keep[k]) + 1; }
  int64_t size() const { return static_cast<int64_t>(keep.size()); }
  /// Padded tensors for rows `ks` (indices into keep).
  Batch make_batch(const std::vector<int64_t>& ks) const;
  /// data.target_layout = source_aligned: tgt_out [B, S] holds the target
  /// tokens (and EOS) at the source positions, padded or truncated to the
  /// source length; tgt_in is the same tensor (a tagger does not read it).
  bool source_aligned = false;
  /// data.shape_buckets (issue 33, for CUDA graphs): when set, every batch is
  /// padded to [shape_rows[i], shape_lengths[i]] for the smallest bucket i
  /// whose length holds its longest row, source and target alike, so an epoch
  /// has as many batch shapes as buckets. Filler rows are a lone EOS source
  /// and an all-pad target: they add no token to the loss or the counts.
  std::vector<int64_t> shape_lengths, shape_rows;
  /// The bucket of a row length (index into shape_lengths); DataError when
  /// the row is longer than the largest bucket.
  size_t shape_bucket(int64_t len) const;
};

/// data.shape_buckets = n: n lengths growing by 2x up to `longest` (the
/// longest row the filters keep, EOS/BOS included), each rounded up to a
/// multiple of 8, and the rows each holds under max_tokens (and
/// max_sentences when > 0). Empty for n = 0.
void set_shape_buckets(ParallelCorpus& c, int64_t n, int64_t longest, int64_t max_tokens,
                       int64_t max_sentences);

/// data.source = fixed_batch: data.fixed_input / fixed_target ("1 0; 0 1")
/// as one batch. Token t becomes id t + 4 (ids 0-3 stay pad, unk, bos, eos,
/// so no token is ever mistaken for padding); src = tgt_in = the input rows,
/// tgt_out = the target rows, no BOS/EOS. ConfigError naming the key for
/// ragged rows, ids outside [0, fixed_vocab) or mismatched shapes.
Batch fixed_batch(const DataConfig& cfg);
/// The id offset of fixed_batch tokens (the four special ids).
constexpr int64_t kFixedTokenOffset = 4;

struct FilterStats {
  int64_t total = 0, empty = 0, too_long = 0;
};

/// Load <dir>/<split>.{src,tgt}, check that both sides have the same number
/// of lines, drop empty pairs and (when max_src/max_tgt > 0) over-long pairs.
ParallelCorpus load_parallel(const DataConfig& cfg, const std::string& split,
                             const Vocabularies& vocab,
                             const std::string& cache_dir, int64_t max_src,
                             int64_t max_tgt, FilterStats* stats = nullptr);

}  // namespace clinic
