#include "framework/data/text.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
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

namespace {
const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}
}  // namespace

void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw DataError(fmt::format("{}: cannot open file ({})", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw DataError(fmt::format("{}: is {}; clinic reads regular files only", path,
                                file_kind(st.st_mode)));
}

std::vector<std::string> read_lines(const std::string& path) {
  require_regular_file(path);
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
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot open file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFileWriter w(path);
  w.append(bytes.data(), bytes.size());
  w.commit();
}

namespace {
constexpr size_t kWriteBuffer = size_t{1} << 20;

// All n bytes to fd (at `offset` when >= 0, else at the file position),
// retrying short writes and EINTR. False with errno set on failure.
bool write_all(int fd, const char* data, size_t n, int64_t offset = -1) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = offset < 0 ? ::write(fd, data + done, n - done)
                           : ::pwrite(fd, data + done, n - done,
                                      static_cast<off_t>(offset + static_cast<int64_t>(done)));
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(w);
  }
  return true;
}
}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw DataError(fmt::format("{}: is {}; clinic writes regular files only", path_,
                                file_kind(st.st_mode)));
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw DataError(fmt::format("{}: cannot write ({})", tmp_, std::strerror(errno)));
  buffer_.reserve(kWriteBuffer);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::fail(const std::string& what) {
  std::string why = std::strerror(errno);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  throw DataError(fmt::format("{}: {} ({}); {} is unchanged", tmp_, what, why, path_));
}

void AtomicFileWriter::flush() {
  if (!write_all(fd_, buffer_.data(), buffer_.size())) fail("write failed");
  buffer_.clear();
}

void AtomicFileWriter::append(const char* data, size_t n) {
  if (fd_ < 0) throw std::logic_error("AtomicFileWriter: append after commit");
  size_ += n;
  if (buffer_.size() + n > kWriteBuffer) flush();
  if (n < kWriteBuffer) {
    buffer_.append(data, n);
    return;
  }
  // Large records (tensor storages) go straight from their own memory.
  if (!write_all(fd_, data, n)) fail("write failed");
}

void AtomicFileWriter::write_at(size_t offset, const char* data, size_t n) {
  if (offset + n > size_) throw std::logic_error("AtomicFileWriter: write_at past end");
  flush();
  if (!write_all(fd_, data, n, static_cast<int64_t>(offset))) fail("write failed");
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw std::logic_error("AtomicFileWriter: commit twice");
  flush();
  if (::fsync(fd_) != 0) fail("fsync failed");
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("close failed");
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::string why = std::strerror(errno);
    ::unlink(tmp_.c_str());
    throw DataError(fmt::format("{}: rename failed ({})", path_, why));
  }
}

TextOutput::TextOutput(const std::string& path) : name_(path.empty() ? "stdout" : path) {
  struct stat st {};
  if (path.empty()) {
    fd_ = 1;
  } else if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) throw DataError(path + ": is a directory");
    fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0)
      throw DataError(fmt::format("{}: cannot write ({})", path, std::strerror(errno)));
    own_fd_ = true;
  } else {
    file_ = std::make_unique<AtomicFileWriter>(path);
  }
}

TextOutput::~TextOutput() {
  if (own_fd_) ::close(fd_);
}

void TextOutput::write(const std::string& text) {
  if (file_) {
    file_->append(text.data(), text.size());
    return;
  }
  pending_ += text;
  if (pending_.size() >= kWriteBuffer) flush();
}

void TextOutput::flush() {
  if (file_ || pending_.empty()) return;
  if (!write_all(fd_, pending_.data(), pending_.size()))
    throw DataError(fmt::format("{}: write failed ({})", name_, std::strerror(errno)));
  pending_.clear();
}

void TextOutput::commit() {
  if (file_) {
    file_->commit();
    file_.reset();
    return;
  }
  flush();
  if (own_fd_) {
    int rc = ::close(fd_);
    own_fd_ = false;
    if (rc != 0)
      throw DataError(fmt::format("{}: close failed ({})", name_, std::strerror(errno)));
  }
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void link_or_copy_atomic(const std::string& from, const std::string& to) {
  std::string tmp = to + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  if (::link(from.c_str(), tmp.c_str()) == 0) {
    if (std::rename(tmp.c_str(), to.c_str()) != 0) {
      std::string why = std::strerror(errno);
      ::unlink(tmp.c_str());
      throw DataError(fmt::format("{}: rename failed ({})", to, why));
    }
    return;
  }
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw DataError(fmt::format("{}: cannot open file ({})", from, std::strerror(errno)));
  AtomicFileWriter w(to);
  std::string chunk(kWriteBuffer, '\0');
  for (;;) {
    ssize_t r = ::read(in, chunk.data(), chunk.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string why = std::strerror(errno);
      ::close(in);
      throw DataError(fmt::format("{}: read failed ({})", from, why));
    }
    if (r == 0) break;
    w.append(chunk.data(), static_cast<size_t>(r));
  }
  ::close(in);
  w.commit();
}

}  // namespace clinic
