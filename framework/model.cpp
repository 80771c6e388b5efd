#include "framework/model.h"

#include <fmt/format.h>

#include "framework/logging.h"

namespace clinic {

Batch Batch::to(const torch::Device& d) const {
  Batch b = *this;
  // A non_blocking copy from pageable memory is a synchronous one: to a GPU
  // the rows go through page-locked memory, so the copy queues behind the
  // running update instead of waiting for it.
  auto move = [&](const torch::Tensor& t) {
    if (d.is_cuda() && t.device().is_cpu() && !t.is_pinned()) return t.pin_memory().to(d, true);
    return t.to(d, /*non_blocking=*/true);
  };
  b.src = move(src);
  b.tgt_in = move(tgt_in);
  b.tgt_out = move(tgt_out);
  return b;
}

EncoderOut EncoderOut::index_select(const torch::Tensor& rows) const {
  return EncoderOut{out.index_select(0, rows), pad_mask.index_select(0, rows)};
}

void DecoderCache::reorder(const torch::Tensor& rows) {
  for (auto* v : {&self_k, &self_v, &cross_k, &cross_v})
    for (auto& t : *v)
      if (t.defined()) t = t.index_select(0, rows);
}

void DecoderCache::reorder_in_place(const torch::Tensor& rows) {
  for (auto* v : {&self_k, &self_v})
    for (auto& t : *v)
      if (t.defined()) t.copy_(t.index_select(0, rows));
}

Registry<ModelBuilder>& model_registry() {
  static Registry<ModelBuilder> r("model");
  return r;
}

double estimate_parameters(const ModelConfig& c, const VocabInfo& v) {
  const double d = static_cast<double>(c.d_model), f = static_cast<double>(c.ffn_dim);
  double emb = v.src_size * d;
  if (!c.share_all_embeddings) emb += v.tgt_size * d;
  if (!c.share_all_embeddings && !c.share_decoder_input_output_embed) emb += v.tgt_size * d;
  double enc_layer = 4 * d * d + 2 * d * f;   // q, k, v, out projections + FFN
  double dec_layer = 8 * d * d + 2 * d * f;   // self and cross attention + FFN
  return emb + c.encoder_layers * enc_layer + c.decoder_layers * dec_layer;
}

std::string model_size_hint(const ModelConfig& c) {
  return fmt::format("lower model.d_model ({}), model.ffn_dim ({}) or the layer counts ({}+{})",
                     c.d_model, c.ffn_dim, c.encoder_layers, c.decoder_layers);
}

std::shared_ptr<Seq2SeqModel> build_model(const ModelConfig& cfg,
                                          const VocabInfo& vocab) {
  double params = estimate_parameters(cfg, vocab);
  check_memory_fits(4.0 * params,
                    fmt::format("the model ({:.3g} parameters in fp32)", params),
                    model_size_hint(cfg));
  return model_registry().get(cfg.arch)(cfg, vocab);
}

}  // namespace clinic
