#include "framework/optim/name_pattern.h"

#include <fmt/format.h>

#include "framework/errors.h"

namespace clinic {

NamePattern::NamePattern(const std::string& pattern) {
  // POSIX has no \d: glibc would read `\d` as a plain `d` and the group would
  // silently match other parameters than the user meant; nor (?...) groups.
  for (size_t i = 0; i + 1 < pattern.size(); ++i) {
    if (pattern[i] == '(' && pattern[i + 1] == '?')
      throw ConfigError("not a regular expression ((?...) groups are not POSIX extended syntax)");
    if (pattern[i] != '\\') continue;
    const char c = pattern[i + 1];
    if (c == 'd' || c == 'D')
      throw ConfigError(fmt::format("not a regular expression (\\{} is not POSIX extended "
                                    "syntax: write {})",
                                    c, c == 'd' ? "[0-9]" : "[^0-9]"));
    ++i;  // the escaped character is a literal: `\(?` is an optional '('
  }
  auto* re = new regex_t;
  // ^(...)$: the whole name, as std::regex_match did; the parentheses keep an
  // alternation a|b inside the anchors.
  const std::string whole = "^(" + pattern + ")$";
  const int rc = ::regcomp(re, whole.c_str(), REG_EXTENDED | REG_NOSUB);
  if (rc != 0) {
    char msg[256];
    ::regerror(rc, re, msg, sizeof msg);
    delete re;
    throw ConfigError(fmt::format("not a regular expression ({})", msg));
  }
  re_.reset(re, [](regex_t* r) {
    ::regfree(r);
    delete r;
  });
}

bool NamePattern::matches(const std::string& name) const {
  return ::regexec(re_.get(), name.c_str(), 0, nullptr, 0) == 0;
}

}  // namespace clinic
