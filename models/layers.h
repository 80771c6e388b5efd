#pragma once
// Building blocks of the Transformer (Vaswani et al. 2017) with fairseq 0.8
// conventions: batch-first tensors, fused in-projection, sinusoidal
// positions with [sin | cos] halves.
#include <torch/torch.h>

#include "framework/model.h"

namespace clinic {

/// Inverted dropout, y = x * keep / (1 - p), keep ~ Bernoulli(1 - p).
/// On CPU LibTorch 1.13 (built without MKL) draws the float mask with a serial
/// per-element bernoulli_ (~20 ns/element, measured: 210 ms for 4M elements
/// against 12 ms for random_() of the same bits) and saves that float mask
/// for backward. Here each 64-bit word of a counter-based hash (SplitMix64 of
/// one seed drawn from the default generator, filled in parallel) feeds 4
/// elements, each kept iff its low 15 bits >= round(p 2^15) (p quantised to
/// 2^-15), and the mask is saved as bool (1 byte/element instead of 4). Other
/// devices use torch::dropout (fused kernels, bool masks already). The seed
/// comes from the default generator, so torch::manual_seed and checkpointed
/// RNG state reproduce the mask, at any thread count.
torch::Tensor apply_dropout(const torch::Tensor& x, double p, bool training);
/// drop(relu(x)) for the FFN hidden layer: saves only its output y (which
/// fc2 saves anyway), since d y / d x = 1[y > 0] / (1 - p).
torch::Tensor apply_relu_dropout(const torch::Tensor& x, double p, bool training);
/// The keep mask apply_dropout(x, p) would draw: bool, shaped like `like`.
torch::Tensor dropout_keep_mask(const torch::Tensor& like, double p);
/// alpha * a @ b for attention's many small per-head products: a [N, M, K]
/// and b [N, K, P], or a [B, H, M, K] and b [B, H, K, P] with any strides on
/// the batch dims (per-head views of [B, L, H, dh] projections, read in
/// place). LibTorch 1.13 without MKL loops over the batch through the
/// dispatcher (select, checks, a possibly 2-thread sgemm per 32x64x32
/// product: 1.3-4.6 ms for 512 products in a standalone loop on 2 threads);
/// fp32 CPU tensors here call BLAS sgemm directly, the batch split across
/// threads, each product single-threaded (0.8-1.0 ms there), forward and
/// backward. The result is dense in the memory order of `out_layout` when
/// given (a tensor of the result's shape, e.g. the [B, L, H, dh]-ordered q
/// for the context, so merging heads is a view), else contiguous; gradients
/// come out in their input's memory order. Other cases, or a build without
/// BLAS (CLINIC_HAVE_BLAS): torch::matmul.
torch::Tensor head_bmm(const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0,
                       const torch::Tensor& out_layout = {});
/// Whether this build calls BLAS in head_bmm (CLINIC_USE_BLAS found one).
bool head_bmm_uses_blas();

struct MultiheadAttentionOptions {
  MultiheadAttentionOptions(int64_t embed_dim, int64_t heads)
      : embed_dim_(embed_dim), heads_(heads) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(double, dropout) = 0.0;
  /// Self-attention projects q, k, v from one input with one GEMM;
  /// cross-attention projects q from the decoder and k, v from the encoder.
  TORCH_ARG(bool, self_attention) = true;
};

/// Scaled dot-product attention, softmax(q k^T / sqrt(dh)) v, over heads.
class MultiheadAttentionImpl : public torch::nn::Module {
 public:
  explicit MultiheadAttentionImpl(const MultiheadAttentionOptions& options);
  /// fairseq 0.8 init: xavier_uniform on the fused [3d, d] in-projection
  /// (per-matrix std 1/sqrt(2d)) and on out_proj; zero biases. A gain != 1
  /// (DeepNorm's beta) switches to xavier_normal per matrix with gain 1 on
  /// q, k and `value_gain` on v and out_proj.
  void reset_parameters(double value_gain = 1.0);
  /// query [B, T, d]; memory [B, S, d] (cross-attention; ignored for self);
  /// key_pad_mask [B, S] bool (true = padding) or undefined; future_mask
  /// [T, S] bool (true = blocked) or undefined. With cache_k / cache_v
  /// (incremental decoding) self-attention appends this step's keys and
  /// cross-attention computes the encoder keys once. Returns [B, T, d].
  /// `future_is_causal`: the caller promises future_mask is the causal mask
  /// (ones(T, T).triu(1)); with no key padding, LibTorch 2.x's SDPA then
  /// runs with is_causal and no mask tensor, which its flash kernel needs
  /// (an explicit mask limits it to the memory-efficient or math kernels).
  /// `write_at` ([1] long, self-attention with a cache): a static cache
  /// (DecoderCache::capacity): this step's keys go to that slot of caches
  /// with future_mask.size(-1) slots (allocated, zero, on the first step),
  /// and the step attends over every slot future_mask leaves open.
  torch::Tensor forward(const torch::Tensor& query,
                        const torch::Tensor& memory,
                        const torch::Tensor& key_pad_mask,
                        const torch::Tensor& future_mask,
                        torch::Tensor* cache_k = nullptr,
                        torch::Tensor* cache_v = nullptr,
                        bool future_is_causal = false,
                        const torch::Tensor& write_at = torch::Tensor());

  MultiheadAttentionOptions options;
  torch::Tensor in_proj_weight;  // [3d, d]: q, k, v rows
  torch::Tensor in_proj_bias;    // [3d]
  torch::nn::Linear out_proj{nullptr};
  /// Instruments (set by the model's set_observer): shown the probabilities.
  SublayerObserver* observer = nullptr;
  const char* stack = "encoder";
  int64_t layer = 0, index = 0;
};
TORCH_MODULE(MultiheadAttention);

struct FeedForwardOptions {
  FeedForwardOptions(int64_t d_model, int64_t ffn_dim)
      : d_model_(d_model), ffn_dim_(ffn_dim) {}
  TORCH_ARG(int64_t, d_model);
  TORCH_ARG(int64_t, ffn_dim);
  TORCH_ARG(bool, gelu) = false;
  TORCH_ARG(double, activation_dropout) = 0.0;
};

/// fc2(drop(act(fc1(x)))): [B, T, d] -> [B, T, d].
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const FeedForwardOptions& options);
  void reset_parameters(double gain = 1.0);
  torch::Tensor forward(const torch::Tensor& x);
  FeedForwardOptions options;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(FeedForward);

/// fairseq's SinusoidalPositionalEmbedding: padding gets a zero vector and the
/// i-th real token (1-based) gets fairseq's position i + 1.
class SinusoidalPositionsImpl : public torch::nn::Module {
 public:
  SinusoidalPositionsImpl(int64_t max_positions, int64_t dim);
  /// tokens [B, T] -> [B, T, dim]. `step` >= 0 means incremental decoding:
  /// every row is at position step + 1.
  torch::Tensor forward(const torch::Tensor& tokens, int64_t step = -1);
  /// Incremental decoding at a step held on the device ([1] long): every
  /// row at position step + 1, read without a host value (a static cache).
  torch::Tensor at(const torch::Tensor& tokens, const torch::Tensor& step);
  torch::Tensor table;  // [max_positions + 1, dim], row 0 = padding
};
TORCH_MODULE(SinusoidalPositions);

/// LayerNorm that computes in fp32 whatever the autocast input dtype: under
/// LibTorch 1.13 CPU autocast a bf16 input meets fp32 weights and throws.
torch::Tensor layer_norm_fp32(torch::nn::LayerNorm& ln, const torch::Tensor& x);

}  // namespace clinic
