#pragma once
// The trainer's stability instruments (issue "stability instruments"; Liu et
// al. 2020's measurements). They observe and never steer: measurements run
// in eval mode (no dropout, so no draw from the training RNG) under
// NoGradGuard on a fixed probe batch, the random perturbation uses its own
// generator and is undone by copying the saved weights back, and nothing is
// written to the model, the optimizer or the RNG. A run is bit-identical with
// them on or off; with diag.interval = 0 the trainer does not create them.
//
// Every diag.interval updates, around the optimizer step of update t:
//   before_step: probe forward at W_t (StabilityProbe: dependency, branch
//     ratios, LayerNorm input RMS, omega, attention entropy / max prob /
//     same-key share / collapse), per-tensor gradient and weight norms, a
//     forward at W_t + delta (random, |delta|_F = perturbation * |W|_F per
//     weight matrix, sign of N(0, 1) entries) for the random output change;
//   after_step: a forward at W_{t+1} for the update output change, per-tensor
//     update norms |W_{t+1} - W_t|, the optimizer's second moments against eps;
//   then one {"event": "diag"} record (docs/instruments.md).
// Every update: the loss-spike detector, {"event": "spike"} records.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/diagnostics/probe.h"
#include "framework/diagnostics/spikes.h"
#include "framework/logging.h"
#include "framework/model.h"

namespace clinic {

/// One eval-mode, no-grad forward of `batch` with a StabilityProbe attached:
/// per-stack statistics (when `stats`) and states, and the encoder and
/// decoder outputs (non-padding rows, fp32 on the CPU). The model's mode is
/// restored.
struct ProbeOutputs {
  std::map<std::string, StackProbe> stacks;
  torch::Tensor encoder_out, decoder_out;  // [N, d]
  /// With stats: per real target token, its logit minus the largest other
  /// logit (nats; eval mode) [N]. A loss jump of J nats on a token needs its
  /// margin overturned to -J, so margins far above any jump rule out
  /// spikes from noise alone (docs/cases.md, case B).
  torch::Tensor logit_margins;
  /// With stats, for a model that conditions on a source: the probe tokens'
  /// mean NLL (bits, eval mode) with their own sources, and with each
  /// sentence's source swapped for the previous probe sentence's (rows
  /// rotated by one). A model that translates loses much to the swap; one
  /// that learned a target-side language model (its decoder ignores the
  /// encoder: Liu et al. 2020 Table 1's Post-LN encoder / Pre-LN decoder at
  /// CPU scale, docs/analysis.md; or a misaligned corpus) loses nothing.
  /// NaN when not measured.
  double nll_bits = NAN, nll_rotated_source_bits = NAN;
};
/// The margins of `logits` [N, V] at `target` [N]: logit[target] - max of the rest.
torch::Tensor logit_margins(const torch::Tensor& logits, const torch::Tensor& target);
ProbeOutputs probe_forward(Seq2SeqModel& model, const Batch& batch, bool stats);
/// |s(a) - s(b)|^2 per token, averaged, for every state of `stack` after i
/// sublayers (i = 0: embeddings) and, last, for the stack output.
std::vector<double> output_changes(const ProbeOutputs& a, const ProbeOutputs& b,
                                   const std::string& stack);

/// Per stack and layer, the norm over all tensors of that layer (parameter
/// names "<stack>_layers.<i>.", or "layers.<i>." for an encoder-only model's
/// one stack, counted as "encoder"): sqrt of the sum of the tensors' squared
/// norms. Tensors outside the layers (embeddings, final norms) are skipped.
std::map<std::string, std::vector<double>> per_layer_norms(const std::vector<std::string>& names,
                                                           const std::vector<double>& norms);

class Instruments {
 public:
  /// `probe`: the fixed batch (already on the model's device).
  Instruments(const DiagConfig& cfg, Seq2SeqModel& model, torch::optim::Optimizer& optimizer,
              MetricsWriter& metrics, Batch probe, uint64_t seed);
  ~Instruments();
  /// Whether update `update` (1-based, the one about to run) is measured.
  bool due(int64_t update) const { return cfg_.interval > 0 && update % cfg_.interval == 0; }
  /// Around the optimizer step of a measured update (gradients final, unclipped).
  void before_step(int64_t update);
  void after_step();
  /// Every applied update: the spike detector (loss in bits per token).
  void on_update(int64_t update, double loss_bits, double lr, double grad_norm);
  /// Spikes since the previous call (for the log line), and over the run.
  int64_t take_spike_count();
  int64_t total_abs_spikes() const { return total_abs_; }
  int64_t total_robust_spikes() const { return total_robust_; }

  const Batch& probe() const { return probe_; }
  SpikeDetector& spikes() { return spikes_; }

 private:
  std::unique_ptr<ProbeOutputs> run_probe(bool stats);
  DiagConfig cfg_;
  Seq2SeqModel& model_;
  torch::optim::Optimizer& optimizer_;
  MetricsWriter& metrics_;
  Batch probe_;
  uint64_t seed_;
  SpikeDetector spikes_;
  int64_t spikes_since_ = 0, total_abs_ = 0, total_robust_ = 0;
  // Between before_step and after_step of a measured update.
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_, snapshot_;
  std::vector<double> grad_norm_;  // per tensor, before clipping
  std::unique_ptr<ProbeOutputs> base_, random_;
  MetricsRecord pending_;
};

/// A probe batch: `n` sentences of `corpus` drawn with `seed` (the same
/// sentences for the same corpus and seed).
std::vector<int64_t> choose_probe_rows(int64_t corpus_size, int64_t n, uint64_t seed);

}  // namespace clinic
