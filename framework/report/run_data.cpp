#include "framework/report/run_data.h"

#include <map>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "framework/config.h"
#include "framework/data/text.h"
#include "framework/errors.h"

namespace fs = std::filesystem;

namespace clinic {

namespace {
double to_number(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
  }
  return NAN;
}
}  // namespace

double json_num(const nlohmann::json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() ? NAN : to_number(*it);
}

std::vector<double> json_nums(const nlohmann::json& j, const std::string& key) {
  std::vector<double> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it) out.push_back(to_number(v));
  return out;
}

std::vector<std::vector<double>> json_nums2(const nlohmann::json& j, const std::string& key) {
  std::vector<std::vector<double>> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& row : *it) {
    out.emplace_back();
    if (row.is_array())
      for (const auto& v : row) out.back().push_back(to_number(v));
  }
  return out;
}

std::vector<std::string> json_strings(const nlohmann::json& j, const std::string& key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it) out.push_back(v.is_string() ? v.get<std::string>() : "");
  return out;
}

bool is_short_record(const nlohmann::json& j) { return j.value("short_record", false); }

namespace {
int64_t record_update(const nlohmann::json& j) {
  const auto it = j.find("update");
  return it != j.end() && it->is_number() ? it->get<int64_t>() : -1;
}

// A resumed run appends to metrics.jsonl from its checkpoint's update: the
// updates the stopped session logged after that checkpoint appear twice.
// The resumed session's records are the run's (its weights went on); the
// earlier ones from that update on are dropped. Returns the resumes found
// and the index of each one's first record.
std::vector<size_t> keep_latest(std::vector<nlohmann::json>& records, int64_t* resumes) {
  std::vector<nlohmann::json> kept;
  std::vector<size_t> firsts;
  for (auto& j : records) {
    const int64_t u = record_update(j);
    bool replaced = false;
    while (u >= 0 && !kept.empty() && record_update(kept.back()) >= u) {
      kept.pop_back();
      replaced = true;
    }
    if (replaced) {
      if (resumes) *resumes += 1;
      firsts.push_back(kept.size());
    }
    kept.push_back(std::move(j));
  }
  records = std::move(kept);
  return firsts;
}

// Training records average the updates since the previous one: log_interval
// of them, except the first after a resume from a checkpoint between two
// boundaries (an epoch's end, say), which may average one. Such a record's
// loss is one batch's, and a rule that tracks a running minimum would take
// it for the run's best (a false "diverged"): it is marked short.
void mend_resumes(RunData& r) {
  const std::vector<size_t> firsts = keep_latest(r.train, &r.resumes);
  keep_latest(r.valid, nullptr);
  keep_latest(r.diag, nullptr);
  std::map<int64_t, int64_t> counts;  // "updates" value -> how many records
  for (const auto& j : r.train)
    if (j.contains("updates") && j["updates"].is_number()) counts[j["updates"].get<int64_t>()] += 1;
  int64_t usual = 0, most = 0;
  for (const auto& [n, c] : counts)
    if (c > most) {
      usual = n;
      most = c;
    }
  for (auto& j : r.train)
    if (j.contains("updates") && j["updates"].is_number())
      j["short_record"] = 2 * j["updates"].get<int64_t>() < usual;
  for (size_t i : firsts)  // a file from before records said how many they average
    if (i < r.train.size() && !r.train[i].contains("updates")) r.train[i]["short_record"] = true;
}
}  // namespace

RunData read_run(const std::string& run_dir) {
  RunData r;
  r.dir = run_dir;
  std::string metrics = (fs::path(run_dir) / "metrics.jsonl").string();
  if (!fs::exists(metrics))
    throw DataError(fmt::format("{}: no metrics.jsonl (is {} a clinic run dir?)", metrics, run_dir));
  // Read as bytes, line by line: one damaged line (a killed run's partial
  // last line, garbage a full disk or a crash left) must not cost the report
  // every other record, which is when the user needs it most.
  const std::string bytes = read_file(metrics);
  int64_t records = 0;
  size_t pos = 0;
  for (int64_t lineno = 1; pos < bytes.size(); ++lineno) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) end = bytes.size();
    std::string line = bytes.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::string why;
    nlohmann::json j;
    if (size_t bad = find_invalid_utf8(line); bad != std::string::npos) {
      why = fmt::format("byte 0x{:02x} at column {} is not valid UTF-8",
                        static_cast<unsigned char>(line[bad]), bad + 1);
    } else {
      j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object())
        why = end == bytes.size() ? "a partial last line (the run was stopped while writing it)"
                                  : "not a JSON record";
    }
    if (!why.empty()) {
      ++r.skipped_lines;
      r.data_problems.push_back(fmt::format("{}:{}: {}; line skipped", metrics, lineno, why));
      continue;
    }
    ++records;
    std::string event = j.value("event", "");
    if (event.empty()) r.train.push_back(std::move(j));
    else if (event == "valid") r.valid.push_back(std::move(j));
    else if (event == "diag") r.diag.push_back(std::move(j));
    else if (event == "spike") r.spikes.push_back(std::move(j));
    else if (event == "nonfinite") r.nonfinite.push_back(std::move(j));
    else if (event == "init") r.init_summary = j.value("summary", "");
  }
  mend_resumes(r);
  if (records == 0 && r.skipped_lines > 0)
    throw DataError(fmt::format("{}: no readable record ({} unreadable line{}; the first: {})",
                                metrics, r.skipped_lines, r.skipped_lines == 1 ? "" : "s",
                                r.data_problems.front().substr(metrics.size() + 1)));
  r.label = fs::path(run_dir).filename().string();
  std::string recipe = (fs::path(run_dir) / "recipe.yaml").string();
  if (fs::exists(recipe)) {
    try {
      RunConfig cfg = parse_recipe_text(read_file(recipe), recipe);
      const auto& m = cfg.model;
      r.residual = m.residual;
      r.fixed_batch = cfg.data.source == "fixed_batch";
      if (cfg.train.criterion == "label_smoothed_cross_entropy")
        r.label_smoothing = cfg.train.label_smoothing;
      // An encoder-only model (model.arch encoder_tagger, causal_lm) measures
      // one stack: its recipe's decoder_layers is unused.
      bool one_stack = !r.diag.empty();
      for (const auto& d : r.diag) one_stack = one_stack && !d.contains("decoder_dependency");
      r.label = one_stack ? fmt::format("{} ({} {}, {} layer{})", r.label, m.arch, m.encoder_variant(),
                                        m.encoder_layers, m.encoder_layers == 1 ? "" : "s")
                          : fmt::format("{} ({}, {}+{} layers)", r.label,
                                        m.residual_label(),
                                        m.encoder_layers, m.decoder_layers);
    } catch (const std::exception&) {
      // A recipe from another clinic version: the label stays the dir name.
    }
  }
  return r;
}

}  // namespace clinic
