#pragma once
// The decisions of an update made on the device (issue 33 item 1), so an
// update never waits for the device: train.host_reads: log_interval (the
// default on CUDA). What the eager path decides on the host after reading
// the gradient norm and the loss every update (scaled_step.h) is here a few
// 0-dim tensor ops the device runs in order:
//   ok      = finite(grad norm) and finite(loss)
//   clip    = clip / (norm + 1e-6) where ok and norm > clip, else 1
//   step    guarded by ok (GuardedStep: a skip changes no parameter or moment)
//   scaler  fairseq's DynamicLossScaler rule (grad_scaler.h) on a device
//           copy of its state: /2 on an overflow (floored), x2 after `window`
//   tallies loss, nll, tokens and norm of the updates that stepped; skips;
//           non-finite skips the scaler does not account for, and how many
//           in a row (train.max_bad_steps).
// The host reads it all in one copy (HostReads) every log_interval updates
// and wherever it must be exact (validation, checkpoints, the stop rules),
// then takes back the updates it counted that were skipped (update count,
// optimizer step counts), and hands the stability instruments each update's
// loss in order. An update the instruments measure is decided on the host
// (the trainer reads first, then takes the eager path). Until then the updates after a skip ran with a
// step count and an lr one update ahead; the first non-finite value cannot
// be localised after the fact (train.host_reads: every_update does).
#include <torch/torch.h>

#include <array>
#include <functional>
#include <vector>

#include "framework/amp/grad_scaler.h"
#include "framework/config.h"
#include "framework/optim/multi_tensor.h"
#include "framework/train/host_reads.h"

namespace clinic {

/// What the device tallied since the previous read.
struct DeviceTally {
  double loss = 0, nll = 0, grad_norm = 0;  // sums over the updates that stepped (nats)
  int64_t tokens = 0;                       // their target tokens
  int64_t stepped = 0, skipped = 0;
  int64_t nonfinite = 0;  // skips the loss scaler does not account for
  int64_t bad_run = 0;    // such skips in a row, now
  int64_t max_bad_run = 0;  // the longest such run seen since the previous read
  /// With record_updates: per update since the previous read, in order,
  /// {loss sum (0 when skipped), grad norm, 1 stepped / 0 skipped}.
  std::vector<std::array<double, 3>> updates;
};

class DeviceStep {
 public:
  /// `scaler`: the host scaler whose state the device copy starts from and
  /// is written back to at each read.
  DeviceStep(torch::Device device, LossScaler& scaler, const TrainConfig& train);
  /// The loss scale (0-dim double on the device; 1 without the scaler).
  const torch::Tensor& scale() const { return scale_; }
  /// The update's target tokens as the 0-dim double on the device that
  /// unscale_and_norm and step take (a graph reads it: train.cuda_graph).
  torch::Tensor tokens(int64_t n) const { return scalar(static_cast<double>(n)); }
  /// Gradients times 1 / (scale * tokens) (the update's mean over tokens,
  /// unscaled) and their global L2 norm (0-dim float, non-finite when any is).
  torch::Tensor unscale_and_norm(const std::vector<torch::Tensor>& params,
                                 const torch::Tensor& tokens);
  /// Decide, clip, guard and run `optimizer_step` (the optimizer's step and
  /// whatever host work precedes it eagerly; launch() alone in a graph), and
  /// tally. Kernels only, whose arguments are the same every update: the
  /// body of a captured update (graphed_update.h).
  void step(const torch::Tensor& loss_sum, const torch::Tensor& nll_sum, const torch::Tensor& norm,
            const torch::Tensor& tokens, const std::vector<torch::Tensor>& params,
            GuardedStep& guarded, const std::function<void()>& optimizer_step);
  /// After each step (eager or replayed): with record_updates, a copy of the
  /// update's {loss, norm, stepped} for the next read.
  void keep_last();
  /// One device-to-host copy: the tally since the last read (then reset)
  /// and the scaler's state, written to the host scaler.
  DeviceTally read(HostReads& reads);
  /// The host scaler's state and the host's count of non-finite updates in
  /// a row into the device copies (after a resume, after an update the host
  /// decided).
  void load_host(int64_t bad_run = 0);
  /// Keep each update's loss and norm for the next read (the stability
  /// instruments' spike detector wants every update's loss, late is fine).
  void record_updates(bool on) { record_ = on; }

 private:
  torch::Tensor scalar(double v) const;
  LossScaler& scaler_;
  TrainConfig train_;
  torch::TensorOptions opts_;
  // scale_, sstate_, tally_ and last_ keep their memory for the run: a
  // captured update reads and writes them in place.
  torch::Tensor scale_;   // 0-dim: the scale the next update multiplies its loss by
  torch::Tensor sstate_;  // [iter, last_overflow_iter, last_rescale_iter]
  torch::Tensor tally_;   // [loss, nll, tokens, grad_norm, stepped, skipped, nonfinite, bad_run, max_bad_run]
  bool record_ = false;
  torch::Tensor last_;  // [loss, norm, stepped] of the last step (written in place)
  std::vector<torch::Tensor> records_;  // per unread update: copies of last_
};

}  // namespace clinic
