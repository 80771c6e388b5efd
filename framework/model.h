#pragma once
// The only model interface framework/ knows. Concrete models live in models/.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/registry.h"

namespace clinic {

/// Special token ids shared by every vocabulary clinic builds.
constexpr int64_t kPad = 0;
constexpr int64_t kUnk = 1;
constexpr int64_t kBos = 2;
constexpr int64_t kEos = 3;

/// One padded batch (right padding with kPad).
struct Batch {
  torch::Tensor src;      // [B, S] source ids, ends with kEos
  torch::Tensor tgt_in;   // [B, T] kBos + target
  torch::Tensor tgt_out;  // [B, T] target + kEos
  int64_t src_tokens = 0; // non-pad source tokens
  int64_t tgt_tokens = 0; // non-pad target tokens
  std::vector<int64_t> ids;  // corpus line index of each row
  int64_t rows() const { return src.defined() ? src.size(0) : 0; }
  Batch to(const torch::Device& d) const;
};

/// What one residual sublayer exposes to an observer: the seam for Admin
/// profiling and the stability instruments (framework/diagnostics). The
/// sublayer computes N_post(omega ⊙ x + alpha ⊙ fx) with fx = f(N_pre(x)).
struct SublayerView {
  const char* stack;     // "encoder" | "decoder"
  int64_t layer;         // 0-based layer in the stack
  int64_t index;         // 0-based sublayer index in the stack, execution order
  const char* kind;      // "self_attn" | "cross_attn" | "ffn"
  const torch::Tensor& x;   // [B, T, d] shortcut input
  const torch::Tensor& fx;  // [B, T, d] branch output, after dropout
  torch::Tensor omega;      // shortcut weight; undefined means 1
  torch::Tensor alpha = {};       // branch weight (ReZero); undefined means 1
  bool post_norm = false;         // a LayerNorm follows the sum (Post-LN, Admin)
  torch::Tensor norm_weight = {}; // [d] gamma of that LayerNorm (or of N_pre)
  double norm_eps = 1e-5;
};

/// Attention probabilities of one attention sublayer, for instruments.
struct AttentionView {
  const char* stack;            // "encoder" | "decoder"
  int64_t layer;                // 0-based layer
  int64_t index;                // sublayer index in the stack (as SublayerView)
  const char* kind;             // "self_attn" | "cross_attn"
  const torch::Tensor& probs;   // [B, H, T, S] softmax output, before dropout
};

class SublayerObserver {
 public:
  virtual ~SublayerObserver() = default;
  /// Called after f(x) and before x and f(x) are combined, so an observer may
  /// still set omega (Admin's profiling does).
  virtual void on_branch(SublayerView& view) = 0;
  /// Called inside attention sublayers. Only when an observer is attached do
  /// attention paths that never form the probabilities (SDPA) compute them.
  virtual void on_attention(const AttentionView&) {}
};

struct EncoderOut {
  torch::Tensor out;       // [B, S, d]
  torch::Tensor pad_mask;  // [B, S] bool, true at padding
  EncoderOut index_select(const torch::Tensor& rows) const;
};

/// Key/value caches for incremental decoding, one entry per decoder layer.
/// Row r of every tensor belongs to hypothesis r.
struct DecoderCache {
  std::vector<torch::Tensor> self_k, self_v;    // [R, H, t, dh]
  std::vector<torch::Tensor> cross_k, cross_v;  // [R, H, S, dh]
  int64_t steps = 0;                            // tokens decoded so far
  /// > 0: a static cache (eval.cuda_graph, issue 33 item 3). Self-attention
  /// keys and values are [R, H, capacity, dh] from the first step on; a
  /// step writes its own at slot `position` (0-dim long on the device, which
  /// the step advances in place) and masks the later slots. No tensor
  /// changes shape or memory between steps, so a step can be captured once
  /// and replayed. 0: the caches grow by one slot per step.
  int64_t capacity = 0;
  torch::Tensor position;
  void reorder(const torch::Tensor& rows);
  /// Static caches: the self-attention rows gathered by `rows` in place.
  /// Cross-attention caches are left as they are: beam search reorders
  /// within a sentence, whose rows share one encoder output.
  void reorder_in_place(const torch::Tensor& rows);
};

/// Vocabulary facts a model builder needs.
struct VocabInfo {
  int64_t src_size = 0;
  int64_t tgt_size = 0;
  bool joint = false;
};

/// Teacher-forced decoder output split before the vocabulary projection,
/// when that projection is linear (logits = hidden · weightᵀ). The trainer's
/// loss then runs over token chunks and never holds [B, T, V] logits: at
/// IWSLT-small with bf16 those, their fp32 copy, the log-probabilities and
/// the gradient peak near 0.5 GB.
struct DecoderFeatures {
  torch::Tensor hidden;  // [B, T, d]; the logits [B, T, V] when weight is undefined
  torch::Tensor weight;  // [V, d], or undefined: no linear projection to split off
  // [V] bool: the columns the model can output at all, or undefined (every
  // one). A model that rules ids out with -1e9 logits (causal_lm: clinic's
  // special ids 0-3) says so here, so that label smoothing spreads its mass
  // over the columns it can output, not onto log p = -1e9.
  torch::Tensor allowed;
};

/// An encoder-decoder that maps (src, tgt_in) to next-token logits.
class Seq2SeqModel : public torch::nn::Module {
 public:
  /// [B, S] -> encoder states.
  virtual EncoderOut encode(const torch::Tensor& src) = 0;
  /// Teacher-forced: tgt_in [B, T] -> logits [B, T, V]. With `cache`,
  /// tgt_in is [R, 1], the newest token of each hypothesis.
  virtual torch::Tensor decode(const torch::Tensor& tgt_in,
                               const EncoderOut& enc,
                               DecoderCache* cache = nullptr) = 0;
  torch::Tensor forward(const torch::Tensor& src, const torch::Tensor& tgt_in) {
    return decode(tgt_in, encode(src));
  }
  /// Whether decode() honours DecoderCache::capacity (a static cache).
  virtual bool static_cache() const { return false; }
  /// Teacher-forced decode() split before a linear output layer. The default
  /// splits nothing: hidden holds decode()'s logits.
  virtual DecoderFeatures decode_features(const torch::Tensor& tgt_in,
                                          const EncoderOut& enc) {
    return {decode(tgt_in, enc), torch::Tensor(), torch::Tensor()};
  }
  DecoderFeatures forward_features(const torch::Tensor& src, const torch::Tensor& tgt_in) {
    return decode_features(tgt_in, encode(src));
  }
  /// Data-dependent initialisation run once before update 1 of a fresh run
  /// (Admin's profiling). Returns a human summary; empty when nothing ran.
  virtual std::string initialize_from_batch(const Batch&) { return ""; }
  /// nullptr detaches. The observer must outlive its use.
  virtual void set_observer(SublayerObserver* observer) = 0;
  /// Whether decode() reads a source through encode() (an encoder-decoder).
  /// The instruments' source-swap probe (probe_nll_rotated_source) is
  /// measured only then: a causal LM has no source, and a tagger's source is
  /// its input, not a condition.
  virtual bool conditions_on_source() const { return true; }
  /// Parameters that must not be weight-decayed when that option is on.
  virtual bool is_no_decay(const std::string& param_name) const {
    return param_name.find("bias") != std::string::npos;
  }
  /// Builds a TorchScript module (encode / decode_step / translate) holding
  /// this model's trained weights.
  virtual torch::jit::Module to_torchscript() const = 0;
};

using ModelBuilder = std::function<std::shared_ptr<Seq2SeqModel>(
    const ModelConfig&, const VocabInfo&)>;
Registry<ModelBuilder>& model_registry();

/// Resolve the recipe's model through the registry. Refuses (DataError)
/// before allocating when the weights alone would not fit in memory.
std::shared_ptr<Seq2SeqModel> build_model(const ModelConfig& cfg,
                                          const VocabInfo& vocab);

/// Parameter count of an encoder-decoder Transformer with these model.*
/// sizes (embeddings, attention and FFN weights; biases and norms are
/// negligible at the sizes where memory matters). Every built-in arch reads
/// these keys, so it bounds the memory a recipe asks for before any tensor
/// exists.
double estimate_parameters(const ModelConfig& cfg, const VocabInfo& vocab);
/// The "model.d_model = ..., ffn_dim ..." hint that memory errors end with.
std::string model_size_hint(const ModelConfig& cfg);

}  // namespace clinic
