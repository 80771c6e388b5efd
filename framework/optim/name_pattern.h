#pragma once
// optim.groups[].match: a regular expression over the whole parameter name.
//
// Matched with POSIX extended syntax (as `grep -E`) by the C library's
// automaton matcher, not std::regex: std::regex backtracks, so a pattern with
// nested repetition such as `(a+)+$` or `(.+)+x$` takes time exponential in the
// name's length and hangs the run before its first update (outside testing,
// round 3). glibc's regexec matches such patterns in linear time.
#include <regex.h>

#include <memory>
#include <string>

namespace clinic {

class NamePattern {
 public:
  /// Throws ConfigError("not a regular expression (REASON)") for a pattern
  /// that does not compile, or that uses an escape POSIX syntax reads
  /// differently from the Perl/ECMAScript one (\d, \D: use [0-9]).
  explicit NamePattern(const std::string& pattern);
  /// True when the whole of `name` matches.
  bool matches(const std::string& name) const;

 private:
  std::shared_ptr<regex_t> re_;
};

}  // namespace clinic
