#include <fstream>

#include "framework/eval/bleu.h"
#include "framework/eval/search.h"
#include "framework/errors.h"
#include "framework/logging.h"
#include <fmt/format.h>
#include "models/transformer.h"
#include "test/support.h"

namespace clinic {
namespace {

TEST(Bleu, SacrebleuDocumentationExample) {
  // sacreBLEU README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio =
  // 0.944 hyp_len = 17 ref_len = 18)
  std::vector<std::string> sys = {"The dog bit the man.", "It wasn't surprising.",
                                  "The man had just bitten him."};
  std::vector<std::vector<std::string>> refs = {
      {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
      {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};
  auto b = corpus_bleu(sys, refs);
  EXPECT_EQ(b.format(),
            "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)");
}

TEST(Bleu, Tokenizer13a) {
  EXPECT_EQ(tokenize_13a("Hello, world."), "Hello , world .");
  EXPECT_EQ(tokenize_13a("It costs 3.50 dollars, e.g. 1,000."), "It costs 3.50 dollars , e . g . 1,000 .");
  EXPECT_EQ(tokenize_13a("a &quot;b&quot; &amp; (c)"), "a \" b \" & ( c )");
  EXPECT_EQ(tokenize_13a("9-year-old"), "9 - year-old");
}

// Golden outputs of sacreBLEU's intl regexes (tools/golden/bleu_intl_golden.py).
TEST(Bleu, TokenizerIntlMatchesSacrebleuRegexes) {
  std::ifstream in(std::string(kTestDataDir) + "/bleu_intl_golden.tsv");
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    auto tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos);
    std::string input = line.substr(0, tab), want = line.substr(tab + 1);
    for (size_t p; (p = input.find("\\t")) != std::string::npos;) input.replace(p, 2, "\t");
    EXPECT_EQ(tokenize_intl(input), want) << input;
  }
  EXPECT_EQ(n, 12);
  auto b = corpus_bleu({"Der Preis: 1.234,56 €."}, {{"Der Preis: 1.234,56 €."}}, "intl");
  EXPECT_DOUBLE_EQ(b.score, 100.0);
  EXPECT_NE(b.signature.find("tok:intl"), std::string::npos);
}

TEST(Bleu, EdgeCases) {
  auto same = corpus_bleu({"a b c d e"}, {{"a b c d e"}});
  EXPECT_DOUBLE_EQ(same.score, 100.0);
  auto empty = corpus_bleu({""}, {{"a b c"}});
  EXPECT_DOUBLE_EQ(empty.score, 0.0);
  EXPECT_DOUBLE_EQ(empty.bp, 0.0);
  // No matching 3- and 4-grams: exp smoothing gives 100/(2*total), 100/(4*total).
  auto partial = corpus_bleu({"a b x c d"}, {{"a b y c d"}}, "none");
  EXPECT_NEAR(partial.precisions[0], 80.0, 1e-9);
  EXPECT_NEAR(partial.precisions[1], 50.0, 1e-9);
  EXPECT_NEAR(partial.precisions[2], 100.0 / (2 * 3), 1e-9);
  EXPECT_NEAR(partial.precisions[3], 100.0 / (4 * 2), 1e-9);
  EXPECT_NEAR(partial.score, std::exp((std::log(80.0) + std::log(50.0) + std::log(100.0 / 6) +
                                       std::log(12.5)) / 4),
              1e-9);
  // Hypothesis longer than the reference: no brevity penalty.
  auto longer = corpus_bleu({"a b c d e f"}, {{"a b c d e"}});
  EXPECT_DOUBLE_EQ(longer.bp, 1.0);
  EXPECT_NEAR(longer.score, 100.0 * std::pow(5.0 / 6 * 4.0 / 5 * 3.0 / 4 * 2.0 / 3, 0.25), 1e-9);
  // Shorter: BP = exp(1 - r/c).
  auto shorter = corpus_bleu({"a b c d"}, {{"a b c d e f"}});
  EXPECT_NEAR(shorter.bp, std::exp(1 - 6.0 / 4), 1e-12);
  EXPECT_THROW(corpus_bleu({"a"}, {{"a", "b"}}), std::invalid_argument);
}

// A model trained on a copy task (in process, a few seconds).
std::shared_ptr<TransformerImpl> copy_model() {
  ModelConfig cfg = test::tiny_model("pre_ln", 2, 32);
  cfg.heads = 4;
  cfg.ffn_dim = 64;
  torch::manual_seed(21);
  auto m = std::make_shared<TransformerImpl>(cfg, VocabInfo{14, 14, true});
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(3e-3).betas({0.9, 0.98}));
  m->train();
  // Until it copies: the mean loss of the last 50 batches below 0.002, not a
  // fixed step count (other CPUs' kernels round differently, and a model that
  // is almost trained swaps a token on one of them).
  double recent = 0;
  for (int step = 0; step < 3000; ++step) {
    auto body = torch::randint(4, 14, {32, 5}, torch::kLong);
    auto src = torch::cat({body, torch::full({32, 1}, kEos, torch::kLong)}, 1);
    auto tgt_in = torch::cat({torch::full({32, 1}, kBos, torch::kLong), body}, 1);
    auto loss = torch::nn::functional::cross_entropy(m->forward(src, tgt_in).view({-1, 14}),
                                                     src.view(-1));
    opt.zero_grad();
    loss.backward();
    opt.step();
    recent = step == 0 ? loss.item<double>() : 0.98 * recent + 0.02 * loss.item<double>();
    if (step >= 300 && recent < 0.002) break;
  }
  m->eval();
  return m;
}

TEST(Search, BeamSearchTranslatesATrainedCopyModel) {
  auto m = copy_model();
  const int e = static_cast<int>(kEos);
  auto src = torch::tensor({{5, 9, 7, 12, 4, e}, {13, 6, 6, 8, 11, e}}, torch::kLong);
  SearchOptions o;
  o.beam = 5;
  o.max_len_b = 10;
  o.max_positions = 64;
  auto hyps = beam_search(*m, src, o);
  ASSERT_EQ(hyps.size(), 2u);
  EXPECT_EQ(hyps[0][0].tokens, (std::vector<int64_t>{5, 9, 7, 12, 4}));
  EXPECT_EQ(hyps[1][0].tokens, (std::vector<int64_t>{13, 6, 6, 8, 11}));
  o.nbest = 3;
  auto nb = beam_search(*m, src, o);
  ASSERT_EQ(nb[0].size(), 3u);
  EXPECT_GE(nb[0][0].score, nb[0][1].score);
  EXPECT_GE(nb[0][1].score, nb[0][2].score);
}

// --beam 100000 was OOM-killed at 24 GB. translate_lines checks one
// sentence's need before searching. The expectation is computed here from
// the model's sizes (K and V of every decoder layer, per decoded and per
// source token; four V-sized float rows per candidate; 2*beam candidates).
TEST(Search, BeamTooLargeForMemoryIsRefusedBeforeSearching) {
  ModelConfig cfg = test::tiny_model("pre_ln", 6, 512);
  cfg.heads = 8;
  cfg.max_target_positions = 1024;
  const int64_t V = 14;
  auto m = std::make_shared<TransformerImpl>(cfg, VocabInfo{V, V, true});
  m->eval();
  test::TempDir d;
  test::write_text(d.file("dict.txt"), "w4 1\nw5 1\nw6 1\nw7 1\nw8 1\nw9 1\nw10 1\nw11 1\nw12 1\nw13 1\n");
  DictionaryTokenizer tok(d.file("dict.txt"));
  SearchOptions o;
  o.beam = 1024;
  o.max_len_b = 1000;
  o.max_positions = cfg.max_target_positions;
  const int64_t S = 4, L = 6, D = 512, max_len = 1000 + 0;  // max_len_a = 0
  double per_row = 2.0 * L * D * 4 * max_len + 2.0 * L * D * 4 * S + 4.0 * V * 4;
  double need = 2.0 * o.beam * per_row;
  if (need <= static_cast<double>(available_memory_bytes()))
    GTEST_SKIP() << "this machine has room for " << need / (1 << 30) << " GiB";
  std::string e = test::error_of<DataError>([&] {
    translate_lines(*m, tok, tok, {"w4 w5 w6"}, o, 4096, torch::kCPU);
  });
  EXPECT_NE(e.find("beam search with beam 1024 over a 4-token sentence needs about " +
                   fmt::format("{:.1f} GiB", need / (1024.0 * 1024.0 * 1024.0))),
            std::string::npos)
      << e;
  int64_t fits = static_cast<int64_t>(available_memory_bytes() / (2.0 * per_row));
  EXPECT_NE(e.find("at most beam"), std::string::npos) << e;
  // The beam the message names does run (skipped when it is 0).
  o.beam = std::min<int64_t>(std::max<int64_t>(fits / 2, 1), 4);
  o.max_len_b = 3;
  auto out = translate_lines(*m, tok, tok, {"w4 w5 w6"}, o, 4096, torch::kCPU);
  EXPECT_EQ(out.size(), 1u);
}

// Issue 36 item 1: sources are cut at the encoder's limit
// (model.max_source_positions), not the decoder's, and each cut line is
// reported; the cut translation is the translation of the kept prefix.
TEST(Search, SourcesAreCutAtTheEncodersPositions) {
  ModelConfig cfg = test::tiny_model("pre_ln", 1, 32);
  cfg.max_source_positions = 8;
  cfg.max_target_positions = 64;
  const int64_t V = 14;
  torch::manual_seed(3);
  auto m = std::make_shared<TransformerImpl>(cfg, VocabInfo{V, V, true});
  m->eval();
  test::TempDir d;
  test::write_text(d.file("dict.txt"), "w4 1\nw5 1\nw6 1\nw7 1\nw8 1\nw9 1\nw10 1\nw11 1\nw12 1\nw13 1\n");
  DictionaryTokenizer tok(d.file("dict.txt"));
  SearchOptions o = SearchOptions::from(EvalConfig(), cfg);
  EXPECT_EQ(o.max_source_positions, 8);
  EXPECT_EQ(o.max_positions, 64);
  o.beam = 2;
  o.max_len_b = 5;
  const std::string twelve = "w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w4 w5", seven = "w4 w5 w6 w7 w8 w9 w10",
                    eight = "w4 w5 w6 w7 w8 w9 w10 w11";
  std::vector<std::pair<size_t, size_t>> cut;
  auto out = translate_lines(*m, tok, tok, {seven, twelve, eight}, o, 4096, torch::kCPU, &cut);
  // 7 tokens + EOS fit in 8 positions; 8 and 12 do not.
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut[0], (std::pair<size_t, size_t>{1, 12}));
  EXPECT_EQ(cut[1], (std::pair<size_t, size_t>{2, 8}));
  auto prefix = translate_lines(*m, tok, tok, {seven}, o, 4096, torch::kCPU);
  EXPECT_EQ(out[1].front().text, prefix[0].front().text);
  EXPECT_EQ(out[2].front().text, prefix[0].front().text);
  EXPECT_NEAR(out[1].front().score, prefix[0].front().score, 1e-5);
}

TEST(Search, BeamOneEqualsGreedyAndBatchOrderDoesNotMatter) {
  auto m = copy_model();
  const int e = static_cast<int>(kEos);
  auto src = torch::tensor({{5, 9, 7, 12, 4, e}, {13, 6, 8, e, 0, 0}, {4, 4, 10, 11, e, 0}},
                           torch::kLong);
  SearchOptions o;
  o.beam = 1;
  o.max_len_b = 8;
  o.max_positions = 64;
  auto hyps = beam_search(*m, src, o);
  torch::NoGradGuard g;
  for (int64_t r = 0; r < src.size(0); ++r) {
    auto row = src.narrow(0, r, 1);
    auto enc = m->encode(row);
    std::vector<int64_t> out;
    auto tgt = torch::full({1, 1}, kBos, torch::kLong);
    for (int step = 0; step <= 8; ++step) {
      auto logits = m->decode(tgt, enc).select(1, -1).squeeze(0);
      logits[kPad] = -INFINITY;
      logits[kBos] = -INFINITY;
      if (step == 0) logits[kEos] = -INFINITY;  // min_len 1
      int64_t next = step == 8 ? kEos : logits.argmax().item<int64_t>();
      if (next == kEos) break;
      out.push_back(next);
      tgt = torch::cat({tgt, torch::full({1, 1}, next, torch::kLong)}, 1);
    }
    EXPECT_EQ(hyps[r][0].tokens, out) << "row " << r;
  }
  o.beam = 4;
  auto fwd = beam_search(*m, src, o);
  auto rev = beam_search(*m, src.flip(0), o);
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(fwd[r][0].tokens, rev[2 - r][0].tokens);
    EXPECT_NEAR(fwd[r][0].score, rev[2 - r][0].score, 1e-5);
  }
}

// The trained copy model perturbed so that hypotheses differ and ties are
// rare, three sources of different lengths, a 4-best search.
struct PerturbedSearch {
  std::shared_ptr<TransformerImpl> m = copy_model();
  torch::Tensor src;
  SearchOptions o;
  PerturbedSearch() {
    torch::NoGradGuard g;
    torch::manual_seed(4);
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.3);
    const int e = static_cast<int>(kEos);
    src = torch::tensor({{5, 9, 7, 12, 4, e}, {13, 6, 8, e, 0, 0}, {4, 4, 10, 11, e, 0}},
                        torch::kLong);
    o.beam = 4;
    o.nbest = 4;
    o.max_len_b = 7;
    o.max_positions = 64;
  }
};

TEST(Search, NonIncrementalDecoderGivesTheSameNBest) {
  PerturbedSearch ps;
  auto& m = ps.m;
  auto& src = ps.src;
  auto& o = ps.o;
  auto cached = beam_search(*m, src, o);
  o.incremental = false;
  auto full = beam_search(*m, src, o);
  ASSERT_EQ(cached.size(), full.size());
  for (size_t r = 0; r < cached.size(); ++r) {
    ASSERT_EQ(cached[r].size(), full[r].size()) << "row " << r;
    ASSERT_EQ(cached[r].size(), 4u);
    for (size_t k = 0; k < cached[r].size(); ++k) {
      EXPECT_EQ(cached[r][k].tokens, full[r][k].tokens) << "row " << r << " hyp " << k;
      EXPECT_NEAR(cached[r][k].score, full[r][k].score, 1e-4);
    }
  }
}

// eval.cuda_graph (issue 33 item 3): the static cache keeps every row and
// writes each step's keys into a preallocated slot; the graph replays the
// step. Against the uncached decoder (the whole prefix every step, no cache
// at all): the same n-best, for the static step run eagerly (the CPU's
// path), for it captured and replayed (a recording stand-in: capture keeps
// the body, replay runs it), when capture fails (eager from there), and for
// a model without a static cache (a subclass: the growing cache).
struct RecordingGraph : GraphCapturer {
  std::function<void()> body;
  int* replays;
  bool fail;
  RecordingGraph(int* r, bool f) : replays(r), fail(f) {}
  void capture(const std::function<void()>& b) override {
    if (fail) throw std::runtime_error("operation not permitted when stream is capturing\nmore");
    body = b;
  }
  void replay() override {
    ++*replays;
    body();
  }
};

struct PlainSubclass : TransformerImpl {
  using TransformerImpl::TransformerImpl;
};

TEST(Search, StaticCacheAndItsGraphGiveTheNBestOfTheUncachedDecoder) {
  PerturbedSearch ps;  // lengths differ: sentences finish at different steps (dead rows)
  auto& m = ps.m;
  auto& src = ps.src;
  auto& o = ps.o;
  o.incremental = false;
  const auto full = beam_search(*m, src, o);
  o.incremental = true;
  auto same = [&](const std::vector<std::vector<Hypothesis>>& got, const std::string& what) {
    ASSERT_EQ(got.size(), full.size()) << what;
    for (size_t r = 0; r < full.size(); ++r) {
      ASSERT_EQ(got[r].size(), full[r].size()) << what << " row " << r;
      for (size_t k = 0; k < full[r].size(); ++k) {
        EXPECT_EQ(got[r][k].tokens, full[r][k].tokens) << what << " row " << r << " hyp " << k;
        EXPECT_NEAR(got[r][k].score, full[r][k].score, 1e-4) << what;
      }
    }
  };
  o.cuda_graph = true;
  SearchStats eager;
  same(beam_search(*m, src, o, &eager), "static, eager");
  EXPECT_TRUE(eager.static_cache);
  EXPECT_EQ(eager.captures, 0);
  EXPECT_GE(eager.eager_static_steps, 3);  // the longest sentence's steps
  int replays = 0;
  o.capturer = [&] { return std::unique_ptr<GraphCapturer>(new RecordingGraph(&replays, false)); };
  SearchStats graphed;
  same(beam_search(*m, src, o, &graphed), "static, captured");
  EXPECT_EQ(graphed.captures, 1);
  EXPECT_EQ(graphed.eager_static_steps, 1);  // step 0 fills the caches
  EXPECT_EQ(graphed.replays, eager.eager_static_steps - 1);
  EXPECT_EQ(replays, graphed.replays);
  EXPECT_TRUE(graphed.refused.empty());
  o.capturer = [&] { return std::unique_ptr<GraphCapturer>(new RecordingGraph(&replays, true)); };
  SearchStats failed;
  same(beam_search(*m, src, o, &failed), "capture refused");
  EXPECT_EQ(failed.captures, 0);
  EXPECT_EQ(failed.replays, 0);
  EXPECT_EQ(failed.eager_static_steps, eager.eager_static_steps);
  EXPECT_EQ(failed.refused, "operation not permitted when stream is capturing");
  // A subclass may decode differently: the growing cache, said.
  torch::manual_seed(21);
  auto sub = std::make_shared<PlainSubclass>(m->config, m->vocab);
  {
    torch::NoGradGuard g;
    auto from = m->parameters(), to = sub->parameters();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  }
  sub->eval();
  SearchStats plain;
  same(beam_search(*sub, src, o, &plain), "subclass");
  EXPECT_FALSE(plain.static_cache);
  EXPECT_NE(plain.refused.find("no static cache"), std::string::npos) << plain.refused;
}

}  // namespace
}  // namespace clinic
