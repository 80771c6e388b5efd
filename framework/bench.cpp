#include "framework/bench.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <torch/version.h>

#include <unistd.h>

#include <filesystem>
#include <optional>
#include <regex>
#include <sstream>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "clinic_paths.h"
#include "framework/amp/autocast.h"
#include "framework/amp/grad_scaler.h"
#include "framework/device_memory.h"
#include "framework/data/subprocess.h"
#include "framework/data/text.h"
#include "framework/diagnostics/instruments.h"
#include "framework/errors.h"
#include "framework/eval/search.h"
#include "framework/logging.h"
#include "framework/model.h"
#include "framework/optim/optimizers.h"
#include "framework/optim/schedule.h"
#include "framework/train/loss.h"
#include "framework/train/device_step.h"
#include "framework/train/graphed_update.h"
#include "framework/train/scaled_step.h"
#include "framework/train/trainer.h"

namespace clinic {

double transformer_train_flops(const ModelConfig& m, int64_t V, int64_t B,
                               int64_t S, int64_t T) {
  const double d = m.d_model, f = m.ffn_dim;
  // Per token, 2 FLOPs per multiply-add.
  double enc_tok = 2 * 4 * d * d + 2 * 2 * S * d + 2 * 2 * d * f;
  double dec_tok = 2 * 4 * d * d + 2 * 2 * T * d      // self-attention
                   + 2 * 2 * d * d + 2 * 2 * S * d    // cross q, out; scores
                   + 2 * 2 * d * f;                   // FFN
  double cross_kv_per_src = 2 * 2 * d * d;
  double fwd = B * S * m.encoder_layers * enc_tok +
               B * T * m.decoder_layers * dec_tok +
               B * S * m.decoder_layers * cross_kv_per_src + B * T * 2 * d * V;
  return 3 * fwd;
}

double measure_gemm_peak(int64_t n, at::ScalarType dtype, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(dtype).device(device);
  auto a = torch::randn({n, n}, opts), b = torch::randn({n, n}, opts);
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto c = torch::mm(a, b);  // warm the kernels and the allocator
  sync();
  double best = 0;
  for (int i = 0; i < (device.is_cuda() ? 10 : 5); ++i) {
    double t0 = now_seconds();
    c = torch::mm(a, b);
    sync();
    double dt = now_seconds() - t0;
    best = std::max(best, 2.0 * n * n * n / dt / 1e9);
  }
  return best;
}

namespace {
double json_number(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": ([-0-9.eE+]+)")))
    throw std::runtime_error("reference_train.py printed no " + key + ": " + json);
  return std::stod(m[1]);
}

double peak_rss_mb() { return process_memory().peak_rss_mb; }
}  // namespace

void run_bench(const RunConfig& cfg, const BenchOptions& o, std::ostream& out) {
  int64_t threads = configure_threads(cfg.train.threads);
  torch::manual_seed(static_cast<uint64_t>(cfg.train.seed));
  auto device = pick_device(cfg.train.device);
  const int64_t V = cfg.data.vocab_size, L = o.seq_len;
  const int64_t B = std::max<int64_t>(1, cfg.data.max_tokens / L);
  VocabInfo info{V, V, cfg.data.joint_vocab};
  auto model = build_model(cfg.model, info);
  model->to(device);
  model->train();
  // each group at its peak lr; --throughput decides on the device
  auto opt = build_optimizer(*model, resolve_foreach(cfg.optim, o.throughput));
  auto loss_fn = loss_registry().get(cfg.train.criterion)(cfg.train);
  at::ScalarType dtype = cfg.train.precision == "bf16" ? at::kBFloat16
                         : (cfg.train.precision == "fp16" && device.is_cuda()) ? at::kHalf
                                                                              : at::kFloat;
  // --throughput draws on the device (no host-to-device copy per update);
  // on the CPU both draw from the same generator, so the batches are equal.
  auto rand_ids = [&](int64_t rows, int64_t len) {
    return torch::randint(kEos + 1, V, {rows, len},
                          torch::TensorOptions(torch::kLong).device(o.throughput ? device : torch::kCPU));
  };
  if (o.task != "random" && o.task != "copy")
    throw ConfigError("bench --task " + o.task + ": expected random or copy");
  // A batch of the task: copy reads its target from the source (teacher
  // forcing on BOS + source[:-1]).
  auto make_batch = [&] {
    Batch b;
    b.src = rand_ids(B, L).to(device);
    b.tgt_out = o.task == "copy" ? b.src : rand_ids(B, L).to(device);
    b.tgt_in = o.task == "copy"
                   ? torch::cat({torch::full({B, 1}, kBos, b.src.options()), b.src.narrow(1, 0, L - 1)}, 1)
                   : rand_ids(B, L).to(device);
    return b;
  };
  // fp16 trains as the trainer does: scaled loss, unscaled gradients, an
  // overflowing update skipped and the scale halved (LossScaler).
  LossScaler scaler(cfg.train.loss_scale_init, cfg.train.loss_scale_window,
                    cfg.train.threshold_loss_scale, cfg.train.precision == "fp16");
  std::vector<torch::Tensor> params;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) params.push_back(p);
  int64_t overflows = 0, growths = 0;
  std::vector<std::pair<int64_t, double>> curve;
  const int64_t curve_every = std::max<int64_t>(1, o.steps / std::max<int64_t>(1, o.curve_points));
  // One fixed batch in --compare-python mode, so both sides see the same input.
  Batch fixed = make_batch();
  std::string tmp, py_cmd;
  double loss_eval = 0, py_loss_eval = 0, py_tps = 0, py_runs = 0;
  if (o.compare_python) {
    tmp = (std::filesystem::temp_directory_path() / ("clinic-bench-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(tmp);
    model->to_torchscript().save(tmp + "/model.pt");
    torch::jit::Module bm("Batch");
    bm.register_buffer("src", fixed.src.cpu());
    bm.register_buffer("tgt_in", fixed.tgt_in.cpu());
    bm.register_buffer("tgt_out", fixed.tgt_out.cpu());
    bm.save(tmp + "/batch.pt");
    model->eval();
    {
      torch::NoGradGuard g;
      loss_eval = loss_fn(model->forward(fixed.src, fixed.tgt_in), fixed.tgt_out).loss.item<double>() /
                  static_cast<double>(B * L);
    }
    model->train();
    const auto& m = cfg.model;
    py_cmd = fmt::format(
        "/usr/bin/python3 {}/tools/bench/reference_train.py {}/model.pt {}/batch.pt --steps {} "
        "--threads {} --lr {} --label-smoothing {} --dropout {} --attention-dropout {} "
        "--activation-dropout {}{}",
        kClinicSourceDir, tmp, tmp, std::max<int64_t>(1, (o.steps + 1) / 2), threads, cfg.optim.lr,
        cfg.train.label_smoothing, m.dropout, m.attention_dropout, m.activation_dropout,
        m.residual == "pre_ln" ? " --pre-ln" : "");
  }
  auto run_python = [&] {
    std::string out;
    auto r = run_command({"/bin/sh", "-c", py_cmd}, &out);
    if (r.exit_code != 0) throw std::runtime_error("reference_train.py failed: " + r.err);
    py_loss_eval = json_number(out, "loss_eval");
    py_tps += json_number(out, "tokens_per_s");
    py_runs += 1;
  };
  double t_data = 0, t_fwd = 0, t_bwd = 0, t_opt = 0;
  double last_loss = 0;
  // RSS after the first timed update vs after the last: an allocator that
  // fails to reuse freed memory shows up here as growth per update.
  double rss_first = 0, rss_last = 0;
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  const int64_t profiled = o.profile.empty() ? 0 : 1;
  if (profiled) {  // fail before the run, not after it
    auto dir = std::filesystem::path(o.profile).parent_path();
    if (dir.empty()) dir = ".";
    if (::access(dir.c_str(), W_OK) != 0)
      throw DataError(fmt::format("--profile {}: directory {} does not exist or is not writable",
                                  o.profile, dir.string()));
  }
  // Collected in memory, written atomically after the run: an existing file
  // at that path stays intact if anything fails first.
  std::ostringstream trace;
  // --diag: the instruments around every timed update, timed on their own.
  std::unique_ptr<MetricsWriter> diag_metrics;
  std::unique_ptr<Instruments> instruments;
  std::string diag_file;
  double t_measure = 0, t_spike = 0;
  if (o.diag) {
    diag_file = (std::filesystem::temp_directory_path() /
                 ("clinic-bench-diag-" + std::to_string(::getpid()) + ".jsonl")).string();
    diag_metrics = std::make_unique<MetricsWriter>(diag_file);
    Batch probe;
    const int64_t n = cfg.diag.probe_sentences;
    probe.src = rand_ids(n, L).to(device);
    probe.tgt_in = rand_ids(n, L).to(device);
    probe.tgt_out = rand_ids(n, L).to(device);
    DiagConfig dc = cfg.diag;
    dc.interval = 1;
    instruments = std::make_unique<Instruments>(dc, *model, *opt, *diag_metrics, probe,
                                                static_cast<uint64_t>(cfg.train.seed));
  }
  if (!o.save_init.empty()) {  // before any update; serialised in memory, written atomically
    std::ostringstream bytes;
    model->to_torchscript().save(bytes);
    write_file_atomic(o.save_init, bytes.str());
  }
  // --throughput: the trainer's deferred step (device_step.h).
  std::unique_ptr<DeviceStep> device_step;
  GuardedStep* guarded = nullptr;
  HostReads reads;
  std::vector<std::pair<int64_t, torch::Tensor>> device_curve;
  double t_start = 0, t_total = 0;
  if (o.throughput) {
    if (o.compare_python || o.diag || profiled)
      throw ConfigError("bench --throughput times updates back to back: not with "
                        "--compare-python, --diag or --profile, which time phases");
    guarded = dynamic_cast<GuardedStep*>(opt.get());
    if (guarded == nullptr || !guarded->can_guard())
      throw ConfigError("bench --throughput decides each update on the device: it needs "
                        "optim.foreach: true and adam, adamw or radam");
    device_step = std::make_unique<DeviceStep>(device, scaler, cfg.train);
  }
  // --throughput with train.cuda_graph: the trainer's captured update
  // (graphed_update.h) on the bench's one batch shape: the batch copied into
  // static buffers, the optimizer's stage() on the host, the rest one replay.
  std::unique_ptr<UpdateGraphs> graphs;
  CapturableStep* capturable = nullptr;
  if (cfg.train.cuda_graph && !o.throughput)
    throw ConfigError("bench: train.cuda_graph times captured updates back to back: add --throughput");
  if (o.throughput && cfg.train.cuda_graph) {
    capturable = dynamic_cast<CapturableStep*>(opt.get());
    if (capturable == nullptr)
      throw ConfigError("bench --throughput with train.cuda_graph: optim." + cfg.optim.name +
                        " has no capturable step");
    capturable->set_capturable(true);
    for (auto& p : params)  // a graph needs every gradient before its first backward
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    device_step->record_updates(true);  // each update's loss: the curve, read after the clock
    graphs = std::make_unique<UpdateGraphs>(
        [&](const Batch& b, const torch::Tensor& tokens) {
          for (auto& p : params) p.mutable_grad().zero_();  // in place: a graph keeps them
          DecoderFeatures f;
          {
            AutocastGuard ag(device.type(), dtype);
            f = model->forward_features(b.src, b.tgt_in);
          }
          LossOut lo = loss_fn(f, b.tgt_out, dtype);
          (scaler.enabled() ? lo.loss * device_step->scale() : lo.loss).backward();
          torch::Tensor norm = device_step->unscale_and_norm(params, tokens);
          device_step->step(lo.loss.detach(), lo.nll, norm, tokens, params, *guarded,
                            [&] { capturable->launch(); });
        },
        [&](int64_t n) { return device_step->tokens(n); },
        device.is_cuda() ? cuda_graph_capturer() : nullptr);
  }
  // Gradients zeroed, forward under autocast, the criterion's summed loss.
  auto forward_loss = [&](const Batch& b) {
    opt->zero_grad();
    DecoderFeatures out;
    {
      AutocastGuard ag(device.type(), dtype);
      out = model->forward_features(b.src, b.tgt_in);
    }
    return loss_fn(out, b.tgt_out, dtype);
  };
  for (int64_t step = 0; step < o.warmup + o.steps + profiled; ++step) {
    bool timed = step >= o.warmup && step < o.warmup + o.steps;
    if (o.throughput) {
      if (step == o.warmup) {
        sync();
        reset_device_peak_memory(device);
        t_start = now_seconds();
      }
      if (graphs) {
        Batch b = make_batch();
        b.tgt_tokens = b.src_tokens = B * L;
        capturable->stage();
        graphs->run(b, capturable->layout());
        device_step->keep_last();
      } else {
        auto lo = forward_loss(make_batch());
        (scaler.enabled() ? lo.loss * device_step->scale() : lo.loss).backward();
        const torch::Tensor tokens = device_step->tokens(B * L);
        torch::Tensor norm = device_step->unscale_and_norm(params, tokens);
        device_step->step(lo.loss, lo.nll, norm, tokens, params, *guarded, [&] { opt->step(); });
        if (timed && ((step - o.warmup) % curve_every == 0 || step == o.warmup + o.steps - 1))
          device_curve.emplace_back(step - o.warmup + 1, lo.loss.detach().to(torch::kDouble) /
                                                             static_cast<double>(B * L));
      }
      if (step == o.warmup) rss_first = process_memory().rss_mb;
      if (step == o.warmup + o.steps - 1) {
        sync();
        t_total = now_seconds() - t_start;
        rss_last = process_memory().rss_mb;
      }
      continue;
    }
    // One extra, untimed update under the profiler: its overhead skews no figure.
    std::optional<torch::autograd::profiler::RecordProfile> prof;
    if (step == o.warmup + o.steps && profiled) prof.emplace(trace);
    // A/B alternation: the Python reference runs between the two halves.
    if (o.compare_python && step == o.warmup + o.steps / 2) run_python();
    double t0 = now_seconds();
    if (step == o.warmup) reset_device_peak_memory(device);
    Batch b = o.compare_python ? fixed : make_batch();
    double t1 = now_seconds();
    auto lo = forward_loss(b);
    auto loss = lo.loss / static_cast<double>(B * L);
    sync();
    double t2 = now_seconds();
    const double scale = scaler.scale();
    (scale != 1.0 ? loss * scale : loss).backward();
    // The unscale and norm only where a rule reads them (the scaler, clipping).
    double gn = 0;
    if (scaler.enabled() || cfg.train.clip_norm > 0)
      gn = scale_grads_and_norm(params, 1.0 / scale).item<double>();
    sync();
    double t3 = now_seconds();
    // The trainer's step rule itself (scaled_step.h), the instruments'
    // measurement in the same place, timed apart from training.
    double td = 0;
    bool measured = false;
    StepHooks hooks;
    hooks.before_clip = [&](double norm) {
      if (instruments && timed) {
        double m0 = now_seconds();
        instruments->before_step(step + 1);
        sync();
        td = now_seconds() - m0;
        measured = true;
      }
      return norm;
    };
    const bool overflow = !scaled_step(scaler, std::isfinite(gn), gn, cfg.train.clip_norm, params,
                                       *opt, hooks);
    if (scaler.enabled()) {
      overflows += overflow;
      growths += scaler.scale() > scale;
    }
    sync();
    double t4 = now_seconds();
    last_loss = loss.item<double>();
    if (timed && ((step - o.warmup) % curve_every == 0 || step == o.warmup + o.steps - 1))
      curve.emplace_back(step - o.warmup + 1, last_loss);
    if (instruments && timed) {
      double m0 = now_seconds();
      if (measured) instruments->after_step();
      sync();
      double m1 = now_seconds();
      instruments->on_update(step + 1, last_loss / std::log(2.0), cfg.optim.lr, 0.0);
      double m2 = now_seconds();
      t_measure += td + (m1 - m0);
      t_spike += m2 - m1;
    }
    if (step == o.warmup) rss_first = process_memory().rss_mb;
    if (step == o.warmup + o.steps - 1) rss_last = process_memory().rss_mb;
    if (timed) {
      t_data += t1 - t0;
      t_fwd += t2 - t1;
      t_bwd += t3 - t2;
      t_opt += t4 - t3 - td;  // the measurement before the step is not training time
    }
  }
  if (o.throughput) {  // after the clock: the curve and the scaler's counts
    const DeviceTally t = device_step->read(reads);
    overflows = t.skipped;
    // x2 per growth, /2 per overflow: exact while no floor clamps a halving.
    if (cfg.train.threshold_loss_scale == 0 && scaler.enabled())
      growths = static_cast<int64_t>(std::llround(std::log2(scaler.scale() / cfg.train.loss_scale_init))) +
                overflows;
    for (size_t i = 0; i < t.updates.size(); ++i) {  // graphed: every update's record
      const int64_t k = static_cast<int64_t>(i) - o.warmup;  // timed update k + 1
      if (k >= 0 && (k % curve_every == 0 || k == o.steps - 1)) {
        last_loss = t.updates[i][0] / static_cast<double>(B * L);
        curve.emplace_back(k + 1, last_loss);
      }
    }
    if (graphs && !graphs->refused().empty())
      throw std::runtime_error("bench: train.cuda_graph: capture failed (" + graphs->refused() +
                               "); the figures would be eager ones");
    std::vector<torch::Tensor> ls;
    for (const auto& [u, l] : device_curve) ls.push_back(l.reshape({1}));
    if (!ls.empty()) {
      const std::vector<double> v = reads.values(torch::cat(ls));
      for (size_t i = 0; i < v.size(); ++i) curve.emplace_back(device_curve[i].first, v[i]);
      last_loss = v.back();
    }
  }
  if (o.compare_python) {
    run_python();
    std::filesystem::remove_all(tmp);
  }
  if (profiled) write_file_atomic(o.profile, trace.str());
  if (!diag_file.empty()) std::filesystem::remove(diag_file);
  double rss_growth = rss_last - rss_first;
  // --throughput: no phase split (the phase fields stay 0), the wall time.
  double total = o.throughput ? t_total : t_data + t_fwd + t_bwd + t_opt;
  double ups = o.steps / total;
  double flops = transformer_train_flops(cfg.model, V, B, L, L);
  double achieved = flops * ups / 1e9;
  const double device_peak_mb = device_peak_memory_mb(device);
  double peak = measure_gemm_peak(device.is_cuda() ? 8192 : 2048, dtype, device);
  double tok = 2.0 * B * L * ups, tgt_tok = 1.0 * B * L * ups;
  // Instruments: one measurement's cost spread over diag.interval updates,
  // plus the spike detector on every update, against one update's time.
  const double measure_s = o.diag ? t_measure / o.steps : 0, spike_s = o.diag ? t_spike / o.steps : 0;
  const double diag_overhead =
      cfg.diag.interval > 0 ? (measure_s / cfg.diag.interval + spike_s) / (total / o.steps) : 0.0;
  const std::string diag_json =
      o.diag ? fmt::format(", \"diag_interval\": {}, \"diag_measure_s\": {:.4f}, "
                           "\"diag_spike_detector_s\": {:.6f}, \"diag_overhead\": {:.5f}",
                           cfg.diag.interval, measure_s, spike_s, diag_overhead)
             : std::string();

  double beam5_sps = 0, beam5_tps = 0, beam1_sps = 0, beam1_tps = 0, lat1 = 0;
  double beam5_full_sps = 0, beam5_static_sps = 0;
  int64_t beam5_graph_replays = 0;
  if (o.translate) {
    const int64_t n = 64, out_len = 32;
    auto src = rand_ids(n, 20).to(device);
    for (int64_t beam : {5, 1}) {
      SearchOptions so;
      so.beam = beam;
      so.max_len_a = 0;
      so.max_len_b = out_len;
      so.min_len = out_len;  // fixed work: every hypothesis has out_len tokens
      so.max_positions = cfg.model.max_target_positions;
      double t0 = now_seconds();
      beam_search(*model, src, so);
      double dt = now_seconds() - t0;
      (beam == 5 ? beam5_sps : beam1_sps) = n / dt;
      (beam == 5 ? beam5_tps : beam1_tps) = n * out_len / dt;
    }
    SearchOptions so;
    so.beam = 5;
    so.max_len_b = out_len;
    so.min_len = out_len;
    so.max_len_a = 0;
    so.max_positions = cfg.model.max_target_positions;
    double t0 = now_seconds();
    beam_search(*model, src.narrow(0, 0, 1), so);
    lat1 = now_seconds() - t0;
    // eval.cuda_graph: the static cache, its step captured on CUDA (eagerly
    // elsewhere).
    so.cuda_graph = true;
    SearchStats graph_stats;
    t0 = now_seconds();
    beam_search(*model, src, so, &graph_stats);
    beam5_static_sps = n / (now_seconds() - t0);
    beam5_graph_replays = graph_stats.replays;
    so.cuda_graph = false;
    // Baseline: the same search re-running the decoder over the whole prefix.
    so.incremental = false;
    t0 = now_seconds();
    beam_search(*model, src, so);
    beam5_full_sps = n / (now_seconds() - t0);
  }
  std::string curve_json;
  for (const auto& [u, l] : curve)
    curve_json += fmt::format("{}[{}, {:.5f}]", curve_json.empty() ? "" : ", ", u, l);
  if (o.json) {
    out << fmt::format(
        "{{\"recipe\": \"{}\", \"precision\": \"{}\", \"threads\": {}, "
        "\"libtorch\": \"{}\", \"batch_rows\": {}, \"seq_len\": {}, \"steps\": {}, "
        "\"updates_per_s\": {:.4f}, \"tokens_per_s\": {:.1f}, \"tgt_tokens_per_s\": {:.1f}, "
        "\"forward_s\": {:.4f}, \"backward_s\": {:.4f}, \"optimizer_s\": {:.4f}, "
        "\"data_s\": {:.4f}, \"peak_rss_mb\": {:.1f}, \"rss_growth_mb\": {:.1f}, \"flops_per_update\": {:.4g}, "
        "\"achieved_gflops\": {:.2f}, \"gemm_peak_gflops\": {:.2f}, \"mfu\": {:.4f}, "
        "\"loss\": {:.5f}, \"beam5_sentences_per_s\": {:.2f}, \"beam5_tokens_per_s\": {:.1f}, "
        "\"beam1_sentences_per_s\": {:.2f}, \"beam1_tokens_per_s\": {:.1f}, "
        "\"beam5_latency_bs1_s\": {:.4f}, \"beam5_uncached_sentences_per_s\": {:.2f}, "
        "\"beam5_cache_speedup\": {:.2f}, \"beam5_static_sentences_per_s\": {:.2f}, "
        "\"beam5_graph_replays\": {}, \"device\": \"{}\", \"task\": \"{}\", "
        "\"device_peak_memory_mb\": {:.1f}, \"gemm_peak_dtype\": \"{}\", \"loss_scale\": {}, "
        "\"loss_scale_overflows\": {}, \"loss_scale_growths\": {}, \"loss_curve\": [{}], "
        "\"mode\": \"{}\", \"ms_per_update\": {:.3f}{}{}}}\n",
        cfg.source, cfg.train.precision, threads, TORCH_VERSION, B, L, o.steps, ups, tok,
        tgt_tok, t_fwd / o.steps, t_bwd / o.steps, t_opt / o.steps, t_data / o.steps,
        peak_rss_mb(), rss_growth, flops, achieved, peak, achieved / peak, last_loss, beam5_sps,
        beam5_tps, beam1_sps, beam1_tps, lat1, beam5_full_sps,
        beam5_full_sps > 0 ? beam5_sps / beam5_full_sps : 0.0, beam5_static_sps,
        beam5_graph_replays, device.str(), o.task,
        device_peak_mb, c10::toString(dtype), scaler.scale(), overflows, growths, curve_json,
        graphs ? "throughput_graph" : o.throughput ? "throughput" : "phases", 1000.0 / ups,
        o.compare_python
            ? fmt::format(", \"loss_eval\": {:.6f}, \"python_loss_eval\": {:.6f}, "
                          "\"python_tokens_per_s\": {:.1f}, \"python_ratio\": {:.3f}",
                          loss_eval, py_loss_eval, py_tps / py_runs, tok / (py_tps / py_runs))
            : std::string(),
        diag_json);
    return;
  }
  out << fmt::format("recipe {} | precision {} | {} threads | LibTorch {}\n", cfg.source,
                     cfg.train.precision, threads, TORCH_VERSION)
      << fmt::format("batch {} rows x {} tokens (src and tgt), {} timed updates\n", B, L,
                     o.steps)
      << fmt::format("train: {:.3f} updates/s | {:.0f} tokens/s | {:.0f} tgt tokens/s\n",
                     ups, tok, tgt_tok)
      << (o.throughput
              ? fmt::format("back to back, decided on the device: {:.2f} ms per update\n",
                            1000.0 / ups)
              : fmt::format("split per update: forward {:.3f}s backward {:.3f}s optimizer {:.3f}s "
                            "data {:.3f}s\n",
                            t_fwd / o.steps, t_bwd / o.steps, t_opt / o.steps, t_data / o.steps))
      << fmt::format("FLOPs/update {:.3g} | achieved {:.1f} GFLOP/s | GEMM peak {:.1f} "
                     "GFLOP/s | MFU {:.1f}%\n",
                     flops, achieved, peak, 100 * achieved / peak)
      << fmt::format("peak RSS {:.0f} MiB | RSS growth from first to last timed update {:.0f} "
                     "MiB\n",
                     peak_rss_mb(), rss_growth);
  if (device.is_cuda())
    out << fmt::format("device {} | peak allocated {:.0f} MiB\n", device.str(), device_peak_mb);
  if (scaler.enabled())
    out << fmt::format("loss scale {} | {} overflows (updates skipped) | {} growths\n",
                       scaler.scale(), overflows, growths);
  if (o.diag)
    out << fmt::format("instruments: {:.3f}s per measurement, {:.2g}s spike detector per update "
                       "-> {:.2f}% of training time at diag.interval = {}\n",
                       measure_s, spike_s, 100 * diag_overhead, cfg.diag.interval);
  if (o.compare_python)
    out << fmt::format("python reference: {:.0f} tokens/s -> clinic/python = {:.2f}x | eval loss "
                       "clinic {:.6f} python {:.6f}\n",
                       py_tps / py_runs, tok / (py_tps / py_runs), loss_eval, py_loss_eval);
  if (o.translate)
    out << fmt::format("translate: beam 5 {:.1f} sent/s {:.0f} tok/s | beam 1 {:.1f} sent/s "
                       "{:.0f} tok/s | beam 5 batch-1 latency {:.3f}s\n"
                       "translate without the KV cache: beam 5 {:.1f} sent/s -> cache speedup "
                       "{:.2f}x\n",
                       beam5_sps, beam5_tps, beam1_sps, beam1_tps, lat1, beam5_full_sps,
                       beam5_full_sps > 0 ? beam5_sps / beam5_full_sps : 0.0);
}

}  // namespace clinic
