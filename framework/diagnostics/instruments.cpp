#include "framework/diagnostics/instruments.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <regex>

#include "framework/diagnostics/optimizer_state.h"
#include "framework/diagnostics/probe.h"

namespace clinic {


std::vector<int64_t> choose_probe_rows(int64_t corpus_size, int64_t n, uint64_t seed) {
  std::vector<int64_t> rows(static_cast<size_t>(corpus_size));
  std::iota(rows.begin(), rows.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(rows.begin(), rows.end(), rng);
  rows.resize(static_cast<size_t>(std::min(corpus_size, n)));
  std::sort(rows.begin(), rows.end());
  return rows;
}

Instruments::Instruments(const DiagConfig& cfg, Seq2SeqModel& model,
                         torch::optim::Optimizer& optimizer, MetricsWriter& metrics, Batch probe,
                         uint64_t seed)
    : cfg_(cfg),
      model_(model),
      optimizer_(optimizer),
      metrics_(metrics),
      probe_(std::move(probe)),
      seed_(seed),
      spikes_(cfg.spike_abs, cfg.spike_window, cfg.spike_z) {}

Instruments::~Instruments() = default;

namespace {
torch::Tensor keep_rows(const torch::Tensor& t, const torch::Tensor& keep) {
  auto flat = t.detach().to(torch::kCPU, torch::kFloat).reshape({-1, t.size(-1)});
  return flat.index_select(0, keep.to(torch::kCPU).reshape(-1).nonzero().squeeze(1));
}
// Mean over tokens of |s - s*|^2 (squared L2 norm of each token's vector).
double change(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).pow(2).sum(1).mean().item<double>();
}
std::vector<double> relative(const std::vector<double>& v) {
  double mx = 0;
  for (double x : v)
    if (std::isfinite(x)) mx = std::max(mx, x);
  std::vector<double> out;
  for (double x : v) out.push_back(mx > 0 ? x / mx : 0.0);
  return out;
}
}  // namespace

std::map<std::string, std::vector<double>> per_layer_norms(const std::vector<std::string>& names,
                                                           const std::vector<double>& norms) {
  // "layers.<i>." is the one stack of the encoder-only models (models/cases.h),
  // an encoder in the instruments' terms.
  static const std::regex layer_re(R"(^(?:(encoder|decoder)_)?layers\.([0-9]+)\.)");
  std::map<std::string, std::vector<double>> out;
  for (size_t i = 0; i < names.size() && i < norms.size(); ++i) {
    std::smatch m;
    if (!std::regex_search(names[i], m, layer_re)) continue;
    auto& v = out[m[1].matched ? m[1].str() : std::string("encoder")];
    size_t l = std::stoul(m[2]);
    if (v.size() <= l) v.resize(l + 1, 0.0);
    v[l] += norms[i] * norms[i];
  }
  for (auto& [stack, v] : out)
    for (auto& x : v) x = std::sqrt(x);
  return out;
}

torch::Tensor logit_margins(const torch::Tensor& logits, const torch::Tensor& target) {
  auto t = target.to(torch::kLong).unsqueeze(1);
  auto correct = logits.gather(1, t).squeeze(1);
  auto rest = logits.scatter(1, t, -std::numeric_limits<float>::infinity());
  return correct - std::get<0>(rest.max(1));
}

namespace {
// The logits [N, V] of the real target tokens (N = rows kept by `keep`).
torch::Tensor kept_logits(const DecoderFeatures& dec, const torch::Tensor& keep) {
  torch::Tensor h = keep_rows(dec.hidden, keep);
  // hidden is [B, T, d] with the output projection split off, or the logits.
  return dec.weight.defined()
             ? torch::matmul(h, dec.weight.detach().to(torch::kCPU, torch::kFloat).t())
             : h;
}
double mean_nll_bits(const torch::Tensor& logits, const torch::Tensor& target) {
  auto lp = torch::log_softmax(logits.to(torch::kDouble), 1);
  return -lp.gather(1, target.to(torch::kLong).unsqueeze(1)).mean().item<double>() / std::log(2.0);
}
}  // namespace

ProbeOutputs probe_forward(Seq2SeqModel& model, const Batch& batch, bool stats) {
  ProbeOutputs f;
  StabilityProbe probe(/*keep_states=*/true);
  torch::Tensor src_keep = batch.src.ne(kPad), tgt_keep = batch.tgt_in.ne(kPad);
  probe.set_masks(src_keep, tgt_keep);
  bool was_training = model.is_training();
  model.eval();
  model.set_observer(&probe);
  try {
    torch::NoGradGuard g;
    EncoderOut enc = model.encode(batch.src);
    DecoderFeatures dec = model.decode_features(batch.tgt_in, enc);
    f.encoder_out = keep_rows(enc.out, src_keep);
    f.decoder_out = keep_rows(dec.hidden, tgt_keep);
    if (stats) {
      torch::Tensor target = batch.tgt_out.to(torch::kCPU).masked_select(tgt_keep.to(torch::kCPU));
      torch::Tensor logits = kept_logits(dec, tgt_keep);
      f.logit_margins = logit_margins(logits, target);
      if (model.conditions_on_source() && batch.src.size(0) >= 2) {
        f.nll_bits = mean_nll_bits(logits, target);
        // The same targets, each read against another sentence's source; no
        // observer: this forward is not part of the stability probe.
        model.set_observer(nullptr);
        DecoderFeatures swapped = model.decode_features(batch.tgt_in, model.encode(batch.src.roll(1, 0)));
        f.nll_rotated_source_bits = mean_nll_bits(kept_logits(swapped, tgt_keep), target);
      }
    }
  } catch (...) {
    model.set_observer(nullptr);
    model.train(was_training);
    throw;
  }
  model.set_observer(nullptr);
  model.train(was_training);
  f.stacks = std::move(probe.stacks());
  if (!stats)  // only the states are compared; drop the rest now
    for (auto& [name, s] : f.stacks) {
      StackProbe lean;
      lean.states = std::move(s.states);
      s = std::move(lean);
    }
  return f;
}

std::vector<double> output_changes(const ProbeOutputs& a, const ProbeOutputs& b,
                                   const std::string& stack) {
  std::vector<double> c;
  auto ia = a.stacks.find(stack), ib = b.stacks.find(stack);
  if (ia != a.stacks.end() && ib != b.stacks.end())
    for (size_t i = 0; i < ia->second.states.size() && i < ib->second.states.size(); ++i)
      c.push_back(change(ia->second.states[i], ib->second.states[i]));
  bool enc = stack == "encoder";
  c.push_back(change(enc ? a.encoder_out : a.decoder_out, enc ? b.encoder_out : b.decoder_out));
  return c;
}

std::unique_ptr<ProbeOutputs> Instruments::run_probe(bool stats) {
  return std::make_unique<ProbeOutputs>(probe_forward(model_, probe_, stats));
}

void Instruments::before_step(int64_t update) {
  torch::NoGradGuard g;
  names_.clear();
  params_.clear();
  snapshot_.clear();
  for (const auto& p : model_.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    names_.push_back(p.key());
    params_.push_back(p.value());
    snapshot_.push_back(p.value().detach().clone());
  }
  base_ = run_probe(true);
  pending_ = MetricsRecord();
  pending_.add("event", std::string("diag")).add("update", update);
  std::vector<double> param_norm;
  grad_norm_.clear();
  for (const auto& p : params_) {
    param_norm.push_back(p.detach().norm().item<double>());
    grad_norm_.push_back(p.grad().defined() ? p.grad().norm().item<double>() : 0.0);
  }
  pending_.add("param_name", names_)
      .add("grad_norm", grad_norm_)
      .add("param_norm", param_norm)
      .add("grad_norm_rel", relative(grad_norm_));
  // Random perturbation of every weight matrix, from a generator of its own.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ * 1000003ULL + static_cast<uint64_t>(update));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    if (p.dim() < 2) continue;
    auto xi = torch::randn(p.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat));
    double scale = cfg_.perturbation * p.norm().item<double>() / std::sqrt(static_cast<double>(p.numel()));
    p.add_(xi.sign().to(p.device(), p.scalar_type()), scale);
  }
  random_ = run_probe(false);
  for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(snapshot_[i]);
}

void Instruments::after_step() {
  if (!base_ || names_.empty()) return;
  torch::NoGradGuard g;
  auto updated = run_probe(false);
  std::vector<double> update_norm;
  for (size_t i = 0; i < params_.size(); ++i)
    update_norm.push_back((params_[i].detach() - snapshot_[i]).norm().item<double>());
  pending_.add("update_norm", update_norm).add("update_norm_rel", relative(update_norm));
  // Per layer, from the per-tensor norms: the gradient as measured before
  // clipping (as grad_norm), the update as applied.
  auto layer_grad = per_layer_norms(names_, grad_norm_);
  auto layer_update = per_layer_norms(names_, update_norm);
  for (const auto& [stack, v] : layer_grad)
    pending_.add(stack + "_layer_grad_norm", v).add(stack + "_layer_update_norm", layer_update[stack]);
  int64_t collapsed_heads = 0;
  for (auto& [stack, s] : base_->stacks) {
    const std::string k = stack + "_";
    pending_.add(k + "kind", s.kind)
        .add(k + "layer", s.layer)
        .add(k + "dependency", s.dependency)
        .add(k + "dependency_matrix", s.dependency_matrix)
        .add(k + "branch_ratio", s.branch_ratio)
        .add(k + "ln_input_rms", s.ln_input_rms)
        .add(k + "omega", s.omega);
    // Output change after i sublayers (i = 0: embeddings) and of the stack's
    // output (last entry), mean over tokens of the squared L2 distance.
    pending_.add(k + "output_change_update", output_changes(*base_, *updated, stack))
        .add(k + "output_change_random", output_changes(*base_, *random_, stack));
    std::vector<std::vector<double>> collapsed;
    for (size_t a = 0; a < s.attn_sublayer.size(); ++a) {
      std::vector<double> flags;
      for (size_t h = 0; h < s.attn_same_key[a].size(); ++h) {
        bool c = StabilityProbe::collapsed(s.attn_same_key[a][h], s.attn_max_prob[a][h],
                                           cfg_.collapse_fraction);
        flags.push_back(c ? 1.0 : 0.0);
        collapsed_heads += c;
      }
      collapsed.push_back(std::move(flags));
    }
    pending_.add(k + "attn_sublayer", s.attn_sublayer)
        .add(k + "attn_entropy", s.attn_entropy)
        .add(k + "attn_max_prob", s.attn_max_prob)
        .add(k + "attn_same_key", s.attn_same_key)
        .add(k + "attn_collapsed", collapsed);
  }
  pending_.add("attn_collapsed_heads", collapsed_heads);
  if (base_->logit_margins.defined() && base_->logit_margins.numel() > 0) {
    // min, 10 %, median, 90 %, max of the probe tokens' margins (nats).
    auto q = torch::quantile(base_->logit_margins.to(torch::kDouble),
                             torch::tensor({0.0, 0.1, 0.5, 0.9, 1.0}, torch::kDouble));
    pending_.add("logit_margin_quantiles",
                 std::vector<double>(q.data_ptr<double>(), q.data_ptr<double>() + q.numel()));
  }
  if (std::isfinite(base_->nll_rotated_source_bits))
    pending_.add("probe_nll", base_->nll_bits)
        .add("probe_nll_rotated_source", base_->nll_rotated_source_bits);
  SecondMomentSummary sm = summarize_second_moments(optimizer_, params_);
  if (sm.available)
    pending_.add("adam_eps", sm.eps)
        .add("adam_eps_dominated", sm.eps_dominated)
        .add("adam_sqrt_v_quantiles", sm.sqrt_v_quantiles)
        .add("adam_tensor_eps_dominated", sm.tensor_eps_dominated)
        .add("adam_first_moment_ratio", sm.first_moment_ratio);
  metrics_.write(pending_);
  base_.reset();
  random_.reset();
  snapshot_.clear();
  params_.clear();
  names_.clear();
}

void Instruments::on_update(int64_t update, double loss_bits, double lr, double grad_norm) {
  Spike s = spikes_.observe(loss_bits);
  if (!s.any()) return;
  ++spikes_since_;
  total_abs_ += s.abs;
  total_robust_ += s.robust;
  metrics_.write(MetricsRecord()
                     .add("event", std::string("spike"))
                     .add("update", update)
                     .add("loss", s.loss)
                     .add("prev_loss", s.previous)
                     .add("jump", s.loss - s.previous)
                     .add("median", s.median)
                     .add("mad", s.mad)
                     .add("rule", s.rule())
                     .add("lr", lr)
                     .add("grad_norm", grad_norm));
}

int64_t Instruments::take_spike_count() {
  int64_t n = spikes_since_;
  spikes_since_ = 0;
  return n;
}

}  // namespace clinic
