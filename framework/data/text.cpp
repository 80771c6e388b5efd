#include "framework/data/text.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "clinic_paths.h"
#include "framework/errors.h"

namespace clinic {

size_t find_invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3
                                 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || (len == 2 && c < 0xC2) || i + len > n) return i;
    for (size_t k = 1; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    if (len == 3 && c == 0xE0 && p[i + 1] < 0xA0) return i;
    if (len == 4 && (c > 0xF4 || (c == 0xF0 && p[i + 1] < 0x90))) return i;
    i += len;
  }
  return std::string::npos;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot open file", path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t bad = find_invalid_utf8(line);
    if (bad != std::string::npos)
      throw DataError(fmt::format(
          "{}:{}:{}: byte 0x{:02x} is not valid UTF-8", path,
          lines.size() + 1, bad + 1, static_cast<unsigned char>(line[bad])));
    lines.push_back(std::move(line));
  }
  return lines;
}

uint64_t hash_bytes(const std::string& bytes, uint64_t h) {
  return hash_bytes(bytes.data(), bytes.size(), h);
}

uint64_t hash_bytes(const char* data, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t hash_file(const std::string& path) {
  return hash_bytes(read_file(path));
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string helper_path(const std::string& name) {
  if (const char* env = std::getenv("CLINIC_SPM"); env && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto p = self.parent_path() / name;
    if (std::filesystem::exists(p)) return p.string();
  }
  return std::string(kClinicBinaryDir) + "/" + name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot open file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot write", tmp));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(fmt::format("{}: write failed", tmp));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: fsync failed", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: rename failed", path));
  }
}

}  // namespace clinic
