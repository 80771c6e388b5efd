#include "framework/diagnostics/probe.h"

#include <cmath>

namespace clinic {

namespace {
double rms(const torch::Tensor& t) { return t.pow(2).mean().sqrt().item<double>(); }
double pop_std(const torch::Tensor& t) {
  return t.numel() > 0 ? t.std(/*unbiased=*/false).item<double>() : 0.0;
}
// Row i of the dependency matrix: Std[c_j] / sqrt(sum_k Std[c_k]^2).
std::vector<double> dependency_row(const std::vector<torch::Tensor>& comps) {
  std::vector<double> stds;
  double total = 0;
  for (const auto& c : comps) {
    stds.push_back(pop_std(c));
    total += stds.back() * stds.back();
  }
  double norm = std::sqrt(total);
  for (auto& s : stds) s = norm > 0 ? s / norm : 0.0;
  return stds;
}
}  // namespace

void StabilityProbe::set_masks(const torch::Tensor& src_keep, const torch::Tensor& tgt_keep) {
  src_keep_ = src_keep.to(torch::kCPU).to(torch::kBool);
  tgt_keep_ = tgt_keep.to(torch::kCPU).to(torch::kBool);
}

const torch::Tensor& StabilityProbe::keep_of(const char* stack) const {
  return std::string(stack) == "encoder" ? src_keep_ : tgt_keep_;
}

torch::Tensor StabilityProbe::rows(const torch::Tensor& t, const char* stack) const {
  auto flat = t.detach().to(torch::kCPU, torch::kFloat).reshape({-1, t.size(-1)});
  const auto& keep = keep_of(stack);
  if (!keep.defined()) return flat;
  return flat.index_select(0, keep.reshape(-1).nonzero().squeeze(1));
}

void StabilityProbe::on_branch(SublayerView& v) {
  torch::NoGradGuard g;
  std::string stack = v.stack;
  auto& s = stacks_[stack];
  auto& comps = components_[stack];
  torch::Tensor x = rows(v.x, v.stack);
  if (v.index == 0) comps = {x};  // a_0: the embedding input
  if (keep_states_) s.states.push_back(x);
  torch::Tensor a = rows(v.fx, v.stack);
  if (v.alpha.defined()) a = a * v.alpha.detach().to(torch::kCPU, torch::kFloat);
  torch::Tensor omega = v.omega.defined() ? v.omega.detach().to(torch::kCPU, torch::kFloat)
                                          : torch::ones({1});
  torch::Tensor shortcut = x * omega;
  s.kind.emplace_back(v.kind);
  s.omega.push_back(omega.mean().item<double>());
  s.layer.push_back(static_cast<double>(v.layer));
  s.branch_ratio.push_back(rms(a) / std::max(rms(shortcut), 1e-30));
  if (!v.post_norm) {
    // Pre-LN (the LayerNorm reads x before the branch) and norm-free variants.
    s.ln_input_rms.push_back(v.norm_weight.defined() ? rms(x) : NAN);
    comps.push_back(a);
  } else {
    for (auto& c : comps) c = c * omega;
    comps.push_back(a);
    torch::Tensor b = shortcut + a;  // what the LayerNorm reads
    s.ln_input_rms.push_back(rms(b));
    torch::Tensor sigma = (b.var(1, /*unbiased=*/false, /*keepdim=*/true) + v.norm_eps).sqrt();
    torch::Tensor gamma = v.norm_weight.defined()
                              ? v.norm_weight.detach().to(torch::kCPU, torch::kFloat)
                              : torch::ones({1});
    for (auto& c : comps) c = (c - c.mean(1, /*keepdim=*/true)) / sigma * gamma;
  }
  auto row = dependency_row(comps);
  s.dependency.push_back(row.back());
  s.dependency_matrix.push_back(std::move(row));
}

void StabilityProbe::attention_stats(const torch::Tensor& probs_in,
                                     const torch::Tensor& query_keep,
                                     std::vector<double>* entropy,
                                     std::vector<double>* max_prob,
                                     std::vector<double>* same_key) {
  torch::NoGradGuard g;
  auto probs = probs_in.detach().to(torch::kCPU, torch::kFloat);  // [B, H, T, S]
  const int64_t B = probs.size(0), H = probs.size(1), T = probs.size(2), S = probs.size(3);
  auto keep = query_keep.defined() ? query_keep.to(torch::kCPU).to(torch::kFloat)
                                   : torch::ones({B, T});
  auto q = keep.view({B, 1, T});                                  // [B, 1, T]
  double nq = keep.sum().item<double>();
  auto ent = -torch::xlogy(probs, probs).sum(-1);                 // [B, H, T]
  auto mx = std::get<0>(probs.max(-1));                           // [B, H, T]
  auto arg = std::get<1>(probs.max(-1));                          // [B, H, T]
  // Per sentence and head: how many of its real queries pick each key.
  auto counts = torch::zeros({B, H, S}).scatter_add_(2, arg, q.expand({B, H, T}).contiguous());
  auto modal = std::get<0>(counts.max(-1));                       // [B, H]
  auto per_sentence = keep.sum(1).clamp_min(1).view({B, 1});      // [B, 1]
  auto has_queries = (keep.sum(1) > 0).to(torch::kFloat).view({B, 1});
  double sentences = std::max(has_queries.sum().item<double>(), 1.0);
  auto same = (modal / per_sentence * has_queries).sum(0) / sentences;  // [H]
  const std::vector<int64_t> query_dims{0, 2};
  auto ent_h = (ent * q).sum(query_dims) / std::max(nq, 1.0);
  auto max_h = (mx * q).sum(query_dims) / std::max(nq, 1.0);
  auto to_vector = [H](const torch::Tensor& t) {
    auto c = t.to(torch::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + H);
  };
  *entropy = to_vector(ent_h);
  *max_prob = to_vector(max_h);
  *same_key = to_vector(same);
}

void StabilityProbe::on_attention(const AttentionView& v) {
  auto& s = stacks_[v.stack];
  std::vector<double> e, m, k;
  attention_stats(v.probs, keep_of(v.stack), &e, &m, &k);
  s.attn_sublayer.push_back(static_cast<double>(v.index));
  s.attn_entropy.push_back(std::move(e));
  s.attn_max_prob.push_back(std::move(m));
  s.attn_same_key.push_back(std::move(k));
}

}  // namespace clinic
