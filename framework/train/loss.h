#pragma once
// Sequence losses, registered by name. Losses are sums over non-pad target
// tokens; the trainer divides gradients by the update's target-token count
// (fairseq's sample_size), which makes update_freq exactly one big batch.
#include <torch/torch.h>

#include <functional>

#include "framework/config.h"
#include "framework/model.h"
#include "framework/registry.h"

namespace clinic {

struct LossOut {
  torch::Tensor loss;  // scalar, summed over tokens (what is backpropagated)
  torch::Tensor nll;   // scalar, summed negative log-likelihood (nats)
};

/// logits [B, T, V] (any float dtype), target [B, T] with kPad ignored.
using LossFn =
    std::function<LossOut(const torch::Tensor& logits, const torch::Tensor& target)>;
/// The same loss of logits = hidden [B, T, d] · weight [V, d]ᵀ, computed in
/// `compute_dtype` (the autocast dtype, or float) without the full logits.
using FeatureLossFn = std::function<LossOut(
    const torch::Tensor& hidden, const torch::Tensor& weight,
    const torch::Tensor& target, torch::ScalarType compute_dtype)>;

/// A registered criterion: always a loss of logits; optionally a fused form
/// for models that split their linear output layer off (DecoderFeatures).
struct Criterion {
  LossFn on_logits;
  FeatureLossFn on_features;  // empty: the projection is applied first
  // The loss over the columns `allowed` [V] bool only (DecoderFeatures::
  // allowed); empty: on_logits sees every column, ruled-out ones included.
  std::function<LossOut(const torch::Tensor& logits, const torch::Tensor& target,
                        const torch::Tensor& allowed)>
      on_allowed;
  LossOut operator()(const torch::Tensor& logits, const torch::Tensor& target) const {
    return on_logits(logits, target);
  }
  LossOut operator()(const DecoderFeatures& f, const torch::Tensor& target,
                     torch::ScalarType compute_dtype) const;
};
using LossBuilder = std::function<Criterion(const TrainConfig&)>;
Registry<LossBuilder>& loss_registry();
void register_builtin_losses();

/// Label-smoothed cross-entropy. kEpsOverV: fairseq 0.8 / Transformer-Clinic
/// (loss = (1-eps) nll + eps/V * sum_v -log p_v); kEpsOverVMinus1: fairseq
/// >= 0.9 (eps_i = eps/(V-1), loss = (1-eps-eps_i) nll + eps_i sum_v -log p_v).
enum class SmoothingMass { kEpsOverV, kEpsOverVMinus1 };
LossOut label_smoothed_nll(const torch::Tensor& logits,
                           const torch::Tensor& target, double eps,
                           SmoothingMass mass);
/// The same over the columns `allowed` [V] bool: V is their count and the
/// smoothing term sums -log p_v over them only (-1e9 logits elsewhere).
LossOut label_smoothed_nll(const torch::Tensor& logits, const torch::Tensor& target,
                           double eps, SmoothingMass mass, const torch::Tensor& allowed);
/// label_smoothed_nll(hidden · weightᵀ, ...) over chunks of `chunk_rows`
/// tokens (0: sized so one chunk's fp32 logits are ~32 MB). Projection GEMMs
/// run in compute_dtype (bf16 under autocast, else float), softmax in fp32.
/// When gradients are needed they are formed chunk by chunk during forward
/// (the loss's gradient needs only the probabilities) and scaled by the
/// upstream gradient in backward; peak extra memory is one chunk's logits.
LossOut fused_linear_label_smoothed_nll(const torch::Tensor& hidden,
                                        const torch::Tensor& weight,
                                        const torch::Tensor& target, double eps,
                                        SmoothingMass mass,
                                        torch::ScalarType compute_dtype,
                                        int64_t chunk_rows = 0);

}  // namespace clinic
