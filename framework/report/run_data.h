#pragma once
// A run as its files tell it: metrics.jsonl (train, valid, diag, spike,
// nonfinite and init records) and recipe.yaml. clinic diagnose reads only
// these, so a report can be made for any finished or crashed run.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace clinic {

/// The two stacks whose per-layer series metrics.jsonl holds.
inline constexpr const char* kStacks[] = {"encoder", "decoder"};

struct RunData {
  std::string dir;
  std::string label;        // "post_ln", "enc post_ln / dec pre_ln", ...
  std::string residual;     // model.residual of the run's recipe ("" when unknown)
  double label_smoothing = 0;  // the recipe's, when its criterion smooths (0 when unknown)
  bool fixed_batch = false;    // data.source: fixed_batch (one batch every update)
  std::vector<nlohmann::json> train, valid, diag, spikes, nonfinite;
  /// Resumes found in the file: a record whose update is not past the one
  /// before it starts a resumed session, whose records replace the earlier
  /// ones from that update on (train, valid and diag records).
  int64_t resumes = 0;
  std::string init_summary;
  int64_t skipped_lines = 0;  // unreadable lines (a killed run's last one, garbage a full disk left)
  /// One entry per unreadable line: "FILE:LINE: why" (the report's data problems).
  std::vector<std::string> data_problems;
};

/// A training record that averages fewer updates than the run's others
/// (under half of the usual count): the first one after a resume that did
/// not start on a log boundary. Its "updates" field says so; a file written
/// before records had one marks the first training record after a resume.
bool is_short_record(const nlohmann::json& j);

/// Reads RUN_DIR/metrics.jsonl (required) and RUN_DIR/recipe.yaml (optional).
/// Lines that are not valid UTF-8 or not a JSON object are skipped and listed
/// in data_problems. Throws DataError naming the file when there is no
/// metrics file, or when it has unreadable lines and no readable record.
RunData read_run(const std::string& run_dir);

/// A number field: NaN when absent, null, or the strings "nan"/"inf" that
/// clinic writes for non-finite values ("inf" gives +inf).
double json_num(const nlohmann::json& j, const std::string& key);
/// A numeric array field (empty when absent); non-numbers become NaN.
std::vector<double> json_nums(const nlohmann::json& j, const std::string& key);
/// A 2-D numeric array field (empty when absent).
std::vector<std::vector<double>> json_nums2(const nlohmann::json& j, const std::string& key);
std::vector<std::string> json_strings(const nlohmann::json& j, const std::string& key);

}  // namespace clinic
