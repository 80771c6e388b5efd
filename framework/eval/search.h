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
  static SearchOptions from(const EvalConfig& e, const ModelConfig& m);
};

struct Hypothesis {
  std::vector<int64_t> tokens;  // without EOS
  double score = 0;             // length-normalised log-probability
};

/// src [B, S] -> for each row, up to nbest hypotheses, best first. The model
/// is run in eval mode under NoGradGuard.
std::vector<std::vector<Hypothesis>> beam_search(Seq2SeqModel& model,
                                                 const torch::Tensor& src,
                                                 const SearchOptions& opts);

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
