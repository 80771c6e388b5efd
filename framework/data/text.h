#pragma once
// Torch-free text utilities shared by clinic and the clinic-spm helper.
#include <cstdint>
#include <string>
#include <vector>

namespace clinic {

/// All lines of a UTF-8 text file, without line ends. Throws DataError naming
/// the file (missing) or file:line:column (a byte that is not UTF-8).
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
/// fsync, rename. A crash leaves either the old file or the new one.
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

/// Gives an already-written file a second name, atomically: a hard link when
/// the filesystem allows one (no copy, no extra disk), else a streamed copy.
void link_or_copy_atomic(const std::string& from, const std::string& to);
std::string read_file(const std::string& path);

}  // namespace clinic
