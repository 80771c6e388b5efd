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
std::string read_file(const std::string& path);

}  // namespace clinic
