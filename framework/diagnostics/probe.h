#pragma once
// What one forward pass of the probe batch shows about every residual
// sublayer and attention head (Liu et al. 2020, §3-4 and Fig. 3/4/7).
//
// Layer dependency. Each stack's state is tracked as a sum of components:
// a_0 = the embedding input, a_i = alpha_i ⊙ f_i(x) the i-th branch output.
// Pre-LN adds a_i to the running sum. Post-LN and Admin first scale every
// component by omega_i, add a_i, then apply the LayerNorm's linear map to
// each component per position (c_j <- gamma ⊙ (c_j - mean_pos c_j) / sigma_pos(b),
// sigma of the whole sum b), so that the components still add up to the
// sublayer output (less the LayerNorm bias). Then, as Transformer-Clinic's
// --plot_variance does, beta_{i,j} = Std[c_j] / sqrt(sum_k Std[c_k]^2): how
// much x_i depends on branch j. `dependency` is beta_{i,i}, the dependency on
// the sublayer's own branch (Post-LN: ~1 in deep layers, the amplification;
// Pre-LN: ~1/sqrt(i)).
//
// Statistics are taken over non-padding positions only, in fp32.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "framework/model.h"

namespace clinic {

/// Per-sublayer statistics of one stack.
struct StackProbe {
  std::vector<std::string> kind;              // "self_attn" | "cross_attn" | "ffn"
  std::vector<double> layer;                  // 0-based layer of each sublayer
  std::vector<double> dependency;             // beta_{i,i}
  std::vector<std::vector<double>> dependency_matrix;  // row i: beta_{i,0..i+1}
  std::vector<double> branch_ratio;           // RMS(alpha ⊙ f(x)) / RMS(omega ⊙ x)
  std::vector<double> ln_input_rms;           // RMS of what the sublayer's LayerNorm reads
  std::vector<double> omega;                  // mean shortcut weight (1 when none)
  /// The stack's state after i sublayers ([N, d], non-padding rows), i = 0
  /// (embeddings) .. n-1; the stack output is added by the caller.
  std::vector<torch::Tensor> states;
  // Attention sublayers: their sublayer index and per-head statistics.
  std::vector<double> attn_sublayer;
  std::vector<std::vector<double>> attn_entropy;    // mean over queries, nats
  std::vector<std::vector<double>> attn_max_prob;   // mean over queries of max_k p
  std::vector<std::vector<double>> attn_same_key;   // share of queries on the modal key
};

/// A SublayerObserver that records StackProbe statistics. Give it the
/// non-padding masks of the batch it will see (set_masks) before the forward.
class StabilityProbe : public SublayerObserver {
 public:
  /// keep_states: also keep every stack state (for output change).
  explicit StabilityProbe(bool keep_states) : keep_states_(keep_states) {}
  /// src_keep [B, S], tgt_keep [B, T]: true at real tokens.
  void set_masks(const torch::Tensor& src_keep, const torch::Tensor& tgt_keep);
  void on_branch(SublayerView& v) override;
  void on_attention(const AttentionView& v) override;
  std::map<std::string, StackProbe>& stacks() { return stacks_; }

  /// Attention statistics of probabilities [B, H, T, S] over the queries
  /// where query_keep [B, T] is true: per head, mean entropy (nats), mean
  /// max probability, and the share of queries whose most-attended key is the
  /// sentence's most common one (1 = every query on the same key).
  /// The collapse flag of one head: (nearly) every query on the same key
  /// (same-key share >= fraction) and sharply so (mean max probability >=
  /// 0.9). The second condition keeps out a uniform head (its argmax ties
  /// all pick key 0) and the diffuse "sink" heads of healthy deep models
  /// (entropy ~1.4 nats, max probability 0.5-0.8 on BOS), measured on the
  /// 18+18 Pre-LN and Admin runs of docs/analysis.md.
  static bool collapsed(double same_key, double max_prob, double fraction) {
    return same_key >= fraction && max_prob >= 0.9;
  }
  static void attention_stats(const torch::Tensor& probs, const torch::Tensor& query_keep,
                              std::vector<double>* entropy, std::vector<double>* max_prob,
                              std::vector<double>* same_key);

 private:
  const torch::Tensor& keep_of(const char* stack) const;
  torch::Tensor rows(const torch::Tensor& t, const char* stack) const;  // [N, d]
  bool keep_states_;
  torch::Tensor src_keep_, tgt_keep_;
  std::map<std::string, StackProbe> stacks_;
  std::map<std::string, std::vector<torch::Tensor>> components_;  // [N, d] each
};

}  // namespace clinic
