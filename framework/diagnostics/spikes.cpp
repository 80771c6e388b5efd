#include "framework/diagnostics/spikes.h"

#include <algorithm>
#include <cmath>

namespace clinic {

std::string Spike::rule() const {
  if (abs && robust) return "abs+robust";
  return abs ? "abs" : robust ? "robust" : "";
}

double median_of(std::vector<double> v) {
  size_t n = v.size(), h = n / 2;
  std::nth_element(v.begin(), v.begin() + h, v.end());
  double hi = v[h];
  if (n % 2) return hi;
  return 0.5 * (hi + *std::max_element(v.begin(), v.begin() + h));
}

Spike SpikeDetector::observe(double loss) {
  Spike s;
  s.loss = loss;
  if (!std::isfinite(loss)) return s;
  if (!recent_.empty()) {
    s.previous = recent_.back();
    s.abs = loss - s.previous >= abs_;
    // The robust rule needs a window's worth of history.
    if (static_cast<int64_t>(recent_.size()) >= std::min<int64_t>(window_, 5)) {
      std::vector<double> v(recent_.begin(), recent_.end());
      s.median = median_of(v);
      for (auto& x : v) x = std::abs(x - s.median);
      s.mad = median_of(v);
      s.robust = loss - s.median >= z_ * std::max(1.4826 * s.mad, 0.01);
    }
  }
  recent_.push_back(loss);
  while (static_cast<int64_t>(recent_.size()) > window_) recent_.pop_front();
  return s;
}

void SpikeDetector::restore(const std::vector<double>& recent) {
  recent_.assign(recent.begin(), recent.end());
  while (static_cast<int64_t>(recent_.size()) > window_) recent_.pop_front();
}

}  // namespace clinic
