#pragma once
// The two systems of the reports clinic was built for (docs/cases.md), as
// registered models built from clinic's layers. They are also the worked
// examples of "implement Seq2SeqModel for an experiment".
//
// encoder_tagger (case A, the PyTorch-tutorial De->En "translation"
// baseline): source embedding * sqrt(d) + the tutorial's sinusoidal
// positions (interleaved sin/cos from position 0), model.encoder_layers
// clinic EncoderLayers (post_ln = nn.TransformerEncoderLayer, pre_ln =
// norm_first=True; no final LayerNorm, as the tutorial passes none), and a
// linear head over the target vocabulary at every source position
// (data.target_layout: source_aligned). Init as reported: embedding and head
// weight U(-0.1, 0.1), head bias U(log(1/V) - 0.1, log(1/V) + 0.1); the FFN
// and attention output projections get torch.nn.Linear's default init, the
// fused in-projection xavier_uniform with zero bias (nn.MultiheadAttention's).
//
// causal_lm (case B, the 1-layer toy): BERT-style embeddings (token + learned
// positions, LayerNorm with model.layer_norm_eps, dropout), model.encoder_layers
// clinic EncoderLayers under a causal mask (post_ln, GELU, hidden and
// attention dropout), a linear head over data.fixed_vocab tokens. BERT's
// init: N(0, 0.02) weights, zero biases. Token t is id t + 4 (fixed_batch);
// the head's logits are placed at ids 4.. and ids 0-3 get -1e9, so the
// softmax and cross-entropy are exactly those over the real tokens.
#include "framework/model.h"
#include "models/transformer.h"

namespace clinic {

class CausalEncoderLayerImpl : public EncoderLayerImpl {
 public:
  using EncoderLayerImpl::EncoderLayerImpl;
  /// Self-attention under a causal mask: position t sees positions <= t.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad_mask) override;
};

/// Shared by both cases: a stack of encoder layers and nothing to decode.
class EncoderOnlyModel : public Seq2SeqModel {
 public:
  void set_observer(SublayerObserver* observer) override;
  /// model.residual: admin - Admin's profiling of the one stack (without it
  /// omega stays 1 and the model is Post-LN).
  std::string initialize_from_batch(const Batch& batch) override;
  bool conditions_on_source() const override { return false; }
  torch::jit::Module to_torchscript() const override;
  torch::nn::ModuleList layers{nullptr};
  std::shared_ptr<ResidualVariant> variant;

 protected:
  EncoderOnlyModel(const ModelConfig& cfg, bool causal);
  torch::Tensor run_layers(torch::Tensor x, const torch::Tensor& pad_mask);
  ModelConfig config_;
};

class EncoderTaggerImpl : public EncoderOnlyModel {
 public:
  EncoderTaggerImpl(const ModelConfig& cfg, const VocabInfo& vocab);
  EncoderOut encode(const torch::Tensor& src) override;
  /// Logits [B, S, V_tgt] at the source positions; tgt_in is not read.
  torch::Tensor decode(const torch::Tensor& tgt_in, const EncoderOut& enc,
                       DecoderCache* cache = nullptr) override;
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear head{nullptr};
  torch::Tensor positions;  // [max_source_positions, d], the tutorial's table

 protected:
  /// What encode() adds to the scaled embeddings of src [B, S]: the table's
  /// first S rows, [1, S, d].
  virtual torch::Tensor position_term(const torch::Tensor& src) const;
};

/// encoder_tagger_row_pe: case A with the tutorial's PositionalEncoding fed
/// batch-first tensors. The tutorial's module is sequence-first (x + pe[:x.size(0)]
/// on [S, B, d]); on [B, S, d] it adds pe[b] to every position of row b, so the
/// encoder sees a bag of source tokens with no position. A hypothesis for the
/// report's plateau near the input-independent baseline (docs/cases.md) and
/// the worked example of subclassing a model for an experiment: only the
/// position term changes.
class EncoderTaggerRowPeImpl : public EncoderTaggerImpl {
 public:
  using EncoderTaggerImpl::EncoderTaggerImpl;

 protected:
  /// pe[:B] as [B, 1, d]: row b's vector at every position.
  torch::Tensor position_term(const torch::Tensor& src) const override;
};

class CausalLmImpl : public EncoderOnlyModel {
 public:
  CausalLmImpl(const ModelConfig& cfg, const VocabInfo& vocab);
  EncoderOut encode(const torch::Tensor& src) override;
  /// Logits [B, T, V] with the real tokens at ids 4..; tgt_in is not read.
  torch::Tensor decode(const torch::Tensor& tgt_in, const EncoderOut& enc,
                       DecoderCache* cache = nullptr) override;
  /// decode()'s logits with `allowed` = the real ids: label smoothing then
  /// spreads its mass over the real tokens only, as over the spec's 2 classes.
  DecoderFeatures decode_features(const torch::Tensor& tgt_in, const EncoderOut& enc) override;
  torch::nn::Embedding tokens{nullptr}, positions{nullptr};
  torch::nn::LayerNorm embed_norm{nullptr};
  torch::nn::Linear head{nullptr};
  int64_t offset = 4;
};

void register_case_models();

}  // namespace clinic
