#pragma once
// clinic analyze: the paper's analysis (Liu et al. 2020, §3-4, Fig. 4) for
// several depths and residual variants, at initialisation or after K
// updates, on one batch of the recipe's training data:
//  - output change |F(x, W) - F(x, W*)|^2 (mean over real tokens of the
//    squared L2 norm, encoder and decoder outputs) for W* = W + delta with
//    delta = -1e-4 sign(xi), xi ~ N(0, 1) on every weight matrix
//    (Transformer-Clinic's --plot_stability), and for W* = W - 1e-4 sign(g),
//    Adam's first step at lr 1e-4 along the gradient g of the batch's loss;
//  - per-layer gradient norms of that gradient (the vanishing-gradient
//    study) and the mean dependency beta_ii per stack.
// Post-LN's output change grows O(N) with depth, Pre-LN's and Admin's
// O(log N): fit_growth() fits both forms and says which explains the points.
#include <cmath>
#include <string>
#include <vector>

#include "framework/config.h"

namespace clinic {

struct AnalyzeOptions {
  std::vector<int64_t> depths{6, 12, 18};
  std::vector<std::string> variants{"post_ln", "pre_ln", "admin"};
  int64_t seeds = 1;
  int64_t updates = 0;     // train this many updates before measuring
  double delta = 1e-4;     // perturbation size (absolute, as Transformer-Clinic)
  std::string work_dir;    // vocabulary and token caches
};

struct AnalyzeRow {
  int64_t depth = 0;  // layers per stack (N = M)
  std::string variant;
  int64_t seed = 0;
  double change_random_enc = 0, change_random_dec = 0;
  double change_update_enc = 0, change_update_dec = 0;
  double grad_first_enc = 0, grad_last_enc = 0, grad_first_dec = 0, grad_last_dec = 0;
  double dependency_enc = 0, dependency_dec = 0;  // mean beta_ii
};

std::vector<AnalyzeRow> run_analysis(const RunConfig& recipe, const AnalyzeOptions& o);

/// Least-squares fits y = a + b x (linear) and y = a + b ln x (log) over the
/// points; R^2 of each and the growth y(x_max) / y(x_min) of the data.
/// With a free intercept the two forms are hard to tell apart on 3-4 depths
/// (a + b N with a < 0 bends like a log), so the fit also reports the power
/// law y ~ x^alpha (least squares on ln y vs ln x): O(N) means alpha = 1,
/// O(log N) means the apparent exponent of c ln x over the same depths,
/// `exponent_of_log` (0.41 for 6..24: ln(ln 24 / ln 6) / ln 4 for two points).
struct GrowthFit {
  double r2_linear = 0, r2_log = 0, slope_linear = 0, slope_log = 0, growth = 0;
  double exponent = NAN, exponent_of_log = NAN;
  std::string better() const { return r2_linear >= r2_log ? "linear (O(N))" : "log (O(log N))"; }
  /// The form whose exponent alpha is nearer to: 1 (O(N)) or exponent_of_log.
  std::string nearer_exponent() const {
    return std::abs(exponent - 1.0) <= std::abs(exponent - exponent_of_log) ? "O(N)" : "O(log N)";
  }
};
GrowthFit fit_growth(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace clinic
