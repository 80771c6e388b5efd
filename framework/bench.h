#pragma once
// clinic bench: training (and optionally decoding) throughput of a recipe's
// model on synthetic batches, against this machine's measured GEMM peak.
#include <ostream>
#include <string>

#include <torch/torch.h>

#include "framework/config.h"

namespace clinic {

struct BenchOptions {
  int64_t steps = 5;
  int64_t warmup = 1;
  bool json = false;
  bool translate = false;
  int64_t seq_len = 32;  // source and target length of the synthetic rows
  /// Also time tools/bench/reference_train.py (plain PyTorch, same model,
  /// weights and batch), alternating with clinic, and report the ratio.
  bool compare_python = false;
  /// When set: a Chrome trace (LibTorch's legacy profiler) of one extra update
/// after the timed ones, written here.
  std::string profile;
  /// Also time the stability instruments (diag.*): one full measurement
  /// around every timed update and the spike detector, each timed apart from
  /// the training step, and report their cost at the recipe's diag.interval.
  bool diag = false;
  /// Synthetic batches: "random" (uniform targets: throughput only) or
  /// "copy" (target = source: a learnable task whose loss curve falls, so
  /// precisions can be compared update by update).
  std::string task = "random";
  /// Points of the loss curve in --json ("loss_curve"), evenly spaced.
  int64_t curve_points = 20;
  /// Time the updates back to back as training runs them with
  /// train.host_reads: log_interval: batches drawn on the device, each
  /// update decided there (device_step.h), no synchronisation or read until
  /// the last timed update (the loss curve is kept on the device). No phase
  /// split; not with --compare-python, --diag or --profile.
  bool throughput = false;
  /// When set: the freshly initialised model as TorchScript, written here
  /// before the first update (the weights tools/bench/reference_train.py
  /// starts from in scripts/gpu-check.sh perf).
  std::string save_init;
};

/// Analytic matmul FLOPs of one training update (3x forward: forward,
/// input-gradient and weight-gradient GEMMs) for B rows of S source and
/// T target tokens.
double transformer_train_flops(const ModelConfig& m, int64_t vocab, int64_t B,
                               int64_t S, int64_t T);
/// Best of a few n x n torch::mm in `dtype` on `device`, in GFLOP/s (the
/// MFU denominator; on CUDA each product is timed between synchronisations).
double measure_gemm_peak(int64_t n, at::ScalarType dtype,
                         const torch::Device& device = torch::kCPU);
void run_bench(const RunConfig& cfg, const BenchOptions& opts, std::ostream& out);

}  // namespace clinic
