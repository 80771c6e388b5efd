#include "framework/data/vocab.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "framework/data/text.h"
#include "framework/errors.h"
#include "framework/logging.h"
#include "framework/model.h"

namespace fs = std::filesystem;

namespace clinic {

std::vector<std::vector<int32_t>> Tokenizer::encode_lines(
    const std::vector<std::string>& lines) {
  std::vector<std::vector<int32_t>> out;
  out.reserve(lines.size());
  for (const auto& l : lines) out.push_back(encode(l));
  return out;
}

namespace {
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::istringstream in(s);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}
}  // namespace

SpmTokenizer::SpmTokenizer(const std::string& model_path) : model_(model_path) {
  if (!fs::exists(model_path))
    throw DataError(model_path + ": SentencePiece model not found");
  hash_ = hash_file(model_path);
  proc_ = std::make_unique<CoProcess>(
      std::vector<std::string>{helper_path("clinic-spm"), "serve", model_path});
  std::string ready;
  try {
    ready = proc_->read_line();
  } catch (const std::exception&) {
    throw DataError(model_path + ": clinic-spm could not load the model");
  }
  if (ready.rfind("READY ", 0) != 0)
    throw DataError(model_path + ": unexpected clinic-spm greeting '" + ready + "'");
  size_ = std::stoll(ready.substr(6));
}

std::vector<int32_t> SpmTokenizer::encode(const std::string& line) {
  return parse_ids(proc_->request("E " + line));
}

std::vector<std::vector<int32_t>> SpmTokenizer::encode_lines(
    const std::vector<std::string>& lines) {
  // One child run over a file beats a pipe round trip per line.
  std::string dir = fs::temp_directory_path().string();
  std::string in = fmt::format("{}/clinic-enc-{}.txt", dir, ::getpid());
  std::string out = in + ".ids";
  {
    std::ofstream f(in);
    for (const auto& l : lines) f << l << "\n";
  }
  auto r = run_command({helper_path("clinic-spm"), "encode", model_, in, out});
  std::vector<std::vector<int32_t>> ids;
  if (r.exit_code == 0) {
    std::ifstream f(out);
    std::string l;
    while (std::getline(f, l)) ids.push_back(parse_ids(l));
  }
  fs::remove(in);
  fs::remove(out);
  if (r.exit_code != 0 || ids.size() != lines.size())
    throw DataError(fmt::format("clinic-spm encode failed: {}", r.err));
  return ids;
}

std::string SpmTokenizer::decode(const std::vector<int64_t>& ids) {
  std::string s = "D";
  for (auto id : ids)
    if (id > kEos) s += " " + std::to_string(id);
  return proc_->request(s);
}

void SpmTokenizer::train(const std::vector<std::string>& inputs,
                         const std::string& model_path, const DataConfig& c) {
  std::string prefix = model_path.substr(0, model_path.size() - 6);  // .model
  std::string input;
  for (const auto& i : inputs) input += (input.empty() ? "" : ",") + i;
  std::vector<std::string> argv = {
      helper_path("clinic-spm"), "train", "--input=" + input,
      "--model_prefix=" + prefix + ".tmp",
      fmt::format("--vocab_size={}", c.vocab_size),
      "--model_type=" + c.spm_model_type,
      fmt::format("--character_coverage={}", c.character_coverage),
      "--pad_id=0", "--unk_id=1", "--bos_id=2", "--eos_id=3",
      "--input_sentence_size=2000000", "--shuffle_input_sentence=true",
      "--num_threads=2", "--minloglevel=2"};
  if (c.spm_normalization == "identity") {
    // Lossless on pre-tokenized text: decode(encode(x)) == x byte for byte.
    argv.push_back("--normalization_rule_name=identity");
    argv.push_back("--remove_extra_whitespaces=false");
  }
  auto r = run_command(argv);
  if (r.exit_code != 0) {
    std::string msg = r.err;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    auto pos = msg.rfind('\n');
    std::string last = pos == std::string::npos ? msg : msg.substr(pos + 1);
    throw DataError(fmt::format(
        "training the SentencePiece vocabulary (data.vocab_size = {}) on {} "
        "failed: {}{}",
        c.vocab_size, input, last,
        last.find("Vocabulary size") != std::string::npos
            ? " (lower data.vocab_size)"
            : ""));
  }
  // SentencePiece reports success even when its model write hit a full disk
  // (a 0-byte spm.model then kept the run dir failing after space was freed):
  // load the new model before it gets its name.
  std::string tmp_model = prefix + ".tmp.model";
  try {
    SpmTokenizer check(tmp_model);
  } catch (const DataError&) {
    std::error_code ec;
    fs::remove(tmp_model, ec);
    fs::remove(prefix + ".tmp.vocab", ec);
    throw DataError(fmt::format("{}: SentencePiece wrote an unreadable model (disk full?); "
                                "nothing was kept",
                                model_path));
  }
  fs::rename(prefix + ".tmp.vocab", prefix + ".vocab");
  fs::rename(tmp_model, model_path);
}

DictionaryTokenizer::DictionaryTokenizer(const std::string& dict_path)
    : path_(dict_path) {
  tokens_ = {"<pad>", "<unk>", "<s>", "</s>"};
  for (size_t i = 0; i < tokens_.size(); ++i)
    index_[tokens_[i]] = static_cast<int32_t>(i);
  auto lines = read_lines(dict_path);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto parts = split_ws(lines[i]);
    if (parts.size() != 2)
      throw DataError(fmt::format("{}:{}: expected 'token count'", dict_path, i + 1));
    index_[parts[0]] = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(parts[0]);
  }
  hash_ = hash_file(dict_path);
}

void DictionaryTokenizer::build(const std::vector<std::string>& inputs,
                                const std::string& dict_path) {
  std::map<std::string, int64_t> counts;
  for (const auto& f : inputs)
    for (const auto& l : read_lines(f))
      for (const auto& w : split_ws(l)) ++counts[w];
  std::vector<std::pair<std::string, int64_t>> v(counts.begin(), counts.end());
  std::stable_sort(v.begin(), v.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  for (const auto& [w, n] : v) out += fmt::format("{} {}\n", w, n);
  write_file_atomic(dict_path, out);
}

std::vector<int32_t> DictionaryTokenizer::encode(const std::string& line) {
  std::vector<int32_t> ids;
  for (const auto& w : split_ws(line)) {
    auto it = index_.find(w);
    ids.push_back(it == index_.end() ? static_cast<int32_t>(kUnk) : it->second);
  }
  return ids;
}

std::string DictionaryTokenizer::decode(const std::vector<int64_t>& ids) {
  std::string s;
  for (auto id : ids) {
    if (id <= kEos && id != kUnk) continue;
    if (!s.empty()) s += ' ';
    s += id < static_cast<int64_t>(tokens_.size()) ? tokens_[id] : "<unk>";
  }
  return remove_bpe(s);
}

std::string remove_bpe(const std::string& s) {
  // "@@ " joins a piece to the next one.
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 3, "@@ ") == 0) {
      i += 2;
      continue;
    }
    out += s[i];
  }
  if (out.size() >= 2 && out.compare(out.size() - 2, 2, "@@") == 0)
    out.resize(out.size() - 2);
  return out;
}

std::vector<std::string> read_references(const DataConfig& cfg, const std::string& path) {
  auto lines = read_lines(path);
  if (cfg.tokenizer == "pretokenized")
    for (auto& l : lines) l = remove_bpe(l);
  return lines;
}

std::string split_path(const DataConfig& cfg, const std::string& split,
                       const std::string& lang) {
  return (fs::path(resolve_data_path(cfg.dir)) / (split + "." + lang)).string();
}

namespace {
std::string vocab_file(const DataConfig& c, const std::string& dir,
                       const std::string& lang) {
  bool spm = c.tokenizer == "sentencepiece";
  std::string stem = spm ? "spm" : "dict";
  std::string name = c.joint_vocab ? stem : stem + "." + lang;
  return (fs::path(dir) / (name + (spm ? ".model" : ".txt"))).string();
}

std::shared_ptr<Tokenizer> open_vocab(const DataConfig& c,
                                      const std::string& file) {
  if (c.tokenizer == "sentencepiece") return std::make_shared<SpmTokenizer>(file);
  return std::make_shared<DictionaryTokenizer>(file);
}
}  // namespace

Vocabularies load_vocab(const DataConfig& c, const std::string& dir) {
  Vocabularies v;
  v.joint = c.joint_vocab;
  v.src = open_vocab(c, vocab_file(c, dir, c.src_lang));
  v.tgt = c.joint_vocab ? v.src : open_vocab(c, vocab_file(c, dir, c.tgt_lang));
  return v;
}

Vocabularies prepare_vocab(const DataConfig& c, const std::string& dir) {
  fs::create_directories(dir);
  auto ensure = [&](const std::vector<std::string>& langs) {
    std::string file = vocab_file(c, dir, langs.front());
    if (fs::exists(file)) {
      try {
        return open_vocab(c, file);
      } catch (const DataError& e) {
        // No checkpoint depends on it yet (a resume restores the vocabulary
        // from its checkpoint first): build it again.
        log()->warn("[vocab] {} is unreadable ({}); building it again", file, e.what());
      }
    }
    std::vector<std::string> inputs;
    for (const auto& l : langs) {
      std::string p = split_path(c, c.train, l);
      if (!fs::exists(p))
        throw DataError(fmt::format(
            "{}: training file not found (data.dir = {}); point data.dir at a "
            "directory holding {}.{} and {}.{} (--set data.dir=DIR)",
            p, c.dir, c.train, c.src_lang, c.train, c.tgt_lang));
      auto lines = read_lines(p);  // regular file, UTF-8, file:line on errors
      if (std::all_of(lines.begin(), lines.end(), [](const std::string& s) {
            return s.find_first_not_of(" \t") == std::string::npos;
          }))
        throw DataError(fmt::format("{}: has no non-empty line to build a vocabulary from", p));
      inputs.push_back(p);
    }
    log()->info("[vocab] building {} from {}", file, fmt::join(inputs, ", "));
    if (c.tokenizer == "sentencepiece")
      SpmTokenizer::train(inputs, file, c);
    else
      DictionaryTokenizer::build(inputs, file);
    return open_vocab(c, file);
  };
  Vocabularies v;
  v.joint = c.joint_vocab;
  if (c.joint_vocab) {
    v.src = v.tgt = ensure({c.src_lang, c.tgt_lang});
  } else {
    v.src = ensure({c.src_lang});
    v.tgt = ensure({c.tgt_lang});
  }
  log()->info("[vocab] {} {} entries, hash {}", v.src->path(), v.src->size(),
              hex64(v.src->hash()));
  if (!v.joint)
    log()->info("[vocab] {} {} entries, hash {}", v.tgt->path(), v.tgt->size(),
                hex64(v.tgt->hash()));
  return v;
}

}  // namespace clinic
