#pragma once
// Ownership of a run directory: one training process at a time, and the
// temporary files a killed process left behind.
#include <string>
#include <vector>

namespace clinic {

/// An advisory lock (flock) on RUN/.clinic.lock held for the object's life.
/// The kernel drops it when the process dies, SIGKILL included, so a stale
/// lock cannot outlive its holder. A second process on the same run dir gets
/// a DataError naming the holder's PID instead of interleaving checkpoints
/// with it (two `clinic train` on one dir used to both run).
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& run_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

/// Removes `NAME.tmp.PID` files (AtomicFileWriter's temporaries) in `dir`
/// whose PID is no longer alive: what a SIGKILL during a save leaves. Files
/// of live processes are kept. Returns the paths removed.
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

}  // namespace clinic
