#include "framework/model.h"

namespace clinic {

Batch Batch::to(const torch::Device& d) const {
  Batch b = *this;
  b.src = src.to(d, /*non_blocking=*/true);
  b.tgt_in = tgt_in.to(d, true);
  b.tgt_out = tgt_out.to(d, true);
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

Registry<ModelBuilder>& model_registry() {
  static Registry<ModelBuilder> r("model");
  return r;
}

std::shared_ptr<Seq2SeqModel> build_model(const ModelConfig& cfg,
                                          const VocabInfo& vocab) {
  return model_registry().get(cfg.arch)(cfg, vocab);
}

}  // namespace clinic
