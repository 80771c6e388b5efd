#pragma once
// Vocabularies. Ids 0..3 are always pad, unk, bos, eos (framework/model.h).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/config.h"
#include "framework/data/subprocess.h"

namespace clinic {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// One line -> ids (no EOS).
  virtual std::vector<int32_t> encode(const std::string& line) = 0;
  /// Every line of a file -> ids; faster than encode() per line.
  virtual std::vector<std::vector<int32_t>> encode_lines(
      const std::vector<std::string>& lines);
  /// ids (specials skipped) -> detokenised text.
  virtual std::string decode(const std::vector<int64_t>& ids) = 0;
  virtual int64_t size() const = 0;
  /// Identity of the vocabulary (hash of its model/dictionary file).
  virtual uint64_t hash() const = 0;
  /// The file this vocabulary lives in.
  virtual std::string path() const = 0;
};

/// SentencePiece through the clinic-spm co-process.
class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(const std::string& model_path);
  std::vector<int32_t> encode(const std::string& line) override;
  std::vector<std::vector<int32_t>> encode_lines(
      const std::vector<std::string>& lines) override;
  std::string decode(const std::vector<int64_t>& ids) override;
  int64_t size() const override { return size_; }
  uint64_t hash() const override { return hash_; }
  std::string path() const override { return model_; }

  /// Train a model on `inputs` (train split files); turns SentencePiece's
  /// errors (e.g. a vocabulary too large for the data) into DataError.
  static void train(const std::vector<std::string>& inputs,
                    const std::string& model_path, const DataConfig& cfg);

 private:
  std::string model_;
  std::unique_ptr<CoProcess> proc_;
  int64_t size_ = 0;
  uint64_t hash_ = 0;
};

/// Whitespace tokens of already-segmented text (fairseq BPE with "@@ "
/// continuation markers); decode joins the markers back.
class DictionaryTokenizer : public Tokenizer {
 public:
  /// Load a fairseq-style dict file: "token count" per line.
  explicit DictionaryTokenizer(const std::string& dict_path);
  static void build(const std::vector<std::string>& inputs,
                    const std::string& dict_path);
  std::vector<int32_t> encode(const std::string& line) override;
  std::string decode(const std::vector<int64_t>& ids) override;
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()); }
  uint64_t hash() const override { return hash_; }
  std::string path() const override { return path_; }

 private:
  std::string path_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> index_;
  uint64_t hash_ = 0;
};

/// fairseq's --remove-bpe ("@@ "): "pyrami@@ de" -> "pyramide"; a trailing
/// "@@" is dropped.
std::string remove_bpe(const std::string& line);

/// Reference lines for BLEU, prepared like the hypotheses: with the
/// pretokenized tokenizer (fairseq BPE), "@@ " is removed from the
/// references too, as fairseq-generate --remove-bpe does for both sides, so
/// a BPE'd reference file scores like the clean one.
std::vector<std::string> read_references(const DataConfig& cfg, const std::string& path);

struct Vocabularies {
  std::shared_ptr<Tokenizer> src, tgt;  // the same object when joint
  bool joint = false;
};

/// Split files of the corpus: <dir>/<split>.<lang>.
std::string split_path(const DataConfig& cfg, const std::string& split,
                       const std::string& lang);
/// Load the vocabularies in `vocab_dir`, training them from the train split
/// first when missing. Logs what it did.
Vocabularies prepare_vocab(const DataConfig& cfg, const std::string& vocab_dir);
/// Load existing vocabularies (translate/eval from a run dir); no training.
Vocabularies load_vocab(const DataConfig& cfg, const std::string& vocab_dir);

}  // namespace clinic
