#include "framework/eval/search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "framework/errors.h"
#include "framework/logging.h"

namespace clinic {

namespace {
// Memory one sentence's beam search needs, measured rather than derived from
// a recipe (any registered model): one decoder step on a 1-token source gives
// the cache bytes per decoded token (self-attention) and per source token
// (cross-attention) and the logits row; beam search holds 2*beam candidate
// rows, each with a cache of up to max_len + src_len tokens and about four
// V-sized float rows (logits, log-probs, scores, top-k input).
void check_beam_memory(Seq2SeqModel& model, const SearchOptions& o, int64_t src_len,
                       torch::Device device) {
  if (!device.is_cpu()) return;  // host memory only; CUDA reports its own OOM
  torch::NoGradGuard no_grad;
  auto tok = [&](int64_t id) { return torch::full({1, 1}, id, torch::kLong).to(device); };
  EncoderOut enc = model.encode(tok(kEos));
  DecoderCache cache;
  auto logits = model.decode(tok(kBos), enc, &cache);
  auto bytes = [](const std::vector<torch::Tensor>& v) {
    double b = 0;
    for (const auto& t : v)
      if (t.defined()) b += static_cast<double>(t.numel() * t.element_size());
    return b;
  };
  double per_target = bytes(cache.self_k) + bytes(cache.self_v);
  double per_source = bytes(cache.cross_k) + bytes(cache.cross_v);
  int64_t max_len = std::min<int64_t>(
      static_cast<int64_t>(o.max_len_a * src_len) + o.max_len_b, o.max_positions - 1);
  double per_row = per_target * max_len + per_source * src_len +
                   4.0 * static_cast<double>(logits.numel()) * sizeof(float);
  double need = 2.0 * o.beam * per_row;
  int64_t avail = available_memory_bytes();
  int64_t fits = avail > 0 ? static_cast<int64_t>(avail / (2.0 * per_row)) : 0;
  check_memory_fits(need, fmt::format("beam search with beam {} over a {}-token sentence",
                                      o.beam, src_len),
                    fmt::format("at most beam {} fits (lower --beam or eval.beam)", fits));
}
}  // namespace

SearchOptions SearchOptions::from(const EvalConfig& e, const ModelConfig& m) {
  SearchOptions o;
  o.beam = e.beam;
  o.lenpen = e.lenpen;
  o.max_len_a = e.max_len_a;
  o.max_len_b = e.max_len_b;
  o.min_len = e.min_len;
  o.nbest = std::min(e.nbest, e.beam);
  o.max_positions = m.max_target_positions;
  o.max_source_positions = m.max_source_positions;
  o.cuda_graph = e.cuda_graph;
  return o;
}

std::vector<std::vector<Hypothesis>> beam_search(Seq2SeqModel& model,
                                                 const torch::Tensor& src,
                                                 const SearchOptions& o,
                                                 SearchStats* stats) {
  SearchStats local;
  SearchStats& st = stats ? *stats : local;
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t B = src.size(0), K = o.beam;
  const auto dev = src.device();
  const float kNegInf = -std::numeric_limits<float>::infinity();
  auto src_lens = src.ne(kPad).sum(1).cpu();
  std::vector<int64_t> max_len(B);
  int64_t global_max = 0;
  for (int64_t b = 0; b < B; ++b) {
    max_len[b] = std::min<int64_t>(
        static_cast<int64_t>(o.max_len_a * src_lens[b].item<int64_t>()) + o.max_len_b,
        o.max_positions - 1);
    global_max = std::max(global_max, max_len[b]);
  }
  EncoderOut enc = model.encode(src);
  // Active sentences and their rows: row r of the decoder batch is beam
  // r % K of active sentence r / K. With a static cache (eval.cuda_graph)
  // the decoder keeps all B sentences: row r is beam r % K of sentence
  // r / K, finished or not, and only the active ones are read.
  std::vector<int64_t> active(B);
  std::iota(active.begin(), active.end(), 0);
  auto rows = torch::arange(B, torch::kLong).repeat_interleave(K).to(dev);
  enc = enc.index_select(rows);
  DecoderCache cache;
  const bool fixed = o.cuda_graph && o.incremental && model.static_cache();
  if (o.cuda_graph && !fixed) {
    st.refused = o.incremental ? "the model has no static cache (a subclass or a registered model)"
                               : "the uncached search (incremental: false)";
    static bool said = false;  // once per process, not once per batch
    if (!said) log()->info("[eval] eval.cuda_graph: {}; the growing cache", st.refused);
    said = true;
  }
  st.static_cache = fixed;
  const int64_t R = B * K;
  MakeCapturer make;
  torch::Tensor reorder_rows, step_lprobs;  // the static step's input and output
  std::unique_ptr<GraphCapturer> graph;
  if (fixed) {
    make = o.capturer ? o.capturer : dev.is_cuda() ? cuda_graph_capturer() : nullptr;
    cache.capacity = global_max + 1;
    cache.position = torch::zeros({}, torch::TensorOptions(torch::kLong).device(dev));
    reorder_rows = torch::arange(R, torch::TensorOptions(torch::kLong).device(dev));
  }
  std::vector<std::vector<int64_t>> seqs(B * K);  // tokens so far per row
  auto scores = torch::zeros({B, K}, torch::kFloat);
  if (K > 1) scores.narrow(1, 1, K - 1).fill_(kNegInf);  // one live beam at t=0
  std::vector<std::vector<Hypothesis>> finished(B);
  auto last = torch::full({B * K, 1}, kBos, torch::kLong).to(dev);
  // One static step: the beams' rows gathered, one token decoded, its
  // log-probabilities. Reads last, reorder_rows and the cache, all in place.
  auto static_step = [&] {
    cache.reorder_in_place(reorder_rows);
    step_lprobs = torch::log_softmax(model.decode(last, enc, &cache).to(torch::kFloat).squeeze(1), -1);
  };

  for (int64_t step = 0; step <= global_max && !active.empty(); ++step) {
    const int64_t A = static_cast<int64_t>(active.size());
    torch::Tensor logits;  // [A*K, 1, V]
    torch::Tensor lprobs;  // [rows, V] on the host
    if (fixed) {
      // Step 0 fills the caches (the cross-attention ones from the encoder);
      // from step 1 the step reads them and nothing else changes: captured.
      if (step == 1 && make && st.refused.empty()) {
        std::unique_ptr<GraphCapturer> g = make();
        try {
          g->capture(static_step);
          graph = std::move(g);
          st.captures += 1;
        } catch (const std::exception& ex) {
          std::string what = ex.what();
          st.refused = what.substr(0, what.find('\n'));
          log()->info("[eval] eval.cuda_graph: capture failed ({}); the static step eagerly",
                      st.refused);
        }
      }
      if (graph) {
        graph->replay();
        st.replays += 1;
      } else {
        static_step();
        st.eager_static_steps += 1;
      }
      const int64_t V = step_lprobs.size(1);
      // The active sentences' rows, in active order (what the growing
      // cache's decoder batch holds).
      lprobs = step_lprobs.cpu().view({B, K, V})
                   .index_select(0, torch::tensor(active, torch::kLong))
                   .view({A * K, V});
    } else if (o.incremental) {
      logits = model.decode(last, enc, &cache);
    } else {
      auto prefix = torch::full({A * K, step + 1}, kBos, torch::kLong);
      auto pa = prefix.accessor<int64_t, 2>();
      for (int64_t r = 0; r < A * K; ++r)
        for (int64_t t = 0; t < step; ++t) pa[r][t + 1] = seqs[r][t];
      logits = model.decode(prefix.to(dev), enc).narrow(1, step, 1);
    }
    if (!fixed) lprobs = torch::log_softmax(logits.to(torch::kFloat).squeeze(1), -1).cpu();
    const int64_t V = lprobs.size(1);
    lprobs.select(1, kPad).fill_(kNegInf);
    lprobs.select(1, kBos).fill_(kNegInf);
    if (step < o.min_len) lprobs.select(1, kEos).fill_(kNegInf);
    lprobs = lprobs.view({A, K, V});
    for (int64_t a = 0; a < A; ++a)
      if (step >= max_len[active[a]]) {  // force EOS at the length limit
        auto eos = lprobs[a].select(1, kEos).clone();
        lprobs[a].fill_(kNegInf);
        lprobs[a].select(1, kEos).copy_(eos);
      }
    auto cand = (scores.unsqueeze(2) + lprobs).view({A, K * V});
    auto [top_val, top_idx] = cand.topk(std::min<int64_t>(2 * K, K * V), 1);
    auto tv = top_val.accessor<float, 2>();
    auto ti = top_idx.accessor<int64_t, 2>();
    std::vector<int64_t> keep_sent, reorder, next_tok;
    std::vector<float> next_score;
    std::vector<std::vector<int64_t>> next_seqs;
    for (int64_t a = 0; a < A; ++a) {
      const int64_t s = active[a];
      std::vector<int64_t> pick_row, pick_tok;
      std::vector<float> pick_score;
      for (int64_t c = 0; c < top_idx.size(1); ++c) {
        float v = tv[a][c];
        if (v == kNegInf) break;
        int64_t beam = ti[a][c] / V, tok = ti[a][c] % V;
        int64_t row = a * K + beam;
        if (tok == kEos) {
          // fairseq finalises EOS only among the first `beam` candidates.
          if (c < K && static_cast<int64_t>(finished[s].size()) < K) {
            double len = static_cast<double>(seqs[row].size() + 1);
            finished[s].push_back({seqs[row], v / std::pow(len, o.lenpen)});
          }
          continue;
        }
        if (static_cast<int64_t>(pick_row.size()) < K) {
          pick_row.push_back(row);
          pick_tok.push_back(tok);
          pick_score.push_back(v);
        }
      }
      bool done = static_cast<int64_t>(finished[s].size()) >= K ||
                  pick_row.empty() || step >= max_len[s];
      if (done) continue;
      while (static_cast<int64_t>(pick_row.size()) < K) {  // pad with dead beams
        pick_row.push_back(pick_row.front());
        pick_tok.push_back(pick_tok.front());
        pick_score.push_back(kNegInf);
      }
      keep_sent.push_back(s);
      for (int64_t k = 0; k < K; ++k) {
        reorder.push_back(pick_row[k]);
        next_tok.push_back(pick_tok[k]);
        next_score.push_back(pick_score[k]);
        auto seq = seqs[pick_row[k]];
        seq.push_back(pick_tok[k]);
        next_seqs.push_back(std::move(seq));
      }
    }
    active = keep_sent;
    if (active.empty()) break;
    if (fixed) {
      // Rows of the sentences still searched take their chosen beams'
      // caches and tokens; every other row stays as it is (a dead row).
      std::vector<int64_t> full_rows(R), full_tok(R, kEos);
      std::iota(full_rows.begin(), full_rows.end(), 0);
      for (size_t j = 0; j < keep_sent.size(); ++j)
        for (int64_t k = 0; k < K; ++k) {
          const size_t c = j * K + k;
          full_rows[keep_sent[j] * K + k] = keep_sent[j] * K + reorder[c] % K;
          full_tok[keep_sent[j] * K + k] = next_tok[c];
        }
      reorder_rows.copy_(torch::tensor(full_rows, torch::kLong));
      last.copy_(torch::tensor(full_tok, torch::kLong).view({R, 1}));
    } else {
      auto idx = torch::tensor(reorder, torch::kLong).to(dev);
      if (o.incremental) cache.reorder(idx);
      enc = enc.index_select(idx);
      last = torch::tensor(next_tok, torch::kLong).view({-1, 1}).to(dev);
    }
    seqs = std::move(next_seqs);
    scores = torch::tensor(next_score, torch::kFloat).view({-1, K});
  }
  for (auto& f : finished) {
    std::stable_sort(f.begin(), f.end(),
                     [](const Hypothesis& x, const Hypothesis& y) { return x.score > y.score; });
    if (static_cast<int64_t>(f.size()) > o.nbest) f.resize(o.nbest);
  }
  return finished;
}

std::vector<std::vector<Translation>> translate_lines(
    Seq2SeqModel& model, Tokenizer& src_vocab, Tokenizer& tgt_vocab,
    const std::vector<std::string>& lines, const SearchOptions& opts,
    int64_t max_tokens, torch::Device device, std::vector<std::pair<size_t, size_t>>* cut) {
  std::vector<std::vector<Translation>> out(lines.size());
  auto ids = src_vocab.encode_lines(lines);
  std::vector<size_t> order;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (ids[i].empty()) {
      out[i].assign(1, Translation{});
      continue;
    }
    // Leave room for EOS within the encoder's positions.
    if (static_cast<int64_t>(ids[i].size()) >= opts.max_source_positions) {
      if (cut) cut->emplace_back(i, ids[i].size());
      ids[i].resize(opts.max_source_positions - 1);
    }
    order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  if (!order.empty())
    check_beam_memory(model, opts, static_cast<int64_t>(ids[order.back()].size()) + 1, device);
  size_t start = 0;
  while (start < order.size()) {
    size_t end = start;
    int64_t longest = 0;
    while (end < order.size()) {
      int64_t len = static_cast<int64_t>(ids[order[end]].size()) + 1;
      int64_t nl = std::max(longest, len);
      if (end > start && nl * static_cast<int64_t>(end - start + 1) > max_tokens) break;
      longest = nl;
      ++end;
    }
    const int64_t B = static_cast<int64_t>(end - start);
    auto src = torch::full({B, longest}, kPad, torch::kLong);
    auto acc = src.accessor<int64_t, 2>();
    for (int64_t r = 0; r < B; ++r) {
      const auto& v = ids[order[start + r]];
      for (size_t j = 0; j < v.size(); ++j) acc[r][j] = v[j];
      acc[r][v.size()] = kEos;
    }
    auto hyps = beam_search(model, src.to(device), opts);
    for (int64_t r = 0; r < B; ++r)
      for (const auto& h : hyps[r])
        out[order[start + r]].push_back({tgt_vocab.decode(h.tokens), h.score});
    start = end;
  }
  return out;
}

}  // namespace clinic
