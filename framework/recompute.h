#pragma once
// Activation checkpointing (Chen et al. 2016, "Training Deep Nets with
// Sublinear Memory Cost"; fairseq's --checkpoint-activations).
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace clinic {

using RecomputeFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

/// Returns fn(inputs) without keeping fn's intermediate tensors alive: the
/// forward runs under no-grad and only `inputs` are saved; backward re-runs fn
/// with the RNG state (dropout masks) and autocast state of the first run and
/// backpropagates through it (re-entrant autograd, so parameter gradients
/// accumulate directly). Memory per wrapped block drops from every activation
/// to its inputs, for one extra forward. `inputs` are the differentiable
/// tensors (all defined); masks and other constants belong in fn's closure.
/// Without grad mode, or when nothing requires grad, it is just fn(inputs).
torch::Tensor recompute_in_backward(const RecomputeFn& fn,
                                    const std::vector<torch::Tensor>& inputs);

}  // namespace clinic
