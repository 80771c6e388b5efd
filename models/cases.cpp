#include "models/cases.h"

#include <fmt/format.h>

#include <cmath>

#include "framework/errors.h"

namespace clinic {

torch::Tensor CausalEncoderLayerImpl::forward(const torch::Tensor& x,
                                              const torch::Tensor& pad_mask) {
  const int64_t T = x.size(1);
  auto future = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                    .triu(1);
  torch::Tensor h = attn_sublayer->forward(
      x, [&](const torch::Tensor& in) { return self_attn(in, in, pad_mask, future); });
  return ffn_sublayer->forward(h, [&](const torch::Tensor& in) { return ffn(in); });
}

EncoderOnlyModel::EncoderOnlyModel(const ModelConfig& cfg, bool causal) : config_(cfg) {
  variant = residual_registry().get(cfg.residual)(cfg);
  layers = register_module("layers", torch::nn::ModuleList());
  SublayerSite site;
  site.encoder_layers = cfg.encoder_layers;
  site.decoder_layers = 0;
  site.d_model = cfg.d_model;
  site.norm_eps = cfg.layer_norm_eps;
  for (int64_t l = 0; l < cfg.encoder_layers; ++l) {
    site.layer = l;
    if (causal)
      layers->push_back(std::make_shared<CausalEncoderLayerImpl>(cfg, *variant, site));
    else
      layers->push_back(EncoderLayer(cfg, *variant, site));
  }
}

torch::Tensor EncoderOnlyModel::run_layers(torch::Tensor x, const torch::Tensor& pad_mask) {
  for (const auto& m : *layers) x = m->as<EncoderLayerImpl>()->forward(x, pad_mask);
  return x;
}

void EncoderOnlyModel::set_observer(SublayerObserver* observer) {
  for (const auto& m : *layers) {
    auto* l = m->as<EncoderLayerImpl>();
    l->attn_sublayer->observer = observer;
    l->ffn_sublayer->observer = observer;
    l->self_attn->observer = observer;
    l->self_attn->stack = "encoder";
    l->self_attn->layer = l->attn_sublayer->site.layer;
    l->self_attn->index = l->attn_sublayer->site.index;
  }
}

std::string EncoderOnlyModel::initialize_from_batch(const Batch& batch) {
  if (!variant->needs_profiling()) return "";
  auto omegas = admin_profile(*this, batch, /*profile_encoder=*/true, /*profile_decoder=*/false);
  return admin_omega_summary(omegas, omegas.size());
}

torch::jit::Module EncoderOnlyModel::to_torchscript() const {
  throw ConfigError(fmt::format("model.arch = {}: TorchScript export covers the translation "
                                "Transformer only",
                                config_.arch));
}

EncoderTaggerImpl::EncoderTaggerImpl(const ModelConfig& cfg, const VocabInfo& v)
    : EncoderOnlyModel(cfg, /*causal=*/false) {
  const int64_t d = cfg.d_model;
  embed = register_module("embed", torch::nn::Embedding(v.src_size, d));
  head = register_module("head", torch::nn::Linear(d, v.tgt_size));
  torch::NoGradGuard g;
  embed->weight.uniform_(-0.1, 0.1);
  head->weight.uniform_(-0.1, 0.1);
  const double center = std::log(1.0 / static_cast<double>(v.tgt_size));
  head->bias.uniform_(center - 0.1, center + 0.1);
  // nn.TransformerEncoderLayer: Linear's default init for the FFN and the
  // attention output projection (whose bias nn.MultiheadAttention zeroes).
  for (const auto& m : *layers) {
    auto* l = m->as<EncoderLayerImpl>();
    l->ffn->fc1->reset_parameters();
    l->ffn->fc2->reset_parameters();
    l->self_attn->out_proj->reset_parameters();
    l->self_attn->out_proj->bias.zero_();
  }
  // The tutorial's PositionalEncoding: pe[p, 2i] = sin(p / 10000^(2i/d)),
  // pe[p, 2i+1] = cos(...), positions from 0, padding not special.
  auto pos = torch::arange(cfg.max_source_positions, torch::kFloat).unsqueeze(1);
  auto div = torch::exp(torch::arange(0, d, 2, torch::kFloat) * (-std::log(10000.0) / d));
  auto pe = torch::zeros({cfg.max_source_positions, d});
  pe.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, d, 2)}, torch::sin(pos * div));
  pe.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, d, 2)},
                torch::cos(pos * div).narrow(1, 0, d / 2));
  positions = register_buffer("positions", pe);
}

torch::Tensor EncoderTaggerImpl::position_term(const torch::Tensor& src) const {
  const int64_t S = src.size(1);
  TORCH_CHECK(S <= positions.size(0), "source of ", S, " tokens exceeds model.max_source_positions");
  return positions.narrow(0, 0, S).unsqueeze(0);  // [1, S, d]
}

EncoderOut EncoderTaggerImpl::encode(const torch::Tensor& src) {
  EncoderOut out;
  out.pad_mask = src.eq(kPad);
  auto x = embed(src) * std::sqrt(static_cast<double>(config_.d_model)) + position_term(src);
  x = apply_dropout(x, config_.dropout, is_training());
  out.out = run_layers(x, out.pad_mask);
  return out;
}

torch::Tensor EncoderTaggerRowPeImpl::position_term(const torch::Tensor& src) const {
  const int64_t B = src.size(0);
  TORCH_CHECK(B <= positions.size(0), "batch of ", B, " rows exceeds model.max_source_positions");
  return positions.narrow(0, 0, B).unsqueeze(1);  // pe[:B] as [B, 1, d]: row b's vector everywhere
}

torch::Tensor EncoderTaggerImpl::decode(const torch::Tensor&, const EncoderOut& enc,
                                        DecoderCache*) {
  return head(enc.out);
}

CausalLmImpl::CausalLmImpl(const ModelConfig& cfg, const VocabInfo& v)
    : EncoderOnlyModel(cfg, /*causal=*/true) {
  const int64_t d = cfg.d_model, real = v.tgt_size - offset;
  TORCH_CHECK(real > 0, "causal_lm needs data.source: fixed_batch (tokens at ids 4..)");
  tokens = register_module("tokens", torch::nn::Embedding(real, d));
  positions = register_module("positions", torch::nn::Embedding(cfg.max_source_positions, d));
  embed_norm = register_module(
      "embed_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(cfg.layer_norm_eps)));
  head = register_module("head", torch::nn::Linear(d, real));
  // BERT's init (initializer_range 0.02): every weight matrix and embedding
  // N(0, 0.02), biases 0, LayerNorm gains 1.
  torch::NoGradGuard g;
  for (auto& p : named_parameters(true)) {
    const auto& name = p.key();
    bool norm = name.find("norm") != std::string::npos;
    if (norm) continue;  // LayerNorm: weight 1, bias 0 already
    if (p.value().dim() >= 2) p.value().normal_(0, 0.02);
    else p.value().zero_();
  }
}

EncoderOut CausalLmImpl::encode(const torch::Tensor& src) {
  EncoderOut out;
  out.pad_mask = src.eq(kPad);
  const int64_t T = src.size(1);
  TORCH_CHECK(T <= positions->weight.size(0), "input of ", T,
              " tokens exceeds model.max_source_positions");
  auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(src.device()));
  auto x = tokens((src - offset).clamp_min(0)) + positions(pos).unsqueeze(0);
  x = apply_dropout(embed_norm(x), config_.dropout, is_training());
  out.out = run_layers(x, out.pad_mask);
  return out;
}

torch::Tensor CausalLmImpl::decode(const torch::Tensor&, const EncoderOut& enc, DecoderCache*) {
  auto real = head(enc.out);  // [B, T, V_real]
  auto specials = torch::full({real.size(0), real.size(1), offset}, -1e9, real.options());
  return torch::cat({specials, real}, -1);
}

DecoderFeatures CausalLmImpl::decode_features(const torch::Tensor& tgt_in,
                                              const EncoderOut& enc) {
  DecoderFeatures f{decode(tgt_in, enc), torch::Tensor(), torch::Tensor()};
  f.allowed = torch::arange(f.hidden.size(-1), torch::TensorOptions().device(f.hidden.device()))
                  .ge(offset);
  return f;
}

void register_case_models() {
  model_registry().add("encoder_tagger", [](const ModelConfig& c, const VocabInfo& v) {
    return std::make_shared<EncoderTaggerImpl>(c, v);
  });
  model_registry().add("encoder_tagger_row_pe", [](const ModelConfig& c, const VocabInfo& v) {
    return std::make_shared<EncoderTaggerRowPeImpl>(c, v);
  });
  model_registry().add("causal_lm", [](const ModelConfig& c, const VocabInfo& v) {
    return std::make_shared<CausalLmImpl>(c, v);
  });
}

}  // namespace clinic
