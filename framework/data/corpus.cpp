#include "framework/data/corpus.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <filesystem>

#include "framework/data/text.h"
#include "framework/errors.h"
#include "framework/logging.h"

namespace fs = std::filesystem;

namespace clinic {
namespace {

constexpr char kCacheMagic[8] = {'C', 'L', 'N', 'C', 'I', 'D', 'S', '\0'};
// Version 2 adds a checksum of the offsets and ids: a flipped byte used to
// train silently on wrong tokens or fail later with "index out of range".
constexpr uint32_t kCacheVersion = 2;

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t vocab_hash;
  uint64_t text_hash;
  uint64_t lines;
  uint64_t tokens;
  uint64_t payload_hash;  // FNV-1a of everything after the header
};

bool header_matches(const std::string& path, uint64_t vocab_hash,
                    uint64_t text_hash, std::string* why) {
  CacheHeader h{};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  size_t got = std::fread(&h, sizeof h, 1, f);
  std::fclose(f);
  if (got != 1 || std::memcmp(h.magic, kCacheMagic, 8) != 0 ||
      h.version != kCacheVersion) {
    *why = "unreadable or old format";
    return false;
  }
  if (h.vocab_hash != vocab_hash) {
    *why = "built with another vocabulary";
    return false;
  }
  if (h.text_hash != text_hash) {
    *why = "the text changed";
    return false;
  }
  uint64_t expect = sizeof h + (h.lines + 1) * 8 + h.tokens * 4;
  if (fs::file_size(path) != expect) {
    *why = "truncated";
    return false;
  }
  // FNV-1a over the payload: ~1 GB/s, 40 ms for IWSLT'14's training side.
  std::string bytes = read_file(path);
  if (hash_bytes(bytes.data() + sizeof h, bytes.size() - sizeof h) != h.payload_hash) {
    *why = "checksum mismatch";
    return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<TokenCache> TokenCache::from_ids(
    const std::vector<std::vector<int32_t>>& ids) {
  auto c = std::shared_ptr<TokenCache>(new TokenCache());
  c->own_offsets_.push_back(0);
  for (const auto& l : ids) {
    c->own_ids_.insert(c->own_ids_.end(), l.begin(), l.end());
    c->own_offsets_.push_back(c->own_ids_.size());
  }
  c->offsets_ = c->own_offsets_.data();
  c->ids_ = c->own_ids_.data();
  c->n_ = static_cast<int64_t>(ids.size());
  return c;
}

std::shared_ptr<TokenCache> TokenCache::open_or_build(
    const std::string& text_path, const std::string& cache_path,
    Tokenizer& tok) {
  uint64_t text_hash = hash_file(text_path);
  std::string why;
  if (!fs::exists(cache_path) ||
      !header_matches(cache_path, tok.hash(), text_hash, &why)) {
    if (!why.empty())
      log()->info("[data] rebuilding {} ({})", cache_path, why);
    auto lines = read_lines(text_path);  // UTF-8 checked with file:line
    auto ids = tok.encode_lines(lines);
    CacheHeader h{};
    std::memcpy(h.magic, kCacheMagic, 8);
    h.version = kCacheVersion;
    h.vocab_hash = tok.hash();
    h.text_hash = text_hash;
    h.lines = ids.size();
    std::vector<uint64_t> offsets{0};
    for (const auto& l : ids) offsets.push_back(offsets.back() + l.size());
    h.tokens = offsets.back();
    std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
    bytes.append(reinterpret_cast<const char*>(offsets.data()),
                 offsets.size() * 8);
    for (const auto& l : ids)
      bytes.append(reinterpret_cast<const char*>(l.data()), l.size() * 4);
    h.payload_hash = hash_bytes(bytes.data() + sizeof h, bytes.size() - sizeof h);
    std::memcpy(bytes.data(), &h, sizeof h);
    write_file_atomic(cache_path, bytes);
    log()->info("[data] cached {} lines, {} tokens of {} in {}", h.lines,
                h.tokens, text_path, cache_path);
  }
  int fd = ::open(cache_path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(cache_path + ": cannot open cache");
  struct stat st {};
  ::fstat(fd, &st);
  auto c = std::shared_ptr<TokenCache>(new TokenCache());
  c->map_size_ = static_cast<size_t>(st.st_size);
  c->map_ = ::mmap(nullptr, c->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (c->map_ == MAP_FAILED) {
    c->map_ = nullptr;
    throw DataError(cache_path + ": mmap failed");
  }
  const auto* h = static_cast<const CacheHeader*>(c->map_);
  c->n_ = static_cast<int64_t>(h->lines);
  c->offsets_ = reinterpret_cast<const uint64_t*>(h + 1);
  c->ids_ = reinterpret_cast<const int32_t*>(c->offsets_ + h->lines + 1);
  return c;
}

TokenCache::~TokenCache() {
  if (map_) ::munmap(map_, map_size_);
}

size_t ParallelCorpus::shape_bucket(int64_t len) const {
  for (size_t i = 0; i < shape_lengths.size(); ++i)
    if (len <= shape_lengths[i]) return i;
  throw DataError(fmt::format("a row of {} tokens is longer than the largest data.shape_buckets "
                              "length {}",
                              len, shape_lengths.empty() ? 0 : shape_lengths.back()));
}

void set_shape_buckets(ParallelCorpus& c, int64_t n, int64_t longest, int64_t max_tokens,
                       int64_t max_sentences) {
  c.shape_lengths.clear();
  c.shape_rows.clear();
  for (int64_t k = n - 1; k >= 0; --k) {
    int64_t len = (longest + (int64_t{1} << k) - 1) >> k;  // ceil(longest / 2^k)
    len = (len + 7) / 8 * 8;
    if (!c.shape_lengths.empty() && len <= c.shape_lengths.back()) continue;
    int64_t rows = max_tokens / len;
    if (max_sentences > 0) rows = std::min(rows, max_sentences);
    if (rows < 1)
      throw ConfigError(fmt::format("data.shape_buckets: a bucket of length {} holds no row under "
                                    "data.max_tokens = {}",
                                    len, max_tokens));
    c.shape_lengths.push_back(len);
    c.shape_rows.push_back(rows);
  }
}

Batch ParallelCorpus::make_batch(const std::vector<int64_t>& ks) const {
  int64_t B = static_cast<int64_t>(ks.size());
  int64_t S = 0, T = 0;
  for (auto k : ks) {
    S = std::max(S, src_len(k));
    T = std::max(T, tgt_len(k));
  }
  if (source_aligned) T = S;
  if (!shape_lengths.empty() && B > 0) {
    const size_t i = shape_bucket(std::max(S, T));
    S = T = shape_lengths[i];
    B = std::max(B, shape_rows[i]);
  }
  Batch b;
  b.src = torch::full({B, S}, kPad, torch::kLong);
  b.tgt_in = torch::full({B, T}, kPad, torch::kLong);
  b.tgt_out = torch::full({B, T}, kPad, torch::kLong);
  auto s = b.src.accessor<int64_t, 2>();
  auto ti = b.tgt_in.accessor<int64_t, 2>();
  auto to = b.tgt_out.accessor<int64_t, 2>();
  const int64_t real = static_cast<int64_t>(ks.size());
  for (int64_t r = 0; r < real; ++r) {
    int64_t line = keep[ks[r]];
    b.ids.push_back(line);
    int64_t ls = src->length(line), lt = tgt->length(line);
    const int32_t* sp = src->line(line);
    const int32_t* tp = tgt->line(line);
    for (int64_t i = 0; i < ls; ++i) s[r][i] = sp[i];
    s[r][ls] = kEos;
    b.src_tokens += ls + 1;
    if (source_aligned) {  // target (+ EOS) cut or padded to the source's ls + 1
      int64_t n = std::min(lt + 1, ls + 1);
      for (int64_t i = 0; i < n; ++i) to[r][i] = i < lt ? tp[i] : kEos;
      b.tgt_tokens += n;
      continue;
    }
    ti[r][0] = kBos;
    for (int64_t i = 0; i < lt; ++i) {
      ti[r][i + 1] = tp[i];
      to[r][i] = tp[i];
    }
    to[r][lt] = kEos;
    b.tgt_tokens += lt + 1;
  }
  // Filler rows of a shape bucket: one EOS to attend to (an all-pad source
  // would softmax over no key), BOS in, nothing to predict.
  for (int64_t r = real; r < B; ++r) {
    s[r][0] = kEos;
    if (!source_aligned) ti[r][0] = kBos;
  }
  if (source_aligned) b.tgt_in = b.tgt_out;
  return b;
}

namespace {
std::vector<std::vector<int64_t>> parse_rows(const std::string& text, const char* key,
                                             int64_t vocab) {
  std::vector<std::vector<int64_t>> rows;
  std::string row;
  std::istringstream in(text);
  while (std::getline(in, row, ';')) {
    std::istringstream toks(row);
    rows.emplace_back();
    for (std::string t; toks >> t;) {
      char* end = nullptr;
      long long v = std::strtoll(t.c_str(), &end, 10);
      if (*end || v < 0 || v >= vocab)
        throw ConfigError(fmt::format("{}: '{}' is not a token id in [0, {}) (data.fixed_vocab)",
                                      key, t, vocab));
      rows.back().push_back(v + kFixedTokenOffset);
    }
    if (rows.back().empty()) throw ConfigError(fmt::format("{}: empty row in '{}'", key, text));
  }
  if (rows.empty()) throw ConfigError(fmt::format("{}: no rows (expected e.g. \"1 0; 0 1\")", key));
  for (const auto& r : rows)
    if (r.size() != rows.front().size())
      throw ConfigError(fmt::format("{}: rows of different lengths in '{}'", key, text));
  return rows;
}
torch::Tensor to_tensor(const std::vector<std::vector<int64_t>>& rows) {
  auto t = torch::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())},
                        torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t;
}
}  // namespace

Batch fixed_batch(const DataConfig& cfg) {
  auto in = parse_rows(cfg.fixed_input, "data.fixed_input", cfg.fixed_vocab);
  auto out = parse_rows(cfg.fixed_target, "data.fixed_target", cfg.fixed_vocab);
  if (in.size() != out.size() || in[0].size() != out[0].size())
    throw ConfigError(fmt::format("data.fixed_target has {}x{} tokens but data.fixed_input {}x{}",
                                  out.size(), out[0].size(), in.size(), in[0].size()));
  Batch b;
  b.src = to_tensor(in);
  b.tgt_in = b.src;
  b.tgt_out = to_tensor(out);
  b.src_tokens = b.tgt_tokens = b.src.numel();
  for (size_t i = 0; i < in.size(); ++i) b.ids.push_back(static_cast<int64_t>(i));
  return b;
}

ParallelCorpus load_parallel(const DataConfig& cfg, const std::string& split,
                             const Vocabularies& vocab,
                             const std::string& cache_dir, int64_t max_src,
                             int64_t max_tgt, FilterStats* stats) {
  std::string sp = split_path(cfg, split, cfg.src_lang);
  std::string tp = split_path(cfg, split, cfg.tgt_lang);
  for (const auto& p : {sp, tp}) {
    if (!fs::exists(p))
      throw DataError(fmt::format("{}: file not found (data.dir = {}, split '{}')",
                                  p, cfg.dir, split));
    require_regular_file(p);
  }
  fs::create_directories(cache_dir);
  auto cache = [&](const std::string& lang) {
    return (fs::path(cache_dir) / (split + "." + lang + ".bin")).string();
  };
  ParallelCorpus c;
  c.src = TokenCache::open_or_build(sp, cache(cfg.src_lang), *vocab.src);
  c.tgt = TokenCache::open_or_build(tp, cache(cfg.tgt_lang), *vocab.tgt);
  if (c.src->lines() != c.tgt->lines())
    throw DataError(fmt::format(
        "source and target differ in line count: {} has {} lines, {} has {}",
        sp, c.src->lines(), tp, c.tgt->lines()));
  FilterStats st;
  st.total = c.src->lines();
  for (int64_t i = 0; i < st.total; ++i) {
    int64_t ls = c.src->length(i), lt = c.tgt->length(i);
    if (ls == 0 || lt == 0) {
      ++st.empty;
      continue;
    }
    if ((max_src > 0 && ls + 1 > max_src) || (max_tgt > 0 && lt + 1 > max_tgt)) {
      ++st.too_long;
      continue;
    }
    c.keep.push_back(i);
  }
  log()->info("[data] {}: {} pairs, {} kept, {} empty skipped, {} over length "
              "limits ({} / {}) filtered",
              split, st.total, c.keep.size(), st.empty, st.too_long, max_src,
              max_tgt);
  if (c.keep.empty())
    throw DataError(fmt::format("{} / {}: no usable sentence pairs", sp, tp));
  if (stats) *stats = st;
  return c;
}

}  // namespace clinic
