#pragma once
// The seam through which an update reads device values back to the host
// (issue 33). On CUDA every read waits for the queued kernels to finish, so
// the trainer makes as few as it can and makes them here, where a test can
// count them: one packed copy per update today (the gradient norm, loss and
// nll the skip, clip and scaler decisions need), none from the logging or
// the token count (the batcher knows it on the host).
#include <torch/torch.h>

#include <vector>

namespace clinic {

class HostReads {
 public:
  /// The values of a 1-d tensor as doubles: one device-to-host copy.
  std::vector<double> values(const torch::Tensor& t) {
    ++count_;
    torch::Tensor h = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
    return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
  }
  /// Reads made so far.
  int64_t count() const { return count_; }

 private:
  int64_t count_ = 0;
};

}  // namespace clinic
