#include "framework/train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <limits>
#include <regex>

#include "framework/amp/autocast.h"
#include "framework/data/device_feed.h"
#include "framework/data/text.h"
#include "framework/eval/bleu.h"
#include "framework/eval/search.h"
#include "framework/errors.h"
#include "framework/optim/optimizers.h"
#include "framework/registry.h"
#include "framework/train/scaled_step.h"

namespace fs = std::filesystem;

namespace clinic {

std::atomic<bool>& stop_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {
void on_stop_signal(int) { stop_requested().store(true); }
constexpr double kLn2 = 0.69314718055994530942;
}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// A data-parallel CUDA job: one GPU per rank, cuda:LOCAL_RANK (torchrun's
// convention).
torch::Device pick_device(const std::string& d, const World& world) {
  if (d == "cuda" || (d == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available())
      throw ConfigError("train.device = cuda but no CUDA device is available");
    if (world.size() == 1 && world.local_rank() == 0) return torch::Device(torch::kCUDA);
    return rank_gpu(world.rank(), world.local_rank(), "train.device = cuda");
  }
  return torch::Device(torch::kCPU);
}

int64_t configure_threads(int64_t threads) {
  // LibTorch on this Debian build starts with 1 intra-op thread whatever the
  // core count (libtorch-on-debian.md §3.1).
  int64_t n = threads > 0 ? threads
                          : std::max<int64_t>(1, ::sysconf(_SC_NPROCESSORS_ONLN));
  torch::set_num_threads(static_cast<int>(n));
  return n;
}

Trainer::Trainer(RunConfig cfg, std::string run_dir, std::shared_ptr<World> world)
    : cfg_(std::move(cfg)),
      run_dir_(std::move(run_dir)),
      world_(world ? std::move(world) : std::make_shared<World>()) {}

CheckpointMeta Trainer::make_meta() const {
  CheckpointMeta m;
  m.recipe_yaml = to_yaml(cfg_);
  m.state = state_;
  m.scaler = scaler_->state();
  if (vocab_.src) {  // a fixed batch has no vocabulary files
    m.src_vocab_name = fs::path(vocab_.src->path()).filename().string();
    m.tgt_vocab_name = fs::path(vocab_.tgt->path()).filename().string();
    m.src_vocab = read_file(vocab_.src->path());
    m.tgt_vocab = vocab_.joint ? m.src_vocab : read_file(vocab_.tgt->path());
  }
  m.rng_state = capture_rng_state();
  carry_.save(m.extras);
  if (instruments_) {
    const Batch& p = instruments_->probe();
    m.extras["diag_probe_src"] = p.src;
    m.extras["diag_probe_tgt_in"] = p.tgt_in;
    m.extras["diag_probe_tgt_out"] = p.tgt_out;
    auto w = instruments_->spikes().state();
    m.extras["diag_spike_window"] = torch::tensor(w, torch::kDouble);
  }
  return m;
}

void Trainer::check_resumable(const std::string& path, const CheckpointMeta& meta) {
  if (!meta.has_optimizer)
    throw CheckpointError(fmt::format(
        "{}: holds averaged weights without optimizer state (clinic average); training "
        "cannot resume from it: restore the run's own checkpoint_last.pt or use another "
        "--run-dir",
        path));
  RunConfig saved = parse_recipe_text(meta.recipe_yaml, path + " (recipe)");
  std::vector<std::string> model_changes, other_changes;
  for (const auto& d : config_differences(saved, cfg_)) {
    std::string text = fmt::format("{} is {} there, {} now", d.key, d.a, d.b);
    (d.key.rfind("model.", 0) == 0 ? model_changes : other_changes).push_back(text);
  }
  if (!model_changes.empty())
    throw CheckpointError(fmt::format(
        "{}: the run dir holds a checkpoint of a different model ({}); use another "
        "--run-dir or the recipe it was trained with",
        path, fmt::join(model_changes, "; ")));
  // The optimizer state is per parameter group: settings may change on a
  // resume (a logged recipe change), which parameters form a group may not.
  auto layout = [](const OptimConfig& o) {
    std::string s = o.no_decay_bias_norm ? "no_decay_bias_norm; " : "";
    for (const auto& g : o.groups) s += fmt::format("{} ({}{}); ", g.name, g.match, g.glob);
    return s.empty() ? std::string("none") : s.substr(0, s.size() - 2);
  };
  if (layout(saved.optim) != layout(cfg_.optim))
    throw CheckpointError(fmt::format(
        "{}: optim.groups places parameters differently from the checkpoint's (groups there: "
        "{}; now: {}); its optimizer state is per group: resume with the same group names and "
        "patterns, or use another --run-dir",
        path, layout(saved.optim), layout(cfg_.optim)));
  for (const auto& c : other_changes) log()->warn("[train] resuming with a changed recipe: {}", c);
  if (saved.data.vocab_size != cfg_.data.vocab_size || saved.data.tokenizer != cfg_.data.tokenizer)
    log()->warn("[train] the vocabulary of a resumed run is the checkpoint's; data.vocab_size "
                "and data.tokenizer changes take effect only in a new run dir");
  // The checkpoint carries its vocabulary: a run dir that was moved, copied
  // without spm.model, or whose vocabulary file was damaged resumes with the
  // checkpoint's copy instead of training a new (different) vocabulary.
  auto restore = [&](const std::string& name, const std::string& bytes) {
    if (name.empty()) return;  // data.source = fixed_batch: no vocabulary
    std::string file = run_dir_ + "/" + name;
    std::string have;
    try {
      have = read_file(file);
    } catch (const DataError&) {
    }
    if (have == bytes) return;
    write_file_atomic(file, bytes);
    log()->warn("[train] {} {}; restored the vocabulary stored in {}", file,
                have.empty() ? "was missing" : "differed from the checkpoint's", path);
  };
  restore(meta.src_vocab_name, meta.src_vocab);
  if (meta.tgt_vocab_name != meta.src_vocab_name) restore(meta.tgt_vocab_name, meta.tgt_vocab);
}

void Trainer::setup() {
  if (is_setup_) return;
  check_registered_names(cfg_);
  // Data parallel: rank 0 sets up first (lock, vocabulary, token caches,
  // recipe.yaml); the others then read what it wrote and write nothing.
  const bool writer = world_->is_writer();
  if (!writer) world_->barrier();
  if (writer) {
    fs::create_directories(run_dir_);
    lock_ = std::make_unique<RunDirLock>(run_dir_);
    init_logging(run_dir_);
    for (const auto& dir : {run_dir_, run_dir_ + "/cache"})
      for (const auto& f : remove_stale_temporaries(dir))
        log()->info("[train] removed {} (left by a process that no longer runs)", f);
  } else {
    init_logging("");
    log()->set_level(spdlog::level::warn);
  }
  if (world_->size() > 1) log()->info("[train] {}", world_->describe());
  int64_t threads = configure_threads(cfg_.train.threads);
  torch::manual_seed(static_cast<uint64_t>(cfg_.train.seed));
  device_ = pick_device(cfg_.train.device, *world_);
  const auto& prec = cfg_.train.precision;
  if (prec == "bf16") compute_dtype_ = at::kBFloat16;
  if (prec == "fp16") {
    if (device_.is_cuda()) {
      compute_dtype_ = at::kHalf;
    } else {
      log()->warn("[train] fp16 autocast needs CUDA; on CPU the loss scaler "
                   "runs with fp32 compute (use bf16 for CPU mixed precision)");
    }
  }
  log()->info("[train] run dir {}, device {}, {} threads, precision {}",
              run_dir_, device_.str(), threads, prec);

  std::string last = run_dir_ + "/checkpoint_last.pt";
  std::unique_ptr<CheckpointFile> resume;
  if (fs::exists(last)) {
    resume = std::make_unique<CheckpointFile>(last);
    check_resumable(last, resume->meta());
  }

  VocabInfo info;
  if (fixed_source()) {
    fixed_ = fixed_batch(cfg_.data).to(device_);
    int64_t v = cfg_.data.fixed_vocab + kFixedTokenOffset;
    info = VocabInfo{v, v, true};
    log()->info("[data] fixed batch: {} rows x {} tokens, vocabulary {} (+4 special ids), "
                "{} updates per epoch",
                fixed_.src.size(0), fixed_.src.size(1), cfg_.data.fixed_vocab,
                cfg_.data.fixed_updates_per_epoch);
  } else {
    vocab_ = prepare_vocab(cfg_.data, run_dir_);
    std::string cache = run_dir_ + "/cache";
    train_ = load_parallel(cfg_.data, cfg_.data.train, vocab_, cache,
                           cfg_.data.max_source_len, cfg_.data.max_target_len);
    valid_ = load_parallel(cfg_.data, cfg_.data.valid, vocab_, cache,
                           cfg_.model.max_source_positions,
                           cfg_.model.max_target_positions);
    train_.source_aligned = valid_.source_aligned = cfg_.data.target_layout == "source_aligned";
    if (cfg_.data.shape_buckets > 0) {
      int64_t longest = 0;
      for (int64_t k = 0; k < train_.size(); ++k)
        longest = std::max({longest, train_.src_len(k), train_.tgt_len(k)});
      set_shape_buckets(train_, cfg_.data.shape_buckets, longest, cfg_.data.max_tokens,
                        cfg_.data.max_sentences);
      std::string shapes;
      for (size_t i = 0; i < train_.shape_lengths.size(); ++i)
        shapes += fmt::format("{}{}x{}", i ? ", " : "", train_.shape_rows[i], train_.shape_lengths[i]);
      log()->info("[data] shape buckets (rows x length): {}", shapes);
    }
    info = VocabInfo{vocab_.src->size(), vocab_.tgt->size(), vocab_.joint};
  }
  // Weights, gradients and two Adam moments: 16 bytes a parameter before any
  // activation (d_model 65536 asked for 51 GB and was OOM-killed).
  double n_estimate = estimate_parameters(cfg_.model, info);
  check_memory_fits(16.0 * n_estimate,
                    fmt::format("training this model ({:.3g} parameters: weights, gradients "
                                "and optimizer state)",
                                n_estimate),
                    model_size_hint(cfg_.model));
  // Rank 0 has written the vocabulary and the token caches: the others,
  // waiting at their first barrier, now read them (pairs with the one above).
  if (writer) world_->barrier();
  model_ = build_model(cfg_.model, info);
  model_->to(device_);
  for (const auto& p : model_->parameters())
    if (p.requires_grad()) params_.push_back(p);
  int64_t n_params = 0;
  for (const auto& p : params_) n_params += p.numel();
  log()->info("[model] {} ({}), {} parameters, vocab {} / {}", cfg_.model.arch,
              cfg_.model.residual_label(), n_params, info.src_size, info.tgt_size);
  // optim.foreach: auto is multi-tensor where updates may be decided on the
  // device (train.host_reads below), per the parameters' device otherwise.
  const bool on_device = cfg_.train.host_reads == "log_interval" || cfg_.train.cuda_graph;
  optimizer_ = build_optimizer(*model_, resolve_foreach(cfg_.optim, on_device), &group_of_);
  schedules_ = build_group_schedules(cfg_);
  for (size_t i = 0; i < cfg_.optim.groups.size(); ++i) {
    const auto& g = cfg_.optim.groups[i];
    int64_t n = 0, tensors = 0;
    const auto& pg = optimizer_->param_groups();
    for (size_t k = 0; k < pg.size(); ++k)
      if (group_of_[k] == static_cast<int>(i))
        for (const auto& p : pg[k].params()) n += p.numel(), ++tensors;
    log()->info("[optim] group {}: {} tensors, {} parameters, lr {} ({} schedule)", g.name,
                tensors, n, g.lr.value_or(cfg_.optim.lr),
                g.schedule ? g.schedule->name : cfg_.schedule.name + ", the recipe's");
  }
  loss_fn_ = loss_registry().get(cfg_.train.criterion)(cfg_.train);
  carry_ = GradientCarry(!cfg_.train.zero_grad);
  scaler_ = std::make_unique<LossScaler>(
      cfg_.train.loss_scale_init, cfg_.train.loss_scale_window,
      cfg_.train.threshold_loss_scale, prec == "fp16");
  std::string tb = cfg_.train.tensorboard;
  if (!tb.empty() && fs::path(tb).is_relative()) tb = run_dir_ + "/" + tb;
  metrics_ = std::make_unique<MetricsWriter>(writer ? run_dir_ + "/metrics.jsonl" : "",
                                             writer ? tb : "");
  if (cfg_.diag.interval > 0 && writer) {  // instruments observe rank 0's model
    // The probe batch: drawn once from the validation split, then carried in
    // every checkpoint so a resumed run measures the same sentences.
    Batch probe;
    std::string probe_note;  // diag.probe_sentences beyond the validation set: all of it, said once
    const auto& ex = resume ? resume->meta().extras : std::map<std::string, torch::Tensor>{};
    if (ex.count("diag_probe_src")) {
      probe.src = ex.at("diag_probe_src");
      probe.tgt_in = ex.at("diag_probe_tgt_in");
      probe.tgt_out = ex.at("diag_probe_tgt_out");
    } else if (fixed_source()) {
      probe = fixed_;
    } else {
      auto rows = choose_probe_rows(valid_.size(), cfg_.diag.probe_sentences,
                                    static_cast<uint64_t>(cfg_.train.seed));
      probe = valid_.make_batch(rows);
      if (static_cast<int64_t>(rows.size()) < cfg_.diag.probe_sentences)
        probe_note = fmt::format(" (diag.probe_sentences = {}; the validation set has {})",
                                 cfg_.diag.probe_sentences, rows.size());
    }
    instruments_ = std::make_unique<Instruments>(cfg_.diag, *model_, *optimizer_, *metrics_,
                                                 probe.to(device_),
                                                 static_cast<uint64_t>(cfg_.train.seed));
    if (ex.count("diag_spike_window")) {
      auto w = ex.at("diag_spike_window").to(torch::kDouble).contiguous();
      instruments_->spikes().restore(
          std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel()));
    }
    log()->info("[diag] stability instruments every {} updates on {} probe sentences{}{}",
                cfg_.diag.interval, probe.src.size(0), probe_note,
                tb.empty() ? "" : "; TensorBoard in " + tb);
  }

  if (resume) {
    const CheckpointMeta& meta = resume->meta();
    if (vocab_.src && meta.src_vocab != read_file(vocab_.src->path()))
      throw CheckpointError(fmt::format(
          "{}: the checkpoint was trained with a different vocabulary than {}",
          last, vocab_.src->path()));
    resume->load_into(*model_, optimizer_.get());
    carry_.restore(meta.extras, params_, last);
    state_ = meta.state;
    scaler_->state() = meta.scaler;
    if (restore_rng_state(meta.rng_state) == 0 && device_.is_cuda())
      log()->warn("[train] {} holds no CUDA generator state (saved without CUDA): dropout "
                  "masks from here on differ from an uninterrupted run", last);
    if (world_->size() > 1) {  // this rank's own CPU generator
      auto it = meta.extras.find(fmt::format("rng_rank{}", world_->rank()));
      if (it == meta.extras.end())
        throw CheckpointError(fmt::format("{}: holds no generator state for rank {} (saved by a "
                                          "job of another world size); resume with that size",
                                          last, world_->rank()));
      restore_rng_state(RngState{it->second, {}});
    }
    log()->info("[train] resumed {} at update {} (epoch {}, batch {})", last,
                state_.update, state_.position.epoch, state_.position.batch);
  } else {
    if (writer) write_file_atomic(run_dir_ + "/recipe.yaml", to_yaml(cfg_));
    // Profiled on the first batch of the exact (unbucketed) plan: padding
    // enters Admin's variances, and data.shape_buckets must not change omega.
    ParallelCorpus exact = train_;
    exact.shape_lengths.clear();
    exact.shape_rows.clear();
    Batch first = fixed_source()
                      ? fixed_
                      : exact.make_batch(plan_epoch(exact, cfg_.data.max_tokens,
                                                    cfg_.data.max_sentences, cfg_.train.seed, 1,
                                                    true)
                                             .front())
                            .to(device_);
    std::string summary = model_->initialize_from_batch(first);
    if (!summary.empty()) {
      log()->info("[init] {}", summary);
      metrics_->write(MetricsRecord().add("event", std::string("init"))
                          .add("summary", summary));
    }
    if (world_->size() > 1) {
      // One starting point for every rank (rank 0's), then each rank its own
      // dropout stream.
      torch::NoGradGuard ng;
      for (auto& p : model_->parameters()) {
        auto t = p.detach().cpu().contiguous();
        world_->broadcast(t, 0);
        p.copy_(t);
      }
      for (auto& b : model_->buffers()) {
        auto t = b.detach().cpu().contiguous();
        world_->broadcast(t, 0);
        b.copy_(t);
      }
      torch::manual_seed(static_cast<uint64_t>(cfg_.train.seed) * 1000003ULL +
                         static_cast<uint64_t>(world_->rank()));
    }
  }
  // train.host_reads (device_step.h): the update decided on the device.
  const std::string& hr = cfg_.train.host_reads;
  if (hr == "log_interval" || (hr == "auto" && device_.is_cuda())) {
    auto* guarded = dynamic_cast<GuardedStep*>(optimizer_.get());
    std::string why;
    if (guarded == nullptr || !guarded->can_guard())
      why = "the optimizer's step cannot be decided on the device (optim.foreach: false, AMSGrad "
            "or a registered optimizer)";
    else if (world_->size() > 1)
      why = "data parallel sums the loss and the tokens on the host every update";
    else if (!cfg_.train.zero_grad)
      why = "train.zero_grad: false adds the held gradient on the host";
    if (why.empty()) {
      guarded_ = guarded;
      device_step_ = std::make_unique<DeviceStep>(device_, *scaler_, cfg_.train);
      device_step_->record_updates(instruments_ != nullptr);
      log()->info("[train] the device decides skips, clipping and the loss scale; the host reads "
                  "every {} updates (train.host_reads: {})",
                  cfg_.train.log_interval, hr);
    } else if (hr == "log_interval") {
      log()->info("[train] train.host_reads: log_interval: {}; reading every update", why);
    }
  }
  if (cfg_.train.cuda_graph) {  // graphed_update.h
    auto* capturable = dynamic_cast<CapturableStep*>(optimizer_.get());
    std::string why;
    if (!device_step_)
      why = "the updates are decided on the host (train.host_reads, above)";
    else if (capturable == nullptr)
      why = "the optimizer has no capturable step (a registered optimizer)";
    else if (cfg_.data.shape_buckets <= 0 && !fixed_source())
      why = "batch shapes vary without data.shape_buckets";
    else if (cfg_.train.update_freq != 1)
      why = "train.update_freq > 1 (one captured batch per update)";
    if (why.empty()) {
      if (!capturer_set_) capturer_ = device_.is_cuda() ? cuda_graph_capturer() : nullptr;
      capturable_ = capturable;
      capturable_->set_capturable(true);
      graphs_ = std::make_unique<UpdateGraphs>(
          [this](const Batch& b, const torch::Tensor& tokens) { graph_body(b, tokens); },
          [this](int64_t n) { return device_step_->tokens(n); }, capturer_);
      if (capturer_)
        log()->info("[train] train.cuda_graph: one captured update per batch shape, replayed "
                    "from its second update");
      else
        log()->info("[train] train.cuda_graph: no capture on {} (CUDA only); each update runs "
                    "as its graph would (static batch buffers, lr and step counts on the device)",
                    device_.str());
    } else {
      log()->info("[train] train.cuda_graph: {}; eager updates", why);
    }
  }
  world_->attach(params_);
  is_setup_ = true;
}

UpdateStats Trainer::count_deferred(int64_t tokens) {
  device_step_->keep_last();
  // Counted as a step until the next read says otherwise (sync_host).
  state_.update += 1;
  state_.tokens += tokens;
  unread_updates_ += 1;
  unread_tokens_ += tokens;
  UpdateStats s;
  s.tokens = tokens;
  s.deferred = true;
  s.loss = s.nll = s.grad_norm = std::numeric_limits<double>::quiet_NaN();
  return s;
}

void Trainer::graph_body(const Batch& b, const torch::Tensor& tokens) {
  // train_update's deferred path for one batch, with the token count and the
  // optimizer's launch() reading device tensors: nothing here may depend on
  // a host value that changes between two updates of this shape.
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
  DecoderFeatures out;
  {
    AutocastGuard ag(device_.type(), compute_dtype_);
    out = model_->forward_features(b.src, b.tgt_in);
  }
  LossOut lo = loss_fn_(out, b.tgt_out, compute_dtype_);
  (scaler_->enabled() ? lo.loss * device_step_->scale() : lo.loss).backward();
  torch::Tensor norm = device_step_->unscale_and_norm(params_, tokens);
  device_step_->step(lo.loss.detach(), lo.nll, norm, tokens, params_, *guarded_,
                     [this] { capturable_->launch(); });
}

std::string Trainer::locate_nonfinite(const Batch& given) {
  const Batch batch = given.to(device_);  // no copy when already there
  struct Finder : SublayerObserver {
    std::string first;
    void on_branch(SublayerView& v) override {
      if (!first.empty()) return;
      if (!torch::isfinite(v.x).all().item<bool>())
        first = fmt::format("{} layer {} {} input", v.stack, v.layer, v.kind);
      else if (!torch::isfinite(v.fx).all().item<bool>())
        first = fmt::format("{} layer {} {} output f(x)", v.stack, v.layer, v.kind);
    }
  } finder;
  RngState rng = capture_rng_state();
  model_->set_observer(&finder);
  std::string where;
  try {
    for (auto& p : params_)
      if (p.grad().defined()) p.mutable_grad().zero_();
    // The replay takes the training step's own path (forward_features and
    // the criterion's form for it: fused, or over DecoderFeatures::allowed),
    // so a criterion whose three-argument form fails is found where it fails.
    DecoderFeatures out;
    {
      AutocastGuard ag(device_.type(), compute_dtype_);
      out = model_->forward_features(batch.src, batch.tgt_in);
    }
    where = finder.first;
    if (where.empty() && !torch::isfinite(out.hidden).all().item<bool>())
      where = out.weight.defined() ? "decoder output (before the output projection)"
                                   : "output projection (logits)";
    model_->set_observer(nullptr);
    if (where.empty()) {
      LossOut lo = loss_fn_(out, batch.tgt_out, compute_dtype_);
      if (!torch::isfinite(lo.loss).all().item<bool>()) {
        where = fmt::format("loss (train.criterion {}{}) on finite model outputs",
                            cfg_.train.criterion,
                            out.allowed.defined() ? ", over the model's allowed columns" : "");
      } else {
        lo.loss.backward();
        for (const auto& p : model_->named_parameters(true))
          if (p.value().grad().defined() &&
              !torch::isfinite(p.value().grad()).all().item<bool>()) {
            where = "gradient of " + p.key();
            break;
          }
      }
    }
  } catch (...) {
    model_->set_observer(nullptr);
    throw;
  }
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
  restore_rng_state(rng);
  return where.empty() ? "loss scale overflow (values finite in fp32 replay)"
                       : where;
}

UpdateStats Trainer::train_update(const std::vector<Batch>& batches) {
  setup();
  // Deferred reads: an update the instruments measure reads first and is
  // decided on the host (its measurement reads anyway); the device copies
  // then take the host's scaler and non-finite run.
  if (device_step_ && !eager_once_ && instruments_ && instruments_->due(state_.update + 1)) {
    sync_host();
    if (instruments_->due(state_.update + 1)) {
      eager_once_ = true;
      struct Clear {
        bool& flag;
        ~Clear() { flag = false; }
      } clear{eager_once_};
      UpdateStats s = train_update(batches);
      device_step_->load_host(bad_in_a_row_);
      return s;
    }
  }
  const bool deferred = device_step_ && !eager_once_;
  model_->train();
  if (deferred && graphs_ && batches.size() == 1) {  // train.cuda_graph
    const Batch b = batches[0].src.device() == device_ ? batches[0] : batches[0].to(device_);
    if (instruments_) unread_lr_.emplace_back(schedules_[0](state_.update), b.tgt_tokens);
    // stage() steps the tensors that have a gradient, before the backward
    // that makes them: a graph needs them all from the first update. A
    // parameter no batch reaches is then stepped with a zero gradient.
    for (auto& p : params_)
      if (p.requires_grad() && !p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    set_group_lrs();
    capturable_->stage();  // the host's half of the step; the graph holds launch()
    graphs_->run(b, capturable_->layout());
    if (!graphs_->refused().empty() && !said_refused_) {
      said_refused_ = true;
      log()->info("[train] train.cuda_graph: capture failed ({}); eager updates from here",
                  graphs_->refused());
    }
    return count_deferred(b.tgt_tokens);
  }
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
  const double scale = scaler_->scale();
  torch::Tensor loss_sum = torch::zeros({}, device_), nll_sum = loss_sum.clone();
  UpdateStats s;
  if (batches.empty()) world_->before_backward(true);  // a rank the last update left short
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& given = batches[i];
    // fit() hands over batches already on the device (copied ahead, so the
    // copy overlaps compute); a caller's host batch is moved here.
    const Batch b = given.src.device() == device_ ? given : given.to(device_);
    DecoderFeatures out;
    {
      AutocastGuard ag(device_.type(), compute_dtype_);
      out = model_->forward_features(b.src, b.tgt_in);
    }
    LossOut lo = loss_fn_(out, b.tgt_out, compute_dtype_);
    world_->before_backward(i + 1 == batches.size());
    if (deferred && scaler_->enabled())
      (lo.loss * device_step_->scale()).backward();  // the scale the device holds
    else
      (scale != 1.0 ? lo.loss * scale : lo.loss).backward();
    loss_sum += lo.loss.detach();
    nll_sum += lo.nll;
    s.tokens += b.tgt_tokens;
  }
  if (world_->size() > 1) {
    // Sums over ranks: gradients (bucketed, launched during the last
    // backward), loss, nll, tokens, and whether any rank must stop.
    const bool stop = stop_requested().load() ||
                      (cfg_.train.max_wall_s > 0 &&
                       state_.wall_s + now_seconds() - start_wall_ >= cfg_.train.max_wall_s);
    torch::Tensor totals = torch::stack({loss_sum.to(torch::kCPU, torch::kDouble),
                                         nll_sum.to(torch::kCPU, torch::kDouble),
                                         torch::tensor(static_cast<double>(s.tokens), torch::kDouble),
                                         torch::tensor(stop ? 1.0 : 0.0, torch::kDouble)});
    const double c0 = now_seconds();
    world_->finish_gradients(totals);
    log_comm_s_ += now_seconds() - c0;  // what the overlap did not hide
    loss_sum = totals[0];
    nll_sum = totals[1];
    s.tokens = static_cast<int64_t>(totals[2].item<double>());
    if (totals[3].item<double>() > 0) stop_requested() = true;
  }
  if (deferred) {  // train.host_reads: log_interval (device_step.h)
    if (instruments_) unread_lr_.emplace_back(schedules_[0](state_.update), s.tokens);
    const torch::Tensor tokens = device_step_->tokens(s.tokens);
    torch::Tensor norm = device_step_->unscale_and_norm(params_, tokens);
    device_step_->step(loss_sum, nll_sum, norm, tokens, params_, *guarded_, [&] {
      set_group_lrs();
      optimizer_->step();
    });
    return count_deferred(s.tokens);
  }
  // Gradients of summed losses divided by the update's token count: the
  // same update as one batch holding all of them (fairseq's sample_size).
  torch::Tensor norm = scale_grads_and_norm(params_, 1.0 / (scale * std::max<int64_t>(s.tokens, 1)));
  // The one host read of the step: norm, loss and nll in one copy (exact:
  // float and double values widen to double).
  const std::vector<double> read = host_reads_.values(
      torch::stack({norm.to(torch::kDouble), loss_sum.to(torch::kDouble), nll_sum.to(torch::kDouble)}));
  s.grad_norm = read[0];
  s.loss = read[1];
  s.nll = read[2];
  // train.zero_grad: false adds the held gradient (the instruments then see
  // the summed gradient the optimizer steps on); the lr of each group's
  // schedule: fairseq calls lr_scheduler.step_update(0) before the first step
  // and step_update(k) after update k, so update k runs with schedule(k - 1)
  // and update 1 uses warmup_init_lr exactly.
  bool measure = false;
  const double lr = schedules_[0](state_.update);
  StepHooks hooks;
  hooks.before_clip = [&](double gn) {
    s.grad_norm = carry_.add_to(params_, gn);
    measure = instruments_ && instruments_->due(state_.update + 1);
    if (measure) instruments_->before_step(state_.update + 1);
    return s.grad_norm;
  };
  hooks.before_step = [&] {
    carry_.keep(params_);
    set_group_lrs();
  };
  if (!scaled_step(*scaler_, std::isfinite(s.grad_norm) && std::isfinite(s.loss), s.grad_norm,
                   cfg_.train.clip_norm, params_, *optimizer_, hooks)) {
    s.skipped = true;
    state_.skipped += 1;
    bool scaler_handles = scaler_->enabled() && std::isfinite(s.loss) &&
                          scale > std::max(cfg_.train.threshold_loss_scale,
                                           cfg_.train.min_loss_scale);
    if (!scaler_handles) {
      ++bad_in_a_row_;
      s.nonfinite_where = batches.empty() ? std::string("another rank's batch")
                                          : locate_nonfinite(batches.front());
      log()->warn("[train] update {}: non-finite loss {} / grad norm {}; first "
                  "non-finite value at: {}; step skipped ({} in a row)",
                  state_.update + 1, s.loss, s.grad_norm, s.nonfinite_where,
                  bad_in_a_row_);
      metrics_->write(MetricsRecord()
                          .add("event", std::string("nonfinite"))
                          .add("update", state_.update + 1)
                          .add("where", s.nonfinite_where));
      if (bad_in_a_row_ >= cfg_.train.max_bad_steps)
        throw DivergenceError(fmt::format(
            "training diverged: {} consecutive non-finite updates (last at {}); "
            "the last good checkpoint is {}/checkpoint_last.pt",
            bad_in_a_row_, s.nonfinite_where, run_dir_));
    } else {
      log()->info("[train] gradient overflow, loss scale -> {}", scaler_->scale());
    }
    check_loss_scale_floor();
    for (auto& p : params_)
      if (p.grad().defined()) p.mutable_grad().zero_();
    return s;
  }
  bad_in_a_row_ = 0;
  state_.update += 1;
  state_.tokens += s.tokens;
  if (instruments_) {
    if (measure) instruments_->after_step();
    instruments_->on_update(state_.update, s.loss / s.tokens / kLn2, lr, s.grad_norm);
  }
  return s;
}

std::pair<double, double> Trainer::validate() {
  setup();
  torch::NoGradGuard g;
  model_->eval();
  double loss = 0, nll = 0;
  int64_t tokens = 0;
  std::vector<std::vector<int64_t>> plan;
  if (!fixed_source()) plan = plan_epoch(valid_, cfg_.data.max_tokens, 0, cfg_.train.seed, 0, false);
  DeviceBatches feed(valid_, plan, 0, cfg_.data.prefetch, device_);
  bool fixed_done = false;
  for (;;) {
    Batch d;
    if (fixed_source()) {  // the fixed batch is its own validation set
      if (fixed_done) break;
      d = fixed_;
      fixed_done = true;
    } else {
      auto b = feed.next();
      if (!b) break;
      d = std::move(b->batch);
    }
    DecoderFeatures out;
    {
      AutocastGuard ag(device_.type(), compute_dtype_);
      out = model_->forward_features(d.src, d.tgt_in);
    }
    LossOut lo = loss_fn_(out, d.tgt_out, compute_dtype_);
    loss += lo.loss.item<double>();
    nll += lo.nll.item<double>();
    tokens += d.tgt_tokens;
  }
  model_->train();
  return {loss / tokens, nll / tokens};
}

double Trainer::validate_bleu() {
  auto src = read_lines(split_path(cfg_.data, cfg_.data.valid, cfg_.data.src_lang));
  auto ref = read_references(cfg_.data, split_path(cfg_.data, cfg_.data.valid, cfg_.data.tgt_lang));
  auto opts = SearchOptions::from(cfg_.eval, cfg_.model);
  opts.nbest = 1;
  auto hyps = translate_lines(*model_, *vocab_.src, *vocab_.tgt, src, opts,
                              cfg_.eval.max_tokens, device_);
  std::vector<std::string> best;
  for (const auto& h : hyps) best.push_back(h.empty() ? "" : h.front().text);
  model_->train();
  return corpus_bleu(best, {ref}, cfg_.eval.bleu_tokenize, cfg_.eval.lowercase).score;
}

void Trainer::save_checkpoint(const std::string& reason, bool best) {
  sync_host();  // the counts, step counts and scaler a checkpoint holds are exact
  // Data parallel: every rank's generator state goes into rank 0's file, so
  // a resume (same world size) continues each rank's dropout stream.
  std::vector<torch::Tensor> rank_rngs;
  if (world_->size() > 1) rank_rngs = world_->all_gather(capture_rng_state().cpu);
  if (!world_->is_writer()) return;
  std::string last = run_dir_ + "/checkpoint_last.pt";
  // checkpoint_last.pt already holds this very state (the final save after
  // an epoch-end save, a best save after an interval one): add the names
  // only. The state is the update and skipped-update counts, the data
  // position and the validation bookkeeping; nothing else (weights, Adam,
  // scaler, generators) changes without an update or a skip.
  const auto key = std::make_tuple(state_.update, state_.skipped, state_.position.epoch,
                                   state_.position.batch, state_.best_valid, state_.best_bleu,
                                   state_.stalled);
  if (!last_written_ || *last_written_ != key || !fs::exists(last)) {
    double wall = state_.wall_s;
    state_.wall_s = wall + (now_seconds() - start_wall_);
    CheckpointMeta meta = make_meta();
    for (size_t r = 0; r < rank_rngs.size(); ++r)
      meta.extras[fmt::format("rng_rank{}", r)] = rank_rngs[r];
    write_checkpoint(last, *model_, optimizer_.get(), meta);
    state_.wall_s = wall;
    last_written_ = key;
    ++checkpoint_writes_;
  }
  // Further names are hard links to the file just written: no second
  // serialisation, no extra disk; later saves replace names, never contents.
  if (reason == "interval") {
    link_or_copy_atomic(last, fmt::format("{}/checkpoint_u{}.pt", run_dir_, state_.update));
    std::vector<std::pair<int64_t, fs::path>> olds;
    std::regex re("checkpoint_u([0-9]+)\\.pt");
    for (const auto& e : fs::directory_iterator(run_dir_)) {
      std::smatch m;
      std::string name = e.path().filename().string();
      if (std::regex_match(name, m, re)) olds.emplace_back(std::stoll(m[1]), e.path());
    }
    std::sort(olds.rbegin(), olds.rend());
    for (size_t i = static_cast<size_t>(cfg_.train.keep_last); i < olds.size(); ++i)
      fs::remove(olds[i].second);
  }
  if (reason == "epoch" && cfg_.train.keep_epoch_checkpoints)
    link_or_copy_atomic(last, fmt::format("{}/checkpoint_epoch{}.pt", run_dir_,
                                          state_.position.epoch - 1));
  if (reason == "best" || best) link_or_copy_atomic(last, run_dir_ + "/checkpoint_best.pt");
}

bool Trainer::stop_now(std::string* why) const {
  const auto& t = cfg_.train;
  if (stop_requested().load()) {
    *why = "stop signal";
    return true;
  }
  if (t.max_updates > 0 && state_.update >= t.max_updates) {
    *why = fmt::format("max_updates {} reached", t.max_updates);
    return true;
  }
  if (t.max_epochs > 0 && state_.position.epoch > t.max_epochs) {
    *why = fmt::format("max_epochs {} reached", t.max_epochs);
    return true;
  }
  if (t.max_wall_s > 0 && state_.wall_s + now_seconds() - start_wall_ >= t.max_wall_s) {
    *why = fmt::format("max_wall_s {} reached", t.max_wall_s);
    return true;
  }
  if (t.patience > 0 && state_.stalled >= t.patience) {
    *why = fmt::format("no improvement in {} validations (patience)", t.patience);
    return true;
  }
  return false;
}

void Trainer::sync_host() {
  if (!device_step_ || unread_updates_ == 0) return;
  const DeviceTally t = device_step_->read(host_reads_);
  // The updates the host counted that the device skipped, taken back.
  state_.update -= t.skipped;
  state_.skipped += t.skipped;
  state_.tokens += t.tokens - unread_tokens_;
  if (t.skipped > 0) guarded_->retract_steps(t.skipped);
  log_loss_ += t.loss;
  log_nll_ += t.nll;
  log_tokens_ += t.tokens;
  log_gnorm_ += t.grad_norm;
  log_skipped_ += t.skipped;
  const int64_t first = state_.update + t.skipped - unread_updates_ + 1;
  const int64_t last = state_.update + t.skipped;
  unread_updates_ = unread_tokens_ = 0;
  bad_in_a_row_ = t.bad_run;
  if (instruments_) {  // each applied update's loss, in order, as the eager path hands it over
    int64_t u = state_.update - t.stepped;
    for (size_t i = 0; i < t.updates.size() && i < unread_lr_.size(); ++i) {
      const auto& [loss, norm, stepped] = t.updates[i];
      const auto& [lr, tokens] = unread_lr_[i];
      if (stepped > 0) instruments_->on_update(++u, loss / tokens / kLn2, lr, norm);
    }
    unread_lr_.clear();
  }
  if (t.nonfinite > 0) {
    const std::string where =
        "not localised (decided on the device; train.host_reads: every_update localises it)";
    log()->warn("[train] updates {}-{}: {} with a non-finite loss or grad norm, steps skipped; "
                "first non-finite value: {}",
                first, last, t.nonfinite, where);
    metrics_->write(MetricsRecord()
                        .add("event", std::string("nonfinite"))
                        .add("update", state_.update + 1)
                        .add("count", t.nonfinite)
                        .add("where", where));
  }
  if (t.skipped > t.nonfinite)
    log()->info("[train] gradient overflow in {} of updates {}-{}, loss scale -> {}",
                t.skipped - t.nonfinite, first, last, scaler_->scale());
  if (t.max_bad_run >= cfg_.train.max_bad_steps)
    throw DivergenceError(fmt::format(
        "training diverged: {} consecutive non-finite updates (within updates {}-{}); the last "
        "good checkpoint is {}/checkpoint_last.pt",
        t.max_bad_run, first, last, run_dir_));
  check_loss_scale_floor();
}

void Trainer::set_group_lrs() {
  auto& groups = optimizer_->param_groups();
  for (size_t k = 0; k < groups.size(); ++k)
    groups[k].options().set_lr(schedules_[static_cast<size_t>(group_of_[k] + 1)](state_.update));
}

void Trainer::check_loss_scale_floor() const {
  if (scaler_->enabled() && scaler_->scale() < cfg_.train.min_loss_scale)
    throw DivergenceError(fmt::format(
        "minimum loss scale reached ({} < train.min_loss_scale = {}); the "
        "last good checkpoint is {}/checkpoint_last.pt",
        scaler_->scale(), cfg_.train.min_loss_scale, run_dir_));
}

void Trainer::log_update(const UpdateStats& s, double seconds) {
  log_updates_ += 1;
  if (!s.deferred) {  // deferred: sync_host adds the device's sums
    log_skipped_ += s.skipped ? 1 : 0;
    if (!s.skipped) {
      log_loss_ += s.loss;
      log_nll_ += s.nll;
      log_tokens_ += s.tokens;
      log_gnorm_ += s.grad_norm;
    }
  }
  bool tty = ::isatty(2);
  bool boundary = state_.update % cfg_.train.log_interval == 0 && !s.skipped;
  if (boundary) sync_host();  // may take back skipped updates: the line says the true count
  double elapsed = seconds - log_t0_;
  if (tty && !boundary) {
    double tps = elapsed > 0 ? (log_tokens_ + unread_tokens_) / elapsed : 0;
    std::string eta;
    if (cfg_.train.max_updates > 0 && log_updates_ > 0 && elapsed > 0) {
      double per = elapsed / log_updates_;
      eta = fmt::format(" | ETA {:.0f}s", per * (cfg_.train.max_updates - state_.update));
    }
    fmt::print(stderr, "\r[epoch {}] update {} | {:.0f} tok/s{}   ", state_.position.epoch,
               state_.update, tps, eta);
    std::fflush(stderr);
  }
  if (!boundary) return;
  if (tty) fmt::print(stderr, "\n");
  int64_t good = log_updates_ - log_skipped_;
  double loss = log_tokens_ ? log_loss_ / log_tokens_ / kLn2 : NAN;
  double nll = log_tokens_ ? log_nll_ / log_tokens_ / kLn2 : NAN;
  double tps = elapsed > 0 ? log_tokens_ / elapsed : 0;
  double wall = state_.wall_s + seconds - start_wall_;
  double lr = schedules_[0](state_.update);  // as fairseq logs it: the lr of the next update
  MetricsRecord r;
  r.add("update", state_.update)
      .add("epoch", state_.position.epoch)
      .add("loss", loss)
      .add("nll", nll)
      .add("ppl", std::pow(2.0, nll))
      .add("lr", lr)
      .add("grad_norm", good ? log_gnorm_ / good : NAN)
      .add("loss_scale", scaler_->scale())
      .add("tokens_per_s", tps)
      .add("skipped", log_skipped_)
      .add("updates", log_updates_)  // averaged here: fewer in the first record after a resume
      .add("wall_s", wall);
  if (world_->size() > 1) r.add("comm_wait_s", log_updates_ ? log_comm_s_ / log_updates_ : 0.0);
  std::string group_lrs;  // optim.groups: each group's lr beside the recipe's
  for (size_t i = 0; i < cfg_.optim.groups.size(); ++i) {
    double gl = schedules_[i + 1](state_.update);
    r.add("lr_" + cfg_.optim.groups[i].name, gl);
    group_lrs += fmt::format(" | lr_{} {:.3g}", cfg_.optim.groups[i].name, gl);
  }
  ProcessMemory mem = process_memory();
  r.add("rss_mb", mem.rss_mb).add("peak_rss_mb", mem.peak_rss_mb);
  int64_t spikes = instruments_ ? instruments_->take_spike_count() : 0;
  if (instruments_) r.add("spikes", spikes);
  metrics_->write(r);
  log()->info("[train] epoch {} update {} | loss {:.3f} | nll {:.3f} | ppl {:.2f} | "
              "lr {:.3g}{} | gnorm {:.3f} | scale {} | {:.0f} tgt tok/s | skipped {} | rss {:.0f} MiB{}",
              state_.position.epoch, state_.update, loss, nll, std::pow(2.0, nll),
              lr, group_lrs, good ? log_gnorm_ / good : NAN, scaler_->scale(), tps,
              log_skipped_, mem.rss_mb, instruments_ ? fmt::format(" | spikes {}", spikes) : "");
  log_loss_ = log_nll_ = log_gnorm_ = log_comm_s_ = 0;
  log_tokens_ = log_updates_ = log_skipped_ = 0;
  log_t0_ = seconds;
}

void Trainer::fit() {
  setup();
  start_wall_ = now_seconds();
  log_t0_ = start_wall_;
  const auto& t = cfg_.train;
  auto run_validation = [&]() {
    sync_host();  // the update count and the scaler it reports are exact
    // Computed once, by rank 0; every rank takes its numbers (same state).
    torch::Tensor v = torch::zeros({3}, torch::kDouble);
    if (world_->is_writer()) {
      auto [l, n] = validate();
      v = torch::tensor({l, n, t.eval_bleu ? validate_bleu() : -1.0}, torch::kDouble);
    }
    world_->broadcast(v, 0);
    const double loss = v[0].item<double>(), nll = v[1].item<double>(), bleu = v[2].item<double>();
    // With eval_bleu the best checkpoint and early stopping follow BLEU.
    bool best = t.eval_bleu ? bleu > state_.best_bleu : loss < state_.best_valid;
    state_.best_valid = std::min(state_.best_valid, loss);
    if (best) {
      state_.best_bleu = std::max(state_.best_bleu, bleu);
      state_.stalled = 0;
    } else {
      state_.stalled += 1;
    }
    MetricsRecord r;
    r.add("event", std::string("valid"))
        .add("update", state_.update)
        .add("epoch", state_.position.epoch)
        .add("valid_loss", loss / kLn2)
        .add("valid_nll", nll / kLn2)
        .add("valid_ppl", std::pow(2.0, nll / kLn2));
    if (t.eval_bleu) r.add("valid_bleu", bleu);
    metrics_->write(r.add("best", static_cast<int64_t>(best)));
    log()->info("[valid] update {} | loss {:.3f} | nll {:.3f} | ppl {:.2f}{}{}",
                state_.update, loss / kLn2, nll / kLn2, std::pow(2.0, nll / kLn2),
                t.eval_bleu ? fmt::format(" | bleu {:.2f}", bleu) : "", best ? " | best" : "");
    return best;
  };
  std::string why;
  while (!stop_now(&why)) {
    std::vector<std::vector<int64_t>> plan;
    if (!fixed_source())
      plan = plan_epoch(train_, cfg_.data.max_tokens, cfg_.data.max_sentences, t.seed,
                        state_.position.epoch, true);
    DeviceBatches feed(train_, plan, state_.position.batch, cfg_.data.prefetch, device_,
                       world_->size(), world_->rank());
    bool stopped = false;
    // Data parallel: an update takes update_freq x world batches of the
    // plan and rank r trains on every world-th one from r, so N ranks make
    // the update of one process with update_freq x N.
    const int64_t per_update = t.update_freq * world_->size();
    for (;;) {
      std::vector<Batch> pending;
      int64_t taken = 0;
      for (int64_t k = 0; k < per_update; ++k) {
        if (fixed_source()) {  // an epoch: fixed_updates_per_epoch updates
          if (state_.position.batch + k >= cfg_.data.fixed_updates_per_epoch * per_update) break;
          ++taken;
          if (rank_owns(k, world_->size(), world_->rank())) pending.push_back(fixed_);
          continue;
        }
        auto b = feed.next();  // the next one's copy already started
        if (!b) break;
        ++taken;
        if (b->mine) pending.push_back(std::move(b->batch));
      }
      if (taken == 0) break;
      UpdateStats s = train_update(pending);
      state_.position.batch += taken;
      log_update(s, now_seconds());
      auto due = [&](int64_t interval) {
        return interval > 0 && state_.update % interval == 0;
      };
      // Deferred reads: the count may hold skipped updates; due on the true one.
      if (device_step_ && (due(t.validate_interval) || due(t.save_interval))) sync_host();
      if (!s.skipped) {
        bool best = false;
        if (due(t.validate_interval))
          best = run_validation();
        // One serialisation per update: a best interval save links both names.
        if (due(t.save_interval))
          save_checkpoint("interval", best);
        else if (best)
          save_checkpoint("best");
      }
      if (device_step_ && stop_now(&why)) sync_host();  // max_updates on the true count
      if (stop_now(&why)) {
        stopped = true;
        break;
      }
    }
    if (stopped) break;
    state_.position.epoch += 1;
    state_.position.batch = 0;
    bool best = run_validation();
    save_checkpoint("epoch", best);
  }
  save_checkpoint("final");
  if (instruments_)
    log()->info("[diag] loss spikes this session: {} by the absolute rule (jump >= {}), {} by the "
                "robust rule (median + {} MAD over {} updates)",
                instruments_->total_abs_spikes(), cfg_.diag.spike_abs,
                instruments_->total_robust_spikes(), cfg_.diag.spike_z, cfg_.diag.spike_window);
  log()->info("[train] stopped: {}; {} updates, best valid loss {:.3f}, "
              "checkpoints in {}",
              why, state_.update, state_.best_valid / kLn2, run_dir_);
}

}  // namespace clinic
