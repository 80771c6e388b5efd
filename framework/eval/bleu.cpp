#include "framework/eval/bleu.h"

#include <fmt/format.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace clinic {
namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size())
    s.replace(p, from.size(), to);
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string t; in >> t;) w.push_back(t);
  return w;
}

std::string lower_ascii(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

using Counts = std::map<std::vector<std::string>, int64_t>;
Counts ngrams(const std::vector<std::string>& w, size_t n) {
  Counts c;
  for (size_t i = 0; i + n <= w.size(); ++i)
    ++c[std::vector<std::string>(w.begin() + i, w.begin() + i + n)];
  return c;
}

}  // namespace

std::string tokenize_13a(const std::string& input) {
  // Patterns of sacrebleu/tokenizers/tokenizer_13a.py and tokenizer_re.py,
  // applied with the same left-to-right, non-overlapping substitution.
  static const std::regex kSymbols(R"(([\{-\~\[-\`\x20-\&\(-\+\:-\@\/]))");
  static const std::regex kPeriodAfter(R"(([^0-9])([\.,]))");
  static const std::regex kPeriodBefore(R"(([\.,])([^0-9]))");
  static const std::regex kDash(R"(([0-9])(-))");
  std::string line = input;
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  line = std::regex_replace(line, kSymbols, " $1 ");
  line = std::regex_replace(line, kPeriodAfter, "$1 $2 ");
  line = std::regex_replace(line, kPeriodBefore, " $1 $2");
  line = std::regex_replace(line, kDash, "$1 $2 ");
  std::string out;
  for (const auto& w : words(line)) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::string tokenize_intl(const std::string& line) {
  // sacrebleu/tokenizers/tokenizer_intl.py (mteval-v14 international):
  //   (\P{N})(\p{P}) -> '\1 \2 ';  (\p{P})(\P{N}) -> ' \1 \2';  (\p{S}) -> ' \1 '
  // applied as non-overlapping left-to-right substitutions on code points.
  std::vector<UChar32> c;
  for (int32_t i = 0, n = static_cast<int32_t>(line.size()); i < n;) {
    UChar32 cp;
    U8_NEXT(reinterpret_cast<const uint8_t*>(line.data()), i, n, cp);
    c.push_back(cp < 0 ? 0xFFFD : cp);
  }
  auto cat = [](UChar32 x) { return U_GET_GC_MASK(x); };
  auto is_p = [&](UChar32 x) { return (cat(x) & U_GC_P_MASK) != 0; };
  auto is_n = [&](UChar32 x) { return (cat(x) & U_GC_N_MASK) != 0; };
  auto is_s = [&](UChar32 x) { return (cat(x) & U_GC_S_MASK) != 0; };
  const UChar32 sp = ' ';
  auto pass = [&](auto match, auto emit) {
    std::vector<UChar32> out;
    for (size_t i = 0; i < c.size();) {
      if (i + 1 < c.size() && match(c[i], c[i + 1])) {
        emit(out, c[i], c[i + 1]);
        i += 2;
      } else {
        out.push_back(c[i++]);
      }
    }
    c = std::move(out);
  };
  pass([&](UChar32 a, UChar32 b) { return !is_n(a) && is_p(b); },
       [&](std::vector<UChar32>& o, UChar32 a, UChar32 b) { o.insert(o.end(), {a, sp, b, sp}); });
  pass([&](UChar32 a, UChar32 b) { return is_p(a) && !is_n(b); },
       [&](std::vector<UChar32>& o, UChar32 a, UChar32 b) { o.insert(o.end(), {sp, a, sp, b}); });
  std::vector<UChar32> out;
  for (UChar32 x : c) {
    if (is_s(x))
      out.insert(out.end(), {sp, x, sp});
    else
      out.push_back(x);
  }
  // ' '.join(line.split()): split on Unicode white space.
  std::string result, word;
  auto flush = [&] {
    if (word.empty()) return;
    if (!result.empty()) result += ' ';
    result += word;
    word.clear();
  };
  for (UChar32 x : out) {
    if (u_isUWhiteSpace(x)) {
      flush();
      continue;
    }
    char buf[4];
    int32_t len = 0;
    UBool err = false;
    U8_APPEND(reinterpret_cast<uint8_t*>(buf), len, 4, x, err);
    (void)err;  // a valid code point always fits in 4 bytes
    word.append(buf, static_cast<size_t>(len));
  }
  flush();
  return result;
}

BleuResult corpus_bleu(const std::vector<std::string>& hyps,
                       const std::vector<std::vector<std::string>>& refs,
                       const std::string& tokenize, bool lowercase) {
  if (tokenize != "13a" && tokenize != "intl" && tokenize != "none")
    throw std::invalid_argument("BLEU tokenizer must be 13a, intl or none, got " + tokenize);
  for (const auto& r : refs)
    if (r.size() != hyps.size())
      throw std::invalid_argument(fmt::format(
          "BLEU: {} hypotheses but a reference set has {} lines", hyps.size(), r.size()));
  auto prep = [&](const std::string& s) {
    std::string t = lowercase ? lower_ascii(s) : s;
    return words(tokenize == "13a" ? tokenize_13a(t) : tokenize == "intl" ? tokenize_intl(t) : t);
  };
  BleuStats st;
  for (size_t i = 0; i < hyps.size(); ++i) {
    auto h = prep(hyps[i]);
    int64_t hl = static_cast<int64_t>(h.size());
    int64_t best_ref = -1;
    std::array<Counts, 4> max_ref;
    for (const auto& set : refs) {
      auto r = prep(set[i]);
      int64_t rl = static_cast<int64_t>(r.size());
      // Closest reference length; ties go to the shorter one.
      if (best_ref < 0 || std::abs(rl - hl) < std::abs(best_ref - hl) ||
          (std::abs(rl - hl) == std::abs(best_ref - hl) && rl < best_ref))
        best_ref = rl;
      for (size_t n = 1; n <= 4; ++n)
        for (const auto& [g, c] : ngrams(r, n))
          max_ref[n - 1][g] = std::max(max_ref[n - 1][g], c);
    }
    st.sys_len += hl;
    st.ref_len += std::max<int64_t>(best_ref, 0);
    for (size_t n = 1; n <= 4; ++n) {
      for (const auto& [g, c] : ngrams(h, n)) {
        auto it = max_ref[n - 1].find(g);
        st.correct[n - 1] += std::min(c, it == max_ref[n - 1].end() ? 0 : it->second);
      }
      st.total[n - 1] += std::max<int64_t>(hl - static_cast<int64_t>(n) + 1, 0);
    }
  }
  BleuResult r;
  r.sys_len = st.sys_len;
  r.ref_len = st.ref_len;
  double smooth = 1.0;
  for (size_t n = 0; n < 4; ++n) {
    if (st.total[n] == 0) break;
    if (st.correct[n] == 0) {
      smooth *= 2;
      r.precisions[n] = 100.0 / (smooth * st.total[n]);
    } else {
      r.precisions[n] = 100.0 * st.correct[n] / st.total[n];
    }
  }
  r.bp = st.sys_len < st.ref_len
             ? (st.sys_len > 0 ? std::exp(1.0 - static_cast<double>(st.ref_len) / st.sys_len) : 0.0)
             : 1.0;
  double log_sum = 0;
  for (double p : r.precisions) log_sum += p > 0 ? std::log(p) : -9999999999.0;
  r.score = r.bp * std::exp(log_sum / 4);
  r.signature = fmt::format("nrefs:{}|case:{}|eff:no|tok:{}|smooth:exp|version:clinic-0.1",
                            refs.size(), lowercase ? "lc" : "mixed", tokenize);
  return r;
}

std::string BleuResult::format() const {
  return fmt::format(
      "BLEU = {:.2f} {:.1f}/{:.1f}/{:.1f}/{:.1f} (BP = {:.3f} ratio = {:.3f} "
      "hyp_len = {} ref_len = {})",
      score, precisions[0], precisions[1], precisions[2], precisions[3], bp,
      ref_len > 0 ? static_cast<double>(sys_len) / ref_len : 0.0, sys_len, ref_len);
}

}  // namespace clinic
