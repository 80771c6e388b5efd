#include "framework/logging.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "framework/diagnostics/tensorboard.h"
#include "framework/errors.h"

namespace clinic {

void init_logging(const std::string& run_dir, bool verbose) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!run_dir.empty())
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(
        run_dir + "/train.log", /*truncate=*/false));
  auto logger =
      std::make_shared<spdlog::logger>("clinic", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%d %H:%M:%S | %^%l%$ | %v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::drop("clinic");
  spdlog::register_logger(logger);
}

std::shared_ptr<spdlog::logger> log() {
  auto l = spdlog::get("clinic");
  if (!l) {
    init_logging();
    l = spdlog::get("clinic");
  }
  return l;
}

namespace {
std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          o += fmt::format("\\u{:04x}", c);
        else
          o += c;
    }
  }
  return o;
}
}  // namespace

namespace {
// JSON has no NaN/Inf; a non-finite loss is exactly what a user must see.
std::string json_number(double v) {
  return std::isfinite(v) ? fmt::format("{}", v) : fmt::format("\"{}\"", v);
}
}  // namespace

MetricsRecord& MetricsRecord::add(const std::string& key, double v) {
  fields_.emplace_back(key, json_number(v));
  scalars_.emplace_back(key, v);
  return *this;
}
MetricsRecord& MetricsRecord::add(const std::string& key, int64_t v) {
  fields_.emplace_back(key, std::to_string(v));
  scalars_.emplace_back(key, static_cast<double>(v));
  return *this;
}
MetricsRecord& MetricsRecord::add(const std::string& key,
                                  const std::string& v) {
  fields_.emplace_back(key, "\"" + json_escape(v) + "\"");
  if (key == "event") event_ = v;
  return *this;
}
MetricsRecord& MetricsRecord::add(const std::string& key, const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    s += (i ? ", " : "") + json_number(v[i]);
    scalars_.emplace_back(fmt::format("{}/{}", key, i), v[i]);
  }
  fields_.emplace_back(key, s + "]");
  return *this;
}
MetricsRecord& MetricsRecord::add(const std::string& key,
                                  const std::vector<std::vector<double>>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    s += i ? ", [" : "[";
    for (size_t j = 0; j < v[i].size(); ++j) {
      s += (j ? ", " : "") + json_number(v[i][j]);
      scalars_.emplace_back(fmt::format("{}/{}/{}", key, i, j), v[i][j]);
    }
    s += "]";
  }
  fields_.emplace_back(key, s + "]");
  return *this;
}
MetricsRecord& MetricsRecord::add(const std::string& key, const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + json_escape(v[i]) + "\"";
  fields_.emplace_back(key, s + "]");
  return *this;
}
std::string MetricsRecord::json() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    s += (i ? ", \"" : "\"") + json_escape(fields_[i].first) +
         "\": " + fields_[i].second;
  return s + "}";
}

MetricsWriter::MetricsWriter(const std::string& path, const std::string& tensorboard_dir)
    : path_(path) {
  if (path.empty()) return;  // a data-parallel worker other than rank 0: writes nothing
  out_.open(path, std::ios::app);
  if (!out_) throw DataError(path + ": cannot open metrics file");
  if (!tensorboard_dir.empty()) tb_ = std::make_unique<TensorBoardWriter>(tensorboard_dir);
}
MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write(const MetricsRecord& r) {
  if (path_.empty()) return;
  out_ << r.json() << "\n";
  out_.flush();
  if (!out_) throw DataError(path_ + ": write failed (disk full?)");
  if (!tb_) return;
  int64_t step = 0;
  std::vector<std::pair<std::string, double>> tagged;
  std::string prefix = r.event().empty() ? "train" : r.event();
  for (const auto& [key, value] : r.scalars()) {
    if (key == "update") {
      step = static_cast<int64_t>(value);
      continue;
    }
    tagged.emplace_back(prefix + "/" + key, value);
  }
  if (tagged.empty()) return;
  double wall = std::chrono::duration<double>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  tb_->add_scalars(step, tagged, wall);
}

int64_t available_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  int64_t kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %ld kB", &kib) == 1) break;
  std::fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}

void check_memory_fits(double bytes, const std::string& what, const std::string& hint) {
  int64_t avail = available_memory_bytes();
  if (avail < 0 || bytes <= static_cast<double>(avail)) return;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  throw DataError(fmt::format("{} needs about {:.1f} GiB but only {:.1f} GiB of memory is "
                              "available; {}",
                              what, bytes / kGiB, avail / kGiB, hint));
}

ProcessMemory process_memory() {
  ProcessMemory m;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  m.peak_rss_mb = u.ru_maxrss / 1024.0;  // Linux reports KiB
  // statm: total and resident sizes in pages.
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    long total = 0, resident = 0;
    if (std::fscanf(f, "%ld %ld", &total, &resident) == 2)
      m.rss_mb = resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
    std::fclose(f);
  }
  return m;
}

}  // namespace clinic
