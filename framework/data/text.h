#pragma once
// Torch-free text utilities shared by clinic and the clinic-spm helper.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clinic {

/// Inputs must be regular files (or links to one): a FIFO would block open()
/// and ignore SIGTERM, a directory reads as empty, /dev/zero never ends.
/// Throws DataError naming the path and what it is instead.
void require_regular_file(const std::string& path);
/// All lines of a UTF-8 text file, without line ends. Throws DataError naming
/// the file (missing, not a regular file) or file:line:column (a byte that is
/// not UTF-8).
std::vector<std::string> read_lines(const std::string& path);
/// Byte offset of the first invalid UTF-8 sequence, or npos.
size_t find_invalid_utf8(const std::string& s);
/// FNV-1a 64 of a file's bytes (cache invalidation, vocabulary identity).
uint64_t hash_file(const std::string& path);
uint64_t hash_bytes(const std::string& bytes, uint64_t seed = 1469598103934665603ULL);
/// The same FNV-1a over a buffer; chained calls (seed = previous result) hash a stream.
uint64_t hash_bytes(const char* data, size_t n, uint64_t seed = 1469598103934665603ULL);
std::string hex64(uint64_t v);
/// Whitespace split.
std::vector<std::string> split_ws(const std::string& s);
/// A helper program next to the running executable (clinic-spm), or
/// $CLINIC_SPM when set.
std::string helper_path(const std::string& name);
/// Write `bytes` to `path` atomically: temp file in the same directory,
/// fsync, rename. A crash leaves either the old file or the new one. An
/// existing `path` that is not a regular file (a device, a FIFO, a directory)
/// is refused: renaming over /dev/full would replace the device node.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// The streaming form of write_file_atomic, for outputs too large to hold
/// twice in memory (a checkpoint at IWSLT-small size is 0.44 GB): appends go
/// through a 1 MiB buffer to `path.tmp.PID`; commit() fsyncs and renames.
/// Destroyed without commit(), the temp file is removed and `path` untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void append(const char* data, size_t n);
  /// Overwrites bytes already appended (a header whose checksum is known last).
  void write_at(size_t offset, const char* data, size_t n);
  size_t size() const { return size_; }
  void commit();

 private:
  void flush();
  void fail(const std::string& what);
  std::string path_, tmp_;
  int fd_ = -1;
  size_t size_ = 0;
  std::string buffer_;
};

/// Where text output goes: stdout (empty path), an existing device or FIFO
/// (written in place: `--output /dev/stdout`), or a regular file written
/// atomically, so a failed run leaves what was there before. Every write is
/// checked; a full disk or a closed pipe is a DataError naming the path.
class TextOutput {
 public:
  explicit TextOutput(const std::string& path);
  ~TextOutput();
  TextOutput(const TextOutput&) = delete;
  TextOutput& operator=(const TextOutput&) = delete;
  void write(const std::string& text);
  /// Pushes buffered text to stdout or a device (no-op for a file, which
  /// appears whole at commit()).
  void flush();
  /// Finishes the output: the file gets its name now.
  void commit();
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::unique_ptr<AtomicFileWriter> file_;
  int fd_ = -1;  // stdout or an opened device/FIFO
  bool own_fd_ = false;
  std::string pending_;
};

/// True when both paths exist and name the same file (same device and inode).
bool same_file(const std::string& a, const std::string& b);

/// Gives an already-written file a second name, atomically: a hard link when
/// the filesystem allows one (no copy, no extra disk), else a streamed copy.
void link_or_copy_atomic(const std::string& from, const std::string& to);
std::string read_file(const std::string& path);

}  // namespace clinic
