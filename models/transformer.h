#pragma once
// Encoder-decoder Transformer with a pluggable residual variant. Public
// header: subclass TransformerImpl (override embed_*/project_output) or a
// layer, register a builder under a new model.arch name, and train it from
// a recipe. See test/models/transformer_test.cpp for an example.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/model.h"
#include "models/layers.h"
#include "models/residual.h"

namespace clinic {

/// One residual sublayer: N_post(omega x + alpha drop(f(N_pre(x)))).
class SublayerImpl : public torch::nn::Module {
 public:
  SublayerImpl(const SublayerSite& site, const ResidualVariant& variant,
               double dropout, const char* kind);
  /// x [B, T, d]; branch maps the (maybe normalised) input to f(x) [B, T, d].
  template <class Fn>
  torch::Tensor forward(const torch::Tensor& x, Fn&& branch) {
    torch::Tensor h = position == NormPosition::kPre ? layer_norm_fp32(norm, x) : x;
    torch::Tensor fx = clinic::apply_dropout(branch(h), dropout, is_training());
    if (observer) {
      SublayerView view{site.decoder ? "decoder" : "encoder", site.layer,
                        site.index, kind, x, fx, residual->omega, residual->alpha,
                        position == NormPosition::kPost,
                        norm ? norm->weight : torch::Tensor(),
                        norm ? norm->options.eps() : 1e-5};
      observer->on_branch(view);
    }
    torch::Tensor y = residual(x, fx);
    return position == NormPosition::kPost ? layer_norm_fp32(norm, y) : y;
  }

  SublayerSite site;
  NormPosition position;
  double dropout;
  const char* kind;
  torch::nn::LayerNorm norm{nullptr};
  Residual residual{nullptr};
  SublayerObserver* observer = nullptr;
};
TORCH_MODULE(Sublayer);

class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(const ModelConfig& cfg, const ResidualVariant& variant,
                   const SublayerSite& site);
  /// x [B, S, d], pad_mask [B, S] -> [B, S, d]
  virtual torch::Tensor forward(const torch::Tensor& x,
                                const torch::Tensor& pad_mask);
  MultiheadAttention self_attn{nullptr};
  FeedForward ffn{nullptr};
  Sublayer attn_sublayer{nullptr}, ffn_sublayer{nullptr};
};
TORCH_MODULE(EncoderLayer);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, const ResidualVariant& variant,
                   const SublayerSite& site);
  /// x [B, T, d]; enc [B, S, d]; enc_pad [B, S]; future [T, T] or undefined;
  /// cache slots for incremental decoding (all four or none); write_at: the
  /// slot of a static cache (MultiheadAttention::forward), future its mask.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& enc,
                                const torch::Tensor& enc_pad,
                                const torch::Tensor& future,
                                torch::Tensor* self_k = nullptr,
                                torch::Tensor* self_v = nullptr,
                                torch::Tensor* cross_k = nullptr,
                                torch::Tensor* cross_v = nullptr,
                                const torch::Tensor& write_at = torch::Tensor());
  MultiheadAttention self_attn{nullptr}, cross_attn{nullptr};
  FeedForward ffn{nullptr};
  Sublayer self_sublayer{nullptr}, cross_sublayer{nullptr},
      ffn_sublayer{nullptr};
};
TORCH_MODULE(DecoderLayer);

class TransformerImpl : public Seq2SeqModel {
 public:
  TransformerImpl(const ModelConfig& cfg, const VocabInfo& vocab);

  EncoderOut encode(const torch::Tensor& src) override;
  torch::Tensor decode(const torch::Tensor& tgt_in, const EncoderOut& enc,
                       DecoderCache* cache = nullptr) override;
  DecoderFeatures decode_features(const torch::Tensor& tgt_in,
                                  const EncoderOut& enc) override;
  std::string initialize_from_batch(const Batch& batch) override;
  void set_observer(SublayerObserver* observer) override;
  bool is_no_decay(const std::string& name) const override;
  torch::jit::Module to_torchscript() const override;

  /// Hooks for subclasses.
  /// src [B, S] -> scaled token embedding + positions, before dropout.
  virtual torch::Tensor embed_source(const torch::Tensor& src);
  /// tgt [B, T] -> same for the decoder; step >= 0 when incremental.
  virtual torch::Tensor embed_target(const torch::Tensor& tgt, int64_t step);
  /// h [B, T, d] -> logits [B, T, V].
  virtual torch::Tensor project_output(const torch::Tensor& h);
  /// Whether project_output is the plain h · output_weightᵀ, so training may
  /// apply it inside the chunked loss (decode_features). True only for this
  /// class itself: a subclass keeps the full-logits path, whatever it
  /// overrides, unless it returns true here.
  virtual bool linear_output() const;
  /// A static cache embeds the target at a step held on the device, past
  /// embed_target's host step: true only for this class itself, like
  /// linear_output (a subclass keeps the growing cache unless it says so).
  bool static_cache() const override;

  /// decode() before project_output: [B, T, d] after the final norm.
  torch::Tensor decode_hidden(const torch::Tensor& tgt_in, const EncoderOut& enc,
                              DecoderCache* cache);
  /// Every sublayer in execution order: encoder first, then decoder.
  std::vector<Sublayer> sublayers() const;
  /// A fresh cache sized for this decoder.
  DecoderCache new_cache() const;

  ModelConfig config;
  VocabInfo vocab;
  /// model.residual, and the variant of each stack (model.encoder_residual /
  /// model.decoder_residual when given, else the same object).
  std::shared_ptr<ResidualVariant> variant, encoder_variant, decoder_variant;
  double embed_scale;
  torch::nn::Embedding encoder_embed{nullptr}, decoder_embed{nullptr};
  torch::Tensor output_weight;  // [V, d]; aliases decoder_embed when tied
  SinusoidalPositions positions{nullptr};
  torch::nn::ModuleList encoder_layers{nullptr}, decoder_layers{nullptr};
  torch::nn::LayerNorm encoder_norm{nullptr}, decoder_norm{nullptr};
};

/// Admin's profiling (Transformer-Clinic, transformer_layer.py
/// 'adaptive-profiling'): one train-mode forward on `batch` with dropout on;
/// per stack a running value r = 1; before sublayer k, omega_k := r; then
/// r <- sqrt(Var(omega_k ⊙ x) + Var(f_k(x))) over all elements (padding
/// included). Returns per-sublayer omega values, encoder first.
std::vector<double> admin_initialize(TransformerImpl& model, const Batch& batch);
/// The same profiling for any model whose sublayers report to its observer
/// (an encoder-only model profiles its one stack): only the stacks flagged
/// are profiled.
std::vector<double> admin_profile(Seq2SeqModel& model, const Batch& batch, bool profile_encoder,
                                  bool profile_decoder);
/// The `[init]` log line of a profiling: "admin omega per sublayer: enc 1:w
/// 2:w ... | dec 1:w ...", the first `n_encoder` values the encoder's (0 when
/// only the decoder was profiled), the rest the decoder's.
std::string admin_omega_summary(const std::vector<double>& omegas, size_t n_encoder);

/// Rewrite an admin (scalar omega), admin_closed_form (scalar) or deepnorm
/// model as plain Post-LN: LN(w x + f) = LN(x + f / w) up to LayerNorm's eps,
/// so each branch's last projection is divided by w. Throws for vector omega.
std::shared_ptr<TransformerImpl> fold_to_post_ln(const TransformerImpl& model);

void register_builtin_models();

}  // namespace clinic
