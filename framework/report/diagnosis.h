#pragma once
// The rules of `clinic diagnose`: each reads a RunData, says whether it
// fired, with the evidence it used (update, stack/sublayer, value, threshold)
// and the cure clinic offers. Thresholds and their reasons are in
// docs/diagnose.md; the rules are unit-tested on synthetic metrics.
#include <cstdint>
#include <string>
#include <vector>

#include "framework/report/run_data.h"

namespace clinic {

struct Finding {
  std::string rule;      // "amplification", "vanishing_gradient", ...
  bool fired = false;
  std::string summary;   // one sentence with the numbers
  std::string cure;      // what to change, in recipe keys; empty if nothing
  std::string checked;   // when not fired: what was checked
};

struct DiagnoseThresholds {
  double divergence_rise_bits = 1.0;   // loss above its minimum by this much...
  double divergence_rise_frac = 0.2;   // ...and by this fraction of the minimum
  double amplification = 2.0;         // sum beta_ii^2 / (1 + ln n) at or above
  double vanishing_ratio = 0.01;       // first-layer / largest layer grad norm at or below
  double eps_dominated = 0.5;          // share of Adam entries with sqrt(v) < eps
  double collapse_fraction = 0.9;      // as diag.collapse_fraction
  double zero_loss_bits = 1e-3;        // a logged loss below this counts as ~0...
  double stale_gradient = 0.1;         // ...and a gradient norm there at or above this
                                       // fraction of the first updates' is stale
  double stale_first_moment = 0.95;    // Adam |m_hat| / |sqrt(v_hat)| at or above: the
                                       // gradient repeats (in >= 3 and >= half the records)
  double source_gain_bits = 0.1;       // probe NLL with swapped sources minus with its own,
                                       // below this in the last record: the source is ignored...
  double source_learned_bits = 2.0;    // ...once the probe NLL fell this far from the first record
};

/// Every rule, in a fixed order; fired ones first in the report.
std::vector<Finding> diagnose(const RunData& run, const DiagnoseThresholds& t = {});

/// Σ_i β_{i,i}² / (1 + ln n) of one diag record's stack: the paper's output
/// change ∝ Σ β² relative to the O(log n) of a Pre-LN stack (Liu et al. 2020
/// §4.2); NaN without dependency data.
double amplification_index(const nlohmann::json& diag, const std::string& stack);

/// The update at which the run diverged (first non-finite update, or the
/// first logged update whose loss rose above its running minimum by the
/// thresholds), or -1.
int64_t divergence_update(const RunData& run, const DiagnoseThresholds& t = {});

}  // namespace clinic
