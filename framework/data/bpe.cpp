#include "framework/data/bpe.h"

#include <fmt/format.h>

#include <limits>

#include "framework/data/text.h"
#include "framework/errors.h"

namespace clinic {
namespace {

std::string key(const std::string& a, const std::string& b) { return a + '\x01' + b; }

// UTF-8 code points of a word (the input was checked to be UTF-8 on reading).
std::vector<std::string> code_points(const std::string& w) {
  std::vector<std::string> out;
  for (size_t i = 0; i < w.size();) {
    unsigned char c = static_cast<unsigned char>(w[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
    out.push_back(w.substr(i, n));
    i += n;
  }
  return out;
}

// apply_bpe.py strips these three characters from a line's ends.
bool strip_char(char c) { return c == ' ' || c == '\r' || c == '\n'; }

}  // namespace

BpeCodes::BpeCodes(const std::string& path) {
  auto lines = read_lines(path);  // regular file, UTF-8, or a DataError naming it
  size_t first = 0;
  if (!lines.empty() && lines[0].rfind("#version:", 0) == 0) {
    std::string v = lines[0].substr(lines[0].find_last_of(' ') + 1);
    while (v.size() > 2 && v.compare(v.size() - 2, 2, ".0") == 0) v.resize(v.size() - 2);
    v01_ = v == "0.1";
    if (v != "0.1" && v != "0.2")
      throw DataError(fmt::format("{}:1: BPE codes version '{}': only 0.1 and 0.2 exist", path, v));
    first = 1;
  } else {
    v01_ = true;  // apply_bpe.py: no header is version 0.1
  }
  // Trailing empty lines are dropped (apply_bpe.py's rstrip('\n')).
  size_t last = lines.size();
  while (last > first && lines[last - 1].empty()) --last;
  for (size_t i = first; i < last; ++i) {
    std::string l = lines[i];
    size_t b = 0, e = l.size();
    while (b < e && strip_char(l[b])) ++b;
    while (e > b && strip_char(l[e - 1])) --e;
    l = l.substr(b, e - b);
    size_t sp = l.find(' ');
    if (sp == std::string::npos || sp == 0 || l.find(' ', sp + 1) != std::string::npos)
      throw DataError(fmt::format("{}:{}: a BPE merge is two symbols separated by one space, "
                                  "got '{}'",
                                  path, i + 1, lines[i]));
    // A duplicate keeps its first (highest-priority) rank.
    rank_.emplace(key(l.substr(0, sp), l.substr(sp + 1)), i - first);
  }
}

const std::vector<std::string>& BpeCodes::segment(const std::string& orig) {
  auto hit = cache_.find(orig);
  if (hit != cache_.end()) return hit->second;
  std::vector<std::string> word = code_points(orig);
  if (word.size() > 1) {
    if (v01_)
      word.push_back("</w>");
    else
      word.back() += "</w>";
    while (word.size() > 1) {
      // The lowest-ranked adjacent pair; then merge every non-overlapping
      // occurrence of it, left to right.
      size_t best = std::numeric_limits<size_t>::max();
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto r = rank_.find(key(word[i], word[i + 1]));
        if (r != rank_.end() && r->second < best) best = r->second;
      }
      if (best == std::numeric_limits<size_t>::max()) break;
      std::vector<std::string> merged;
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size()) {
          auto r = rank_.find(key(word[i], word[i + 1]));
          if (r != rank_.end() && r->second == best) {
            merged.push_back(word[i] + word[i + 1]);
            i += 2;
            continue;
          }
        }
        merged.push_back(word[i++]);
      }
      word.swap(merged);
    }
    const std::string eow = "</w>";
    if (word.back() == eow)
      word.pop_back();
    else if (word.back().size() > eow.size() &&
             word.back().compare(word.back().size() - eow.size(), eow.size(), eow) == 0)
      word.back().resize(word.back().size() - eow.size());
  }
  return cache_.emplace(orig, std::move(word)).first->second;
}

std::string BpeCodes::apply_line(const std::string& line) {
  size_t b = 0, e = line.size();
  while (b < e && strip_char(line[b])) ++b;
  while (e > b && strip_char(line[e - 1])) --e;
  std::string out = line.substr(0, b);
  bool first = true;
  for (size_t i = b; i < e;) {
    size_t j = line.find(' ', i);
    if (j == std::string::npos || j > e) j = e;
    if (j > i) {  // "if not word: continue": double spaces vanish
      const auto& segs = segment(line.substr(i, j - i));
      for (size_t k = 0; k < segs.size(); ++k) {
        if (!first) out += ' ';
        first = false;
        out += segs[k];
        if (k + 1 < segs.size()) out += "@@";
      }
    }
    i = j + 1;
  }
  if (e > b) out += line.substr(e);  // trailing whitespace of a non-blank line
  return out;
}

}  // namespace clinic
