#pragma once
// Batched beam search with fairseq's SequenceGenerator semantics: 2*beam
// candidates per step, EOS among the top `beam` candidates finalises a
// hypothesis with score sum(log p) / len^lenpen (len counts EOS), a sentence
// is done with `beam` finished hypotheses, max length a*src_len + b.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/graph_capture.h"
#include "framework/model.h"

namespace clinic {

struct SearchOptions {
  int64_t beam = 5;
  double lenpen = 1.0;
  double max_len_a = 0.0;
  int64_t max_len_b = 200;
  int64_t min_len = 1;
  int64_t nbest = 1;
  int64_t max_positions = 1024;         // the decoder's limit (model.max_target_positions)
  int64_t max_source_positions = 1024;  // the encoder's: longer sources are cut to fit
  /// false: re-run the decoder over the whole prefix every step instead of
  /// using the KV cache (the straightforward decoder; a benchmark baseline
  /// and a cross-check of the cache).
  bool incremental = true;
  /// eval.cuda_graph: every row decodes every step (finished sentences as
  /// dead rows) on a static cache (DecoderCache::capacity), so the decoder
  /// step keeps its shapes and memory: step 0 runs eagerly, step 1 is
  /// captured, every step replays it. `capturer` null: CUDA's graph on a
  /// CUDA device, none (the static step eagerly) elsewhere; a test's
  /// stand-in otherwise. Falls back to the growing cache (one log line)
  /// where the model has no static cache, and to the eager static step
  /// where capture fails.
  bool cuda_graph = false;
  MakeCapturer capturer;
  static SearchOptions from(const EvalConfig& e, const ModelConfig& m);
};

/// What a search did with eval.cuda_graph (filled when given to beam_search).
struct SearchStats {
  bool static_cache = false;
  int64_t captures = 0, replays = 0, eager_static_steps = 0;
  std::string refused;  // why the graph or the static cache was not used
};

struct Hypothesis {
  std::vector<int64_t> tokens;  // without EOS
  double score = 0;             // length-normalised log-probability
};

/// src [B, S] -> for each row, up to nbest hypotheses, best first. The model
/// is run in eval mode under NoGradGuard.
std::vector<std::vector<Hypothesis>> beam_search(Seq2SeqModel& model,
                                                 const torch::Tensor& src,
                                                 const SearchOptions& opts,
                                                 SearchStats* stats = nullptr);

struct Translation {
  std::string text;
  double score = 0;  // the hypothesis' length-normalised log-probability
};

/// Translate raw lines: tokenize, sort by length, batch by a source-token
/// budget, search, detokenise, restore input order. Empty lines map to
/// one empty output. Returns up to nbest translations per line, best first.
/// Throws DataError before searching when one sentence's beam would not fit
/// in the memory available (--beam 100000 was OOM-killed at 24 GB).
/// Sources of opts.max_source_positions tokens or more are cut to their first
/// max_source_positions - 1 (room for EOS); `cut`, when given, receives the
/// index of each such line and its token count.
std::vector<std::vector<Translation>> translate_lines(
    Seq2SeqModel& model, Tokenizer& src_vocab, Tokenizer& tgt_vocab,
    const std::vector<std::string>& lines, const SearchOptions& opts,
    int64_t max_tokens, torch::Device device,
    std::vector<std::pair<size_t, size_t>>* cut = nullptr);

}  // namespace clinic
