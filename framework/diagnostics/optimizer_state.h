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
};

/// For `params` (in that order; entries without state count as 0 and NaN).
SecondMomentSummary summarize_second_moments(torch::optim::Optimizer& optimizer,
                                             const std::vector<torch::Tensor>& params);

}  // namespace clinic
