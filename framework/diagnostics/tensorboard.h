#pragma once
// TensorBoard event files, written without TensorFlow or protobuf (no C++
// TensorBoard writer is packaged for Debian). The format is small:
//   file   = record*
//   record = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
//   data   = an Event protobuf: wall_time (1, double), step (2, int64),
//            file_version (3, string; first record only) or summary (5):
//            Summary { repeated Value value = 1 }, Value { tag = 1; simple_value = 2 (float) }
// (tensorflow/core/util/events_writer.cc, tensorboard/compat/proto/event.proto).
// Little-endian integers; masked crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace clinic {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord framing
/// uses it.
uint32_t crc32c(const char* data, size_t n);
/// TFRecord's masked CRC.
uint32_t masked_crc32c(const char* data, size_t n);

/// One event file in `dir`: events.out.tfevents.<unix time>.<host>.<pid>.clinic.
/// Each add_scalars() call is one Event record, written and flushed at once,
/// so a crashed run keeps what it logged. Write failures throw DataError.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars,
                   double wall_time);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  int fd_ = -1;
};

}  // namespace clinic
