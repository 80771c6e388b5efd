#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "framework/data/batcher.h"
#include "framework/data/corpus.h"
#include "framework/data/device_feed.h"
#include "framework/data/text.h"
#include "framework/data/vocab.h"
#include "framework/errors.h"
#include "framework/eval/bleu.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;
using test::write_text;

DataConfig toy_data(const std::string& dir) {
  DataConfig c;
  c.dir = dir;
  c.src_lang = "src";
  c.tgt_lang = "tgt";
  c.valid = "valid";
  c.tokenizer = "pretokenized";
  return c;
}

std::string data_error(const std::function<void()>& fn) { return test::error_of<DataError>(fn); }

TEST(Data, SentencePieceRoundTripIsLosslessOnTokenizedText) {
  TempDir d;
  std::string iwslt = std::string(kTestDataDir) + "/iwslt14";
  DataConfig c;
  c.dir = iwslt;
  c.train = "valid";
  c.vocab_size = 1000;
  c.spm_normalization = "identity";
  Vocabularies v = prepare_vocab(c, d.path());
  EXPECT_EQ(v.src->size(), 1000);
  EXPECT_TRUE(v.joint);
  auto lines = read_lines(iwslt + "/test.en");
  lines.resize(200);
  auto ids = v.src->encode_lines(lines);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(ids[i], v.src->encode(lines[i]));
    std::vector<int64_t> wide(ids[i].begin(), ids[i].end());
    ASSERT_EQ(v.src->decode(wide), lines[i]) << "line " << i;
  }
  // A second prepare reuses the model instead of retraining it.
  uint64_t h = v.src->hash();
  EXPECT_EQ(prepare_vocab(c, d.path()).src->hash(), h);
}

TEST(Data, VocabularyTooLargeForDataIsReadable) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 30, 5);
  DataConfig c = toy_data(d.file("c"));
  c.tokenizer = "sentencepiece";
  c.vocab_size = 5000;
  std::string e = data_error([&] { prepare_vocab(c, d.path()); });
  EXPECT_NE(e.find("data.vocab_size = 5000"), std::string::npos) << e;
  EXPECT_NE(e.find("lower data.vocab_size"), std::string::npos) << e;
}

// The fixture's fairseq-BPE split as a pretokenized corpus, vocabulary built in `dir`.
DataConfig iwslt_bpe(const TempDir& d, Vocabularies* v) {
  DataConfig c;
  c.dir = std::string(kTestDataDir) + "/iwslt14/bpe10k";
  c.train = "valid";
  c.tokenizer = "pretokenized";
  *v = prepare_vocab(c, d.path());
  return c;
}

TEST(Data, PretokenizedModeJoinsBpeExactly) {
  TempDir d;
  std::string iwslt = std::string(kTestDataDir) + "/iwslt14";
  Vocabularies v;
  iwslt_bpe(d, &v);
  auto bpe = read_lines(iwslt + "/bpe10k/valid.en");
  auto plain = read_lines(iwslt + "/valid.en");
  ASSERT_EQ(bpe.size(), plain.size());
  for (size_t i = 0; i < bpe.size(); ++i) {
    auto ids = v.tgt->encode(bpe[i]);
    std::vector<int64_t> wide(ids.begin(), ids.end());
    ASSERT_EQ(v.tgt->decode(wide), plain[i]) << "line " << i;
  }
}

struct Toy {
  TempDir dir;
  DataConfig cfg;
  Vocabularies vocab;
  ParallelCorpus corpus;
  explicit Toy(int n = 300) {
    test::write_copy_corpus(dir.file("c"), n, 10);
    cfg = toy_data(dir.file("c"));
    vocab = prepare_vocab(cfg, dir.file("run"));
    corpus = load_parallel(cfg, "train", vocab, dir.file("run/cache"), 0, 0);
  }
};

TEST(Batcher, BudgetIsRespectedAndEverySentenceAppearsOnce) {
  Toy t;
  for (int64_t budget : {16, 50, 200}) {
    auto plan = plan_epoch(t.corpus, budget, 0, 1, 1, true);
    std::multiset<int64_t> seen;
    for (const auto& b : plan) {
      int64_t longest = 0;
      for (auto k : b) longest = std::max({longest, t.corpus.src_len(k), t.corpus.tgt_len(k)});
      EXPECT_LE(longest * static_cast<int64_t>(b.size()), budget);
      auto batch = t.corpus.make_batch(b);
      EXPECT_LE(batch.src.numel(), budget);
      seen.insert(b.begin(), b.end());
    }
    ASSERT_EQ(seen.size(), static_cast<size_t>(t.corpus.size()));
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size());
  }
  auto capped = plan_epoch(t.corpus, 1000, 7, 1, 1, true);
  for (const auto& b : capped) EXPECT_LE(b.size(), 7u);
}

TEST(Batcher, OrderIsDeterministicAndResumable) {
  Toy t;
  auto a = plan_epoch(t.corpus, 40, 0, 3, 2, true);
  EXPECT_EQ(a, plan_epoch(t.corpus, 40, 0, 3, 2, true));
  EXPECT_NE(a, plan_epoch(t.corpus, 40, 0, 3, 3, true));
  EXPECT_NE(a, plan_epoch(t.corpus, 40, 0, 4, 2, true));
  std::vector<std::vector<int64_t>> all, tail;
  {
    BatchStream s(t.corpus, a, 0, 3);
    while (auto b = s.next()) all.push_back(b->ids);
  }
  {
    BatchStream s(t.corpus, a, 5, 3);
    while (auto b = s.next()) tail.push_back(b->ids);
  }
  ASSERT_EQ(all.size(), a.size());
  EXPECT_EQ(tail, std::vector<std::vector<int64_t>>(all.begin() + 5, all.end()));
}

// The feed (issue 33 item 1) against a plain BatchStream: the same batches
// in the same order, this rank's only, and each one's copy started one batch
// ahead: when batch k is handed over, the copy of the next batch of this
// rank has begun, and batch k was readied (its stream waits) first.
namespace {
struct RecordingCopier : BatchCopier {
  std::vector<std::string>* events;
  explicit RecordingCopier(std::vector<std::string>* e) : events(e) {}
  Batch start(const Batch& host) override {
    events->push_back("start " + std::to_string(host.ids.front()));
    Batch b = host;
    b.src = host.src.clone();  // "the device's copy"
    return b;
  }
  void ready(Batch& b) override { events->push_back("ready " + std::to_string(b.ids.front())); }
};
}  // namespace

TEST(Batcher, DeviceFeedCopiesThisRanksBatchesOneAhead) {
  Toy t;
  auto plan = plan_epoch(t.corpus, 40, 0, 3, 2, true);
  ASSERT_GE(plan.size(), 6u);
  std::vector<Batch> plain;
  {
    BatchStream s(t.corpus, plan, 1, 2);
    while (auto b = s.next()) plain.push_back(*b);
  }
  for (int64_t world : {1, 2}) {
    for (int64_t rank = 0; rank < world; ++rank) {
      std::vector<std::string> ev;
      BatchStream s(t.corpus, plan, 1, 2);
      DeviceFeed feed(s, std::make_unique<RecordingCopier>(&ev), world, rank);
      std::vector<std::string> expect;
      std::vector<size_t> mine;
      for (size_t k = 0; k < plain.size(); ++k)
        if (static_cast<int64_t>(k) % world == rank) mine.push_back(k);
      auto first = [&](size_t k) { return std::to_string(plain[k].ids.front()); };
      expect.push_back("start " + first(mine[0]));
      size_t k = 0, m = 0;
      while (auto f = feed.next()) {
        ASSERT_LT(k, plain.size());
        EXPECT_EQ(f->batch.ids, plain[k].ids) << k;
        EXPECT_EQ(f->mine, static_cast<int64_t>(k) % world == rank) << k;
        if (f->mine) {
          EXPECT_TRUE(torch::equal(f->batch.src, plain[k].src));
          expect.push_back("ready " + first(k));
          if (++m < mine.size()) expect.push_back("start " + first(mine[m]));
          // Handed over: the next of this rank is on its way (when the
          // stream has it: the feed looks one batch of the plan ahead).
          if (m < mine.size() && mine[m] == k + 1) {
            EXPECT_EQ(ev.back(), "start " + first(k + 1));
          }
        }
        ++k;
      }
      EXPECT_EQ(k, plain.size());
      EXPECT_EQ(ev, expect) << "world " << world << " rank " << rank;
    }
  }
}

TEST(Data, BatchTensorsHaveEosBosAndPadding) {
  Toy t(20);
  auto b = t.corpus.make_batch({0, 1});
  int64_t len0 = t.corpus.src_len(0);
  EXPECT_EQ(b.src[0][len0 - 1].item<int64_t>(), kEos);
  EXPECT_EQ(b.tgt_in[0][0].item<int64_t>(), kBos);
  EXPECT_TRUE(torch::equal(b.tgt_in[0].narrow(0, 1, len0 - 1), b.tgt_out[0].narrow(0, 0, len0 - 1)));
  EXPECT_EQ(b.src_tokens, t.corpus.src_len(0) + t.corpus.src_len(1));
}

TEST(Data, BadInputsGetOneClearError) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 20, 4);
  DataConfig c = toy_data(d.file("c"));
  Vocabularies v = prepare_vocab(c, d.file("run"));
  // Missing file names the path.
  std::string e = data_error([&] { load_parallel(c, "nope", v, d.file("run/cache"), 0, 0); });
  EXPECT_NE(e.find("nope.src: file not found"), std::string::npos) << e;
  // Line counts differ: both counts and both files.
  write_text(d.file("c/odd.src"), "w1 w2\nw3\nw4\n");
  write_text(d.file("c/odd.tgt"), "w1 w2\nw3\n");
  e = data_error([&] { load_parallel(c, "odd", v, d.file("run/cache"), 0, 0); });
  EXPECT_NE(e.find("odd.src has 3 lines"), std::string::npos) << e;
  EXPECT_NE(e.find("odd.tgt has 2"), std::string::npos) << e;
  // Non-UTF-8 byte: file, line and column.
  write_text(d.file("c/bad.src"), "w1\nw2 \xff w3\n");
  write_text(d.file("c/bad.tgt"), "w1\nw2\n");
  e = data_error([&] { load_parallel(c, "bad", v, d.file("run/cache"), 0, 0); });
  EXPECT_NE(e.find("bad.src:2:4: byte 0xff is not valid UTF-8"), std::string::npos) << e;
  // Empty lines are skipped and long lines filtered, both counted.
  write_text(d.file("c/gaps.src"), "w1 w2\n\nw1 w2 w3 w4 w5 w6 w7\nw3\n");
  write_text(d.file("c/gaps.tgt"), "w1 w2\nw5\nw1\nw3\n");
  FilterStats st;
  auto p = load_parallel(c, "gaps", v, d.file("run/cache"), 5, 5, &st);
  EXPECT_EQ(st.total, 4);
  EXPECT_EQ(st.empty, 1);
  EXPECT_EQ(st.too_long, 1);
  EXPECT_EQ(p.keep, (std::vector<int64_t>{0, 3}));
}

TEST(Data, CacheIsRebuiltForAnotherVocabularyOrChangedText) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 50, 4);
  DataConfig c = toy_data(d.file("c"));
  Vocabularies v1 = prepare_vocab(c, d.file("v1"));
  auto first = load_parallel(c, "train", v1, d.file("cache"), 0, 0);
  std::vector<int32_t> a(first.src->line(0), first.src->line(0) + first.src->length(0));
  // A dictionary with different ids: the cache must not be reused.
  std::filesystem::create_directories(d.file("v2"));
  write_text(d.file("v2/dict.txt"), "w11 1\nw10 1\nw9 1\nw8 1\nw7 1\nw6 1\nw5 1\nw4 1\nw3 1\nw2 1\nw1 1\nw0 1\n");
  Vocabularies v2 = load_vocab(c, d.file("v2"));
  auto second = load_parallel(c, "train", v2, d.file("cache"), 0, 0);
  std::vector<int32_t> b(second.src->line(0), second.src->line(0) + second.src->length(0));
  EXPECT_EQ(a.size(), b.size());
  EXPECT_NE(a, b);
  EXPECT_EQ(v2.src->encode(read_lines(d.file("c/train.src"))[0]), b);
  // Changed text: rebuilt too.
  write_text(d.file("c/train.src"), "w1\nw2\n");
  write_text(d.file("c/train.tgt"), "w1\nw2\n");
  EXPECT_EQ(load_parallel(c, "train", v2, d.file("cache"), 0, 0).size(), 2);
}


// fairseq-generate --remove-bpe removes "@@ " from the reference as from the
// hypothesis: a hypothesis equal to the BPE'd reference scores 100 (it
// scored ~21 against the BPE'd file as it was).
TEST(Data, BpeReferencesScoreLikeTheirHypotheses) {
  TempDir d;
  std::string iwslt = std::string(kTestDataDir) + "/iwslt14";
  Vocabularies v;
  DataConfig c = iwslt_bpe(d, &v);
  std::string ref_path = iwslt + "/bpe10k/valid.en";
  std::vector<std::string> hyps;
  for (const auto& line : read_lines(ref_path)) {
    auto ids = v.tgt->encode(line);
    hyps.push_back(v.tgt->decode(std::vector<int64_t>(ids.begin(), ids.end())));
  }
  auto refs = read_references(c, ref_path);
  EXPECT_EQ(refs, read_lines(iwslt + "/valid.en"));  // the clean text, byte for byte
  EXPECT_DOUBLE_EQ(corpus_bleu(hyps, {refs}, "none").score, 100.0);
  EXPECT_LT(corpus_bleu(hyps, {read_lines(ref_path)}, "none").score, 90.0);
  // SentencePiece data keeps its references as they are.
  DataConfig spm = c;
  spm.tokenizer = "sentencepiece";
  EXPECT_EQ(read_references(spm, ref_path), read_lines(ref_path));
}

// A FIFO hung in open() (and ignored SIGTERM), a directory read as an empty
// file, a link to /dev/zero read until memory ran out.
TEST(Data, OnlyRegularFilesAreRead) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 20, 4);
  ASSERT_EQ(::mkfifo(d.file("fifo").c_str(), 0644), 0);
  std::filesystem::create_directories(d.file("dir"));
  std::filesystem::create_symlink("/dev/zero", d.file("zero"));
  for (auto [name, kind] : {std::pair<const char*, const char*>{"fifo", "is a FIFO"},
                            {"dir", "is a directory"},
                            {"zero", "is a character device"}}) {
    std::string e = data_error([&, n = name] { read_lines(d.file(n)); });
    EXPECT_NE(e.find(std::string(name) + ": " + kind), std::string::npos) << e;
    e = data_error([&, n = name] { read_file(d.file(n)); });
    EXPECT_NE(e.find(kind), std::string::npos) << e;
  }
  // As a corpus side: the same error from load_parallel, and no hang.
  DataConfig c = toy_data(d.file("c"));
  Vocabularies v = prepare_vocab(c, d.file("run"));
  std::filesystem::remove(d.file("c/valid.src"));
  ASSERT_EQ(::mkfifo(d.file("c/valid.src").c_str(), 0644), 0);
  std::string e = data_error([&] { load_parallel(c, "valid", v, d.file("run/cache"), 0, 0); });
  EXPECT_NE(e.find("valid.src: is a FIFO"), std::string::npos) << e;
  // And as a vocabulary's training file.
  std::filesystem::remove(d.file("c/train.src"));
  std::filesystem::create_directories(d.file("c/train.src"));
  e = data_error([&] { prepare_vocab(c, d.file("run2")); });
  EXPECT_NE(e.find("train.src: is a directory"), std::string::npos) << e;
}

TEST(Data, EmptyTrainingFileIsAClearError) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 20, 4);
  write_text(d.file("c/train.src"), "\n  \n");
  for (const char* tok : {"sentencepiece", "pretokenized"}) {
    DataConfig c = toy_data(d.file("c"));
    c.tokenizer = tok;
    std::string e = data_error([&] { prepare_vocab(c, d.file(std::string("run-") + tok)); });
    EXPECT_NE(e.find("train.src: has no non-empty line to build a vocabulary from"),
              std::string::npos)
        << tok << ": " << e;
  }
}

// A 0-byte spm.model (SentencePiece "succeeded" on a full disk) kept the run
// dir failing after space was freed; it is now rebuilt.
TEST(Data, UnreadableVocabularyFileIsRebuilt) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 200, 4);
  DataConfig c = toy_data(d.file("c"));
  c.tokenizer = "sentencepiece";
  c.vocab_size = 16;
  std::filesystem::create_directories(d.file("run"));
  write_text(d.file("run/spm.model"), "");
  Vocabularies v = prepare_vocab(c, d.file("run"));
  EXPECT_EQ(v.src->size(), 16);
  EXPECT_GT(std::filesystem::file_size(d.file("run/spm.model")), 0u);
}

// A flipped byte in a token cache used to train on wrong ids silently.
TEST(Data, CorruptTokenCacheIsRebuilt) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 50, 4);
  DataConfig c = toy_data(d.file("c"));
  Vocabularies v = prepare_vocab(c, d.file("run"));
  auto ids_of = [&] {
    auto corpus = load_parallel(c, "train", v, d.file("cache"), 0, 0);
    std::vector<std::vector<int32_t>> out;
    for (int64_t i = 0; i < corpus.src->lines(); ++i)
      out.emplace_back(corpus.src->line(i), corpus.src->line(i) + corpus.src->length(i));
    return out;
  };
  auto want = ids_of();
  std::string cache = d.file("cache/train.src.bin");
  std::string good = read_file(cache);
  std::string bad = good;
  bad[bad.size() - 3] ^= 0x5a;  // inside the last line's ids
  write_text(cache, bad);
  EXPECT_EQ(ids_of(), want);
  EXPECT_EQ(read_file(cache), good);
  // The ids are what the vocabulary encodes, not just what the cache said.
  auto lines = read_lines(d.file("c/train.src"));
  EXPECT_EQ(v.src->encode(lines.back()), want.back());
}

TEST(AtomicFile, StreamsHeaderLastAndLeavesTheOldFileOnFailure) {
  TempDir d;
  std::string path = d.file("out.bin");
  write_text(path, "old contents");
  std::string big(3u << 20, 'x');  // larger than the 1 MiB staging buffer
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = static_cast<char>('a' + i % 26);
  auto write_sample = [&](AtomicFileWriter& w) {
    w.append("HDR?", 4);
    w.append("ab", 2);
    w.append(big.data(), big.size());
    w.append("tail", 4);
    w.write_at(3, "!", 1);
  };
  {
    AtomicFileWriter w(path);
    write_sample(w);
    EXPECT_EQ(w.size(), 10 + big.size());
    EXPECT_EQ(read_file(path), "old contents");  // nothing visible before commit
    // Destroyed without commit: the temp file goes, the old file stays.
  }
  EXPECT_EQ(read_file(path), "old contents");
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.file(""))) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  {
    AtomicFileWriter w(path);
    write_sample(w);
    w.commit();
  }
  EXPECT_EQ(read_file(path), "HDR!ab" + big + "tail");
  std::string e = data_error([&] { AtomicFileWriter w(d.file("no/such/dir/x")); });
  EXPECT_NE(e.find("no/such/dir/x.tmp."), std::string::npos) << e;
  // A second name: same bytes, and replacing the first name later leaves it.
  link_or_copy_atomic(path, d.file("second.bin"));
  write_file_atomic(path, "new");
  EXPECT_EQ(read_file(d.file("second.bin")), "HDR!ab" + big + "tail");
  EXPECT_EQ(read_file(path), "new");
}

// data.shape_buckets (issue 33): rows of 1..60 tokens (+ EOS), buckets of a
// 256-token budget. Lengths double up to the longest row (61 -> 16, 32, 64,
// each a multiple of 8) and rows fill the budget (16, 8, 4): every batch of
// the epoch has one of these three shapes, every row appears once, its
// tokens are the exact batch's, and filler rows add no target token.
TEST(Batcher, ShapeBucketsGiveAFewShapesAndKeepEveryRowIntact) {
  std::vector<std::vector<int32_t>> src, tgt;
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> a, b;
    for (int j = 0; j < 1 + (i * 37) % 60; ++j) a.push_back(4 + (i + j) % 50);
    for (int j = 0; j < 1 + (i * 37) % 60 * 3 / 4; ++j) b.push_back(4 + (i * 3 + j) % 50);
    src.push_back(a);
    tgt.push_back(b);
  }
  ParallelCorpus exact;
  exact.src = TokenCache::from_ids(src);
  exact.tgt = TokenCache::from_ids(tgt);
  for (int64_t k = 0; k < 300; ++k) exact.keep.push_back(k);
  ParallelCorpus c = exact;
  set_shape_buckets(c, 3, 61, 256, 0);
  EXPECT_EQ(c.shape_lengths, (std::vector<int64_t>{16, 32, 64}));
  EXPECT_EQ(c.shape_rows, (std::vector<int64_t>{16, 8, 4}));
  std::set<std::pair<int64_t, int64_t>> shapes;
  std::multiset<int64_t> seen;
  for (const auto& ks : plan_epoch(c, 256, 0, 1, 1, true)) {
    Batch b = c.make_batch(ks), e = exact.make_batch(ks);
    shapes.insert({b.src.size(0), b.src.size(1)});
    EXPECT_EQ(b.tgt_in.sizes(), b.src.sizes());
    EXPECT_EQ(b.tgt_tokens, e.tgt_tokens);
    EXPECT_EQ(b.src_tokens, e.src_tokens);
    EXPECT_EQ(b.tgt_out.ne(kPad).sum().item<int64_t>(), e.tgt_tokens);
    const int64_t R = e.src.size(0), S = e.src.size(1), T = e.tgt_in.size(1);
    // The real rows: the exact batch in the corner, padding around it.
    EXPECT_TRUE(b.src.slice(0, 0, R).slice(1, 0, S).equal(e.src));
    EXPECT_TRUE(b.tgt_in.slice(0, 0, R).slice(1, 0, T).equal(e.tgt_in));
    EXPECT_TRUE(b.tgt_out.slice(0, 0, R).slice(1, 0, T).equal(e.tgt_out));
    EXPECT_TRUE(b.src.slice(0, 0, R).slice(1, S).eq(kPad).all().item<bool>());
    // Filler rows: a lone EOS to attend to, BOS in, nothing to predict.
    for (int64_t r = R; r < b.src.size(0); ++r) {
      EXPECT_EQ(b.src[r][0].item<int64_t>(), kEos);
      EXPECT_TRUE(b.src[r].slice(0, 1).eq(kPad).all().item<bool>());
      EXPECT_EQ(b.tgt_in[r][0].item<int64_t>(), kBos);
      EXPECT_TRUE(b.tgt_out[r].eq(kPad).all().item<bool>());
    }
    seen.insert(ks.begin(), ks.end());
  }
  EXPECT_EQ(shapes, (std::set<std::pair<int64_t, int64_t>>{{16, 16}, {8, 32}, {4, 64}}));
  EXPECT_EQ(seen.size(), 300u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 300u);
  // A row longer than the largest bucket is an error naming the key.
  ParallelCorpus small = exact;
  set_shape_buckets(small, 2, 20, 256, 0);
  EXPECT_NE(test::error_of<DataError>([&] { plan_epoch(small, 256, 0, 1, 1, true); })
                .find("data.shape_buckets"),
            std::string::npos);
}

}  // namespace
}  // namespace clinic
