#pragma once
// Human log (stderr + RUN_DIR/train.log) and machine-readable metrics
// (RUN_DIR/metrics.jsonl, one JSON object per line).
#include <fstream>
#include <memory>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace clinic {

/// Logs to stderr; once a run dir is known, also to `<dir>/train.log`.
void init_logging(const std::string& run_dir = "", bool verbose = false);
std::shared_ptr<spdlog::logger> log();

/// Resident set size of this process now and its high-water mark (MiB), so
/// every training log line shows whether memory grows over a run.
struct ProcessMemory {
  double rss_mb = 0;
  double peak_rss_mb = 0;
};
ProcessMemory process_memory();
/// Memory the kernel can give this process without swapping (MemAvailable),
/// in bytes; -1 when /proc/meminfo cannot be read.
int64_t available_memory_bytes();
/// Throws DataError("<what> needs about X GiB ... only Y GiB is available;
/// <hint>") when `bytes` exceeds available_memory_bytes(). Checked before a
/// large allocation: Linux overcommits, so the allocation itself succeeds and
/// the OOM killer ends the process later with no message.
void check_memory_fits(double bytes, const std::string& what, const std::string& hint);

/// One metrics record, written as a JSON object in insertion order. Values
/// are numbers, strings, and (for the per-sublayer diagnostics) arrays of
/// numbers, of arrays of numbers, or of strings. Non-finite numbers become
/// the strings "nan" / "inf" (JSON has neither).
class MetricsRecord {
 public:
  MetricsRecord& add(const std::string& key, double v);
  MetricsRecord& add(const std::string& key, int64_t v);
  MetricsRecord& add(const std::string& key, const std::string& v);
  MetricsRecord& add(const std::string& key, const std::vector<double>& v);
  MetricsRecord& add(const std::string& key, const std::vector<std::vector<double>>& v);
  MetricsRecord& add(const std::string& key, const std::vector<std::string>& v);
  std::string json() const;
  /// Every number with its key ("loss"), array entries as "key/i" and
  /// "key/i/j": what TensorBoard plots.
  const std::vector<std::pair<std::string, double>>& scalars() const { return scalars_; }
  /// The "event" string field ("" for plain training records).
  const std::string& event() const { return event_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
  std::vector<std::pair<std::string, double>> scalars_;
  std::string event_;
};

class TensorBoardWriter;

/// Appends records to a JSONL file, flushing each line so a killed run keeps
/// everything it logged; with a TensorBoard directory, every numeric field
/// of every record also goes to an event file, tagged "<event>/<key>"
/// ("train/<key>" for plain training records) at step "update". Write
/// failures (a full disk) are DataErrors naming the file.
class MetricsWriter {
 public:
  /// An empty path writes nothing (data-parallel ranks other than 0).
  explicit MetricsWriter(const std::string& path, const std::string& tensorboard_dir = "");
  ~MetricsWriter();
  void write(const MetricsRecord& r);

 private:
  std::string path_;
  std::ofstream out_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

}  // namespace clinic
