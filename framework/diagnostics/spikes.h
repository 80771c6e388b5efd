#pragma once
// Loss-spike detector, run on every update's training loss (bits/token).
// Two rules, each reported:
//  - abs:    loss - previous loss >= spike_abs (the "jumps by >= 10" count of
//            the reports clinic was built for);
//  - robust: loss - median >= spike_z * max(1.4826 * MAD, 0.01) over the
//            previous `window` losses (median absolute deviation; the floor
//            keeps a loss that sat at exactly 0 from flagging every 1e-6).
// Non-finite losses are not spikes (they are "nonfinite" events).
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace clinic {

/// The median of v (the mean of the two middle values for an even count);
/// v must not be empty.
double median_of(std::vector<double> v);

struct Spike {
  bool abs = false, robust = false;
  double loss = 0, previous = 0, median = 0, mad = 0;
  bool any() const { return abs || robust; }
  /// "abs", "robust" or "abs+robust".
  std::string rule() const;
};

class SpikeDetector {
 public:
  SpikeDetector(double spike_abs, int64_t window, double z)
      : abs_(spike_abs), window_(window), z_(z) {}
  /// Feeds one update's loss; says whether (and by which rule) it spiked.
  Spike observe(double loss);
  /// The window (oldest first), for checkpoints: a resumed run continues the
  /// same series.
  std::vector<double> state() const { return {recent_.begin(), recent_.end()}; }
  void restore(const std::vector<double>& recent);

 private:
  double abs_;
  int64_t window_;
  double z_;
  std::deque<double> recent_;
};

}  // namespace clinic
