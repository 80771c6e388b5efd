#pragma once
// Child processes for the SentencePiece helper: SentencePiece and LibTorch
// cannot share a process on Debian: each links its own protobuf copy and the
// second registration of the same descriptors aborts before main().
#include <string>
#include <sys/types.h>
#include <vector>

namespace clinic {

struct CommandResult {
  int exit_code = -1;
  std::string err;  // the child's stderr
};
/// Run argv to completion; stdout is discarded unless `out` is given.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::string* out = nullptr);

/// A long-lived co-process spoken to line by line over pipes.
class CoProcess {
 public:
  explicit CoProcess(const std::vector<std::string>& argv);
  ~CoProcess();
  CoProcess(const CoProcess&) = delete;
  CoProcess& operator=(const CoProcess&) = delete;
  /// Send one line, read one line back. Throws if the child died.
  std::string request(const std::string& line);
  /// Read one line the child wrote unasked (a greeting).
  std::string read_line();

 private:
  pid_t pid_ = -1;
  int to_child_ = -1, from_child_ = -1;
  std::string buffer_;
  std::string name_;
};

}  // namespace clinic
