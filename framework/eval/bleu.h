#pragma once
// Corpus BLEU as sacreBLEU 2.x computes it: 13a tokenizer, clipped n-gram
// counts up to 4, closest reference length, brevity penalty, 'exp'
// smoothing for orders without matches.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace clinic {

/// sacreBLEU's tokenizer_13a (mteval-v13a): unescape &quot; &amp; &lt; &gt;,
/// split punctuation and symbols, keep periods/commas inside numbers.
std::string tokenize_13a(const std::string& line);

/// sacreBLEU's tokenizer_intl (mteval-v14 international): split Unicode
/// punctuation not between digits, and every symbol (ICU character classes).
std::string tokenize_intl(const std::string& line);

struct BleuStats {
  std::array<int64_t, 4> correct{}, total{};
  int64_t sys_len = 0, ref_len = 0;
};

struct BleuResult {
  double score = 0;                // 0..100
  std::array<double, 4> precisions{};
  double bp = 0;
  int64_t sys_len = 0, ref_len = 0;
  std::string signature;
  /// "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len =
  /// 17 ref_len = 18)", sacreBLEU's score line.
  std::string format() const;
};

/// refs[k][i] is reference k of hypothesis i. tokenize: "13a" | "intl" | "none".
BleuResult corpus_bleu(const std::vector<std::string>& hyps,
                       const std::vector<std::vector<std::string>>& refs,
                       const std::string& tokenize = "13a",
                       bool lowercase = false);

}  // namespace clinic
