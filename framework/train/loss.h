#pragma once
// Sequence losses, registered by name. Losses are sums over non-pad target
// tokens; the trainer divides gradients by the update's target-token count
// (fairseq's sample_size), which makes update_freq exactly one big batch.
#include <torch/torch.h>

#include <functional>

#include "framework/config.h"
#include "framework/registry.h"

namespace clinic {

struct LossOut {
  torch::Tensor loss;  // scalar, summed over tokens (what is backpropagated)
  torch::Tensor nll;   // scalar, summed negative log-likelihood (nats)
};

/// logits [B, T, V] (any float dtype), target [B, T] with kPad ignored.
using LossFn =
    std::function<LossOut(const torch::Tensor& logits, const torch::Tensor& target)>;
using LossBuilder = std::function<LossFn(const TrainConfig&)>;
Registry<LossBuilder>& loss_registry();
void register_builtin_losses();

/// Label-smoothed cross-entropy. kEpsOverV: fairseq 0.8 / Transformer-Clinic
/// (loss = (1-eps) nll + eps/V * sum_v -log p_v); kEpsOverVMinus1: fairseq
/// >= 0.9 (eps_i = eps/(V-1), loss = (1-eps-eps_i) nll + eps_i sum_v -log p_v).
enum class SmoothingMass { kEpsOverV, kEpsOverVMinus1 };
LossOut label_smoothed_nll(const torch::Tensor& logits,
                           const torch::Tensor& target, double eps,
                           SmoothingMass mass);

}  // namespace clinic
