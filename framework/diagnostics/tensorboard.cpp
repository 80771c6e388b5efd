#include "framework/diagnostics/tensorboard.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "framework/errors.h"

namespace clinic {

namespace {
std::array<uint32_t, 256> crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire format: varint keys and lengths, little-endian fixed widths.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_key(std::string& out, int field, int wire_type) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type));
}
template <class T>
void put_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86/ARM Linux: little-endian already
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}
std::string event_header(int64_t step, double wall_time) {
  std::string e;
  put_key(e, 1, 1);  // wall_time: double
  put_le(e, wall_time);
  put_key(e, 2, 0);  // step: int64
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}
}  // namespace

uint32_t crc32c(const char* data, size_t n) {
  static const auto table = crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i)
    c = table[(c ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const char* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = fmt::format("{}/events.out.tfevents.{}.{}.{}.clinic", dir,
                      std::chrono::duration_cast<std::chrono::seconds>(now).count(), host,
                      ::getpid());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw DataError(fmt::format("{}: cannot write ({})", path_, std::strerror(errno)));
  std::string e = event_header(0, std::chrono::duration<double>(now).count());
  put_bytes(e, 3, "brain.Event:2");  // file_version: readers expect it first
  write_record(e);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorBoardWriter::add_scalars(int64_t step,
                                    const std::vector<std::pair<std::string, double>>& scalars,
                                    double wall_time) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);
    put_key(v, 2, 5);  // simple_value: float
    put_le(v, static_cast<float>(value));
    put_bytes(summary, 1, v);
  }
  std::string e = event_header(step, wall_time);
  put_bytes(e, 5, summary);
  write_record(e);
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string rec;
  uint64_t len = data.size();
  put_le(rec, len);
  put_le(rec, masked_crc32c(rec.data(), 8));
  rec += data;
  put_le(rec, masked_crc32c(data.data(), data.size()));
  size_t done = 0;
  while (done < rec.size()) {
    ssize_t w = ::write(fd_, rec.data() + done, rec.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw DataError(fmt::format("{}: write failed ({})", path_, std::strerror(errno)));
    done += static_cast<size_t>(w);
  }
}

}  // namespace clinic
