#pragma once
// Adam-family second moments against eps: after a loss reaches ~0, gradients
// and their running second moment v shrink until sqrt(v) is below eps, and the
// update m / (sqrt(v) + eps) is decided by eps. A sudden gradient is then
// divided by a tiny denominator: the loss-spike mechanism the instruments look
// for. The quantity compared with eps is the one the optimizer adds eps to:
// sqrt(v / (1 - beta2^t)) for torch::optim::Adam / AdamW, sqrt(v) for clinic's
// RAdam (its bias correction is folded into the step size).
#include <torch/torch.h>

#include <string>
#include <vector>

namespace clinic {

struct SecondMomentSummary {
  bool available = false;  // false for optimizers without an Adam-style v
  double eps = 0;
  /// Quantiles 1, 10, 50, 90, 99 % of the compared sqrt(v), over every entry
  /// (strided subsample of at most ~1M entries when there are more).
  std::vector<double> sqrt_v_quantiles;
  double eps_dominated = 0;             // share of entries with sqrt(v) < eps (exact)
  std::vector<double> tensor_eps_dominated;  // the same per parameter tensor
  /// |m_hat| / |sqrt(v_hat)| over all entries (L2 norms, both moments bias-
  /// corrected): how much of the gradient's size survives Adam's averaging.
  /// A gradient that is the same every update gives 1 (m_hat = g, v_hat =
  /// g^2); zero-mean noise with beta1 = 0.9 gives about
  /// sqrt((1 - beta1) / (1 + beta1)) = 0.23. Mini-batch training sits well
  /// below 1; a gradient that is never zeroed (a running sum that each update
  /// changes by one step's gradient) stays near 1 - the stale-gradient
  /// symptom that does not need the loss to reach 0 (docs/diagnose.md).
  double first_moment_ratio = NAN;
};

/// For `params` (in that order; entries without state count as 0 and NaN).
SecondMomentSummary summarize_second_moments(torch::optim::Optimizer& optimizer,
                                             const std::vector<torch::Tensor>& params);

}  // namespace clinic
