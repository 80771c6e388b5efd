#pragma once
// The training loop: clinic train RECIPE --run-dir DIR.
// Phases of one update (train_update): batches -> forward under autocast ->
// summed loss -> scaled backward (accumulated over update_freq batches) ->
// unscale by 1/(scale * target tokens) + global norm -> skip if non-finite ->
// clip -> lr from schedule -> optimizer step -> scaler update.
#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <string>

#include "framework/amp/grad_scaler.h"
#include "framework/config.h"
#include "framework/distributed/world.h"
#include "framework/data/batcher.h"
#include "framework/data/corpus.h"
#include "framework/data/vocab.h"
#include "framework/diagnostics/instruments.h"
#include "framework/logging.h"
#include "framework/model.h"
#include "framework/optim/schedule.h"
#include "framework/train/checkpoint.h"
#include "framework/train/gradient_carry.h"
#include "framework/train/device_step.h"
#include "framework/train/graphed_update.h"
#include "framework/train/host_reads.h"
#include "framework/train/loss.h"
#include "framework/train/run_dir.h"

namespace clinic {

/// Raised when max_bad_steps consecutive updates were non-finite.
class DivergenceError : public std::runtime_error {
 public:
  explicit DivergenceError(const std::string& w) : std::runtime_error(w) {}
};

struct UpdateStats {
  double loss = 0, nll = 0;  // summed over tokens (nats)
  int64_t tokens = 0;        // target tokens
  double grad_norm = 0;
  bool skipped = false;
  /// train.host_reads: log_interval: decided on the device; loss, nll and
  /// grad_norm are NaN here (the metrics line has their sums) and `skipped`
  /// false (a skip is learnt at the next read).
  bool deferred = false;
  std::string nonfinite_where;  // first module with a non-finite value
};

/// Set by SIGINT/SIGTERM handlers: finish the current update, save, exit 0.
std::atomic<bool>& stop_requested();
void install_stop_signal_handlers();

class Trainer {
 public:
  /// `world`: the processes this trainer shares each update with (null:
  /// one process). Rank 0 alone writes logs, metrics and checkpoints.
  Trainer(RunConfig cfg, std::string run_dir, std::shared_ptr<World> world = nullptr);
  /// Train until a stopping rule fires. Resumes from
  /// run_dir/checkpoint_last.pt when present.
  void fit();
  /// One update over `batches` (gradient accumulation). Public for tests.
  UpdateStats train_update(const std::vector<Batch>& batches);
  /// Mean per-token loss / nll (nats) on the validation split.
  std::pair<double, double> validate();
  /// Corpus BLEU of the validation split decoded with the recipe's eval
  /// settings (train.eval_bleu).
  double validate_bleu();
  /// Writes checkpoint_last.pt once and links the names `reason` adds
  /// ("interval", "epoch", "best", "final"); `best`: also checkpoint_best.pt.
  void save_checkpoint(const std::string& reason, bool best = false);

  /// Set up data, model, optimizer (called by fit; public for tests that
  /// drive train_update themselves).
  void setup();

  Seq2SeqModel& model() { return *model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  LossScaler& scaler() { return *scaler_; }
  TrainState& state() { return state_; }
  /// The stability instruments; null when diag.interval = 0.
  Instruments* instruments() { return instruments_.get(); }
  /// Device-to-host reads the updates made (host_reads.h).
  const HostReads& host_reads() const { return host_reads_; }
  /// Checkpoint serialisations this trainer made (further names are links).
  int64_t checkpoint_writes() const { return checkpoint_writes_; }
  const RunConfig& config() const { return cfg_; }
  const ParallelCorpus& train_data() const { return train_; }
  torch::Device device() const { return device_; }
  /// train.cuda_graph: the captured updates (null when updates are eager).
  const UpdateGraphs* update_graphs() const { return graphs_.get(); }
  /// The capture backend train.cuda_graph uses (before setup(); default
  /// CUDA's graph on CUDA, none elsewhere). A seam for tests.
  void set_graph_capturer(MakeCapturer make) {
    capturer_ = std::move(make);
    capturer_set_ = true;
  }

 private:
  /// The update a graph captures (graphed_update.h): kernels only, reading
  /// the batch and its token count from `statics` and `tokens`.
  void graph_body(const Batch& statics, const torch::Tensor& tokens);
  /// After an update the device decided: the host's counts (device_step.h)
  /// and its stats (NaN figures: read later).
  UpdateStats count_deferred(int64_t tokens);
  void log_update(const UpdateStats& s, double seconds);
  /// train.host_reads: log_interval: read what the device decided since the
  /// last read and make the host's counts exact (device_step.h); no-op in
  /// the eager mode. Throws DivergenceError as the eager path would.
  void sync_host();
  /// Each torch group's lr: its schedule's value for the next update.
  void set_group_lrs();
  /// DivergenceError when the loss scale fell below train.min_loss_scale.
  void check_loss_scale_floor() const;
  bool stop_now(std::string* why) const;
  std::string locate_nonfinite(const Batch& batch);
  CheckpointMeta make_meta() const;
  /// Before a resume: refuse averaged checkpoints and a different model
  /// (naming each differing model.* key), log other recipe changes, restore
  /// missing or damaged vocabulary files from the checkpoint.
  void check_resumable(const std::string& path, const CheckpointMeta& meta);
  bool fixed_source() const { return cfg_.data.source == "fixed_batch"; }

  RunConfig cfg_;
  std::string run_dir_;
  std::shared_ptr<World> world_;
  std::unique_ptr<RunDirLock> lock_;  // held while this trainer owns run_dir_
  torch::Device device_{torch::kCPU};
  at::ScalarType compute_dtype_ = at::kFloat;
  Vocabularies vocab_;
  ParallelCorpus train_, valid_;
  Batch fixed_;  // data.source = fixed_batch
  std::shared_ptr<Seq2SeqModel> model_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<torch::Tensor> params_;
  std::vector<Schedule> schedules_;  // [0] the recipe's, [i + 1] optim.groups[i]'s
  std::vector<int> group_of_;        // per torch param group: its optim.groups index (-1: top)
  Criterion loss_fn_;
  std::unique_ptr<LossScaler> scaler_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<Instruments> instruments_;
  GradientCarry carry_{false};  // train.zero_grad: false
  HostReads host_reads_;
  std::unique_ptr<DeviceStep> device_step_;  // train.host_reads: log_interval
  GuardedStep* guarded_ = nullptr;           // optimizer_ as a guarded step
  int64_t unread_updates_ = 0, unread_tokens_ = 0;  // counted by the host since the last read
  std::vector<std::pair<double, int64_t>> unread_lr_;  // with instruments: (lr, tokens) per unread update
  bool eager_once_ = false;  // this update is decided on the host (instruments measure it)
  std::unique_ptr<UpdateGraphs> graphs_;  // train.cuda_graph
  CapturableStep* capturable_ = nullptr;  // optimizer_ as a capturable step, with graphs_
  MakeCapturer capturer_;
  bool capturer_set_ = false;
  bool said_refused_ = false;  // the capture-failure line is logged once
  // What checkpoint_last.pt holds: (update, skipped, epoch, batch, best
  // valid, best BLEU, stalled) of the last write: one state, one serialisation.
  std::optional<std::tuple<int64_t, int64_t, int64_t, int64_t, double, double, int64_t>> last_written_;
  int64_t checkpoint_writes_ = 0;
  TrainState state_;
  int64_t bad_in_a_row_ = 0;
  double start_wall_ = 0;
  // Accumulated between log lines.
  double log_loss_ = 0, log_nll_ = 0, log_gnorm_ = 0;
  double log_comm_s_ = 0;  // data parallel: seconds waiting for the gradient sums
  int64_t log_tokens_ = 0, log_updates_ = 0, log_skipped_ = 0;
  double log_t0_ = 0;
  bool is_setup_ = false;
};

/// train.device resolved ("auto": cuda when available); a rank of a
/// data-parallel CUDA job gets cuda:LOCAL_RANK.
torch::Device pick_device(const std::string& device, const World& world = World());
/// Set intra-op threads (0 = cores) and return the count used.
int64_t configure_threads(int64_t threads);
double now_seconds();

}  // namespace clinic
