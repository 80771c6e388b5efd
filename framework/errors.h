#pragma once
// Error types. Config problems are user errors (exit code 2); everything
// else that goes wrong at run time is a runtime error (exit code 1).
#include <stdexcept>
#include <string>

namespace clinic {

/// A recipe / command-line / option error. Message names file:line and key.
class ConfigError : public std::invalid_argument {
 public:
  explicit ConfigError(const std::string& what) : std::invalid_argument(what) {}
};

/// Bad input data: missing files, mismatched corpora, corrupt caches.
class DataError : public std::runtime_error {
 public:
  explicit DataError(const std::string& what) : std::runtime_error(what) {}
};

/// A checkpoint that cannot be read or does not fit the recipe.
class CheckpointError : public std::runtime_error {
 public:
  explicit CheckpointError(const std::string& what)
      : std::runtime_error(what) {}
};

}  // namespace clinic
