#pragma once
// Applying learned BPE merges to tokenized text, as subword-nmt's
// apply_bpe.py does (Sennrich et al. 2016; the segmentation fairseq's
// examples/translation/prepare-iwslt14.sh writes): each space-separated word is
// split into characters (Unicode code points), the last carrying the
// end-of-word mark "</w>" (codes version 0.2; version 0.1 appends "</w>" as a
// symbol of its own), and the adjacent pair with the lowest merge rank is
// merged everywhere, left to right, until no pair has a rank. Every segment but
// a word's last gets the "@@" separator. No glossaries, no vocabulary filter,
// no dropout: apply_bpe.py's defaults.
#include <string>
#include <unordered_map>
#include <vector>

namespace clinic {

class BpeCodes {
 public:
  /// Reads a codes file ("#version: 0.2" header, then "left right" per line,
  /// highest priority first). Throws DataError naming file:line on a line that
  /// is not two symbols.
  explicit BpeCodes(const std::string& path);
  /// One line: leading and trailing spaces kept, runs of spaces inside
  /// collapsed (apply_bpe.py's process_line).
  std::string apply_line(const std::string& line);
  size_t merges() const { return rank_.size(); }

 private:
  const std::vector<std::string>& segment(const std::string& word);
  bool v01_ = false;
  std::unordered_map<std::string, size_t> rank_;  // "left\x01right" -> rank
  std::unordered_map<std::string, std::vector<std::string>> cache_;
};

}  // namespace clinic
