#include "models/transformer.h"

#include "framework/recompute.h"

#include <fmt/format.h>

#include <cmath>
#include <typeinfo>

namespace clinic {

SublayerImpl::SublayerImpl(const SublayerSite& s, const ResidualVariant& v,
                           double p, const char* k)
    : site(s), position(v.norm_position()), dropout(p), kind(k) {
  if (position != NormPosition::kNone)
    norm = register_module(
        "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d_model}).eps(s.norm_eps)));
  residual = register_module("residual", v.make(s));
}

namespace {
MultiheadAttention make_attention(const ModelConfig& c, bool self) {
  return MultiheadAttention(MultiheadAttentionOptions(c.d_model, c.heads)
                                .dropout(c.attention_dropout)
                                .self_attention(self));
}
FeedForward make_ffn(const ModelConfig& c) {
  return FeedForward(FeedForwardOptions(c.d_model, c.ffn_dim)
                         .gelu(c.activation == "gelu")
                         .activation_dropout(c.activation_dropout));
}
SublayerSite at_index(SublayerSite s, int64_t index) {
  s.index = index;
  return s;
}
}  // namespace

EncoderLayerImpl::EncoderLayerImpl(const ModelConfig& c,
                                   const ResidualVariant& v,
                                   const SublayerSite& site) {
  self_attn = register_module("self_attn", make_attention(c, true));
  ffn = register_module("ffn", make_ffn(c));
  attn_sublayer = register_module(
      "attn_sublayer", Sublayer(at_index(site, 2 * site.layer), v, c.dropout,
                                "self_attn"));
  ffn_sublayer = register_module(
      "ffn_sublayer",
      Sublayer(at_index(site, 2 * site.layer + 1), v, c.dropout, "ffn"));
  double gain = v.branch_init_gain(site);
  if (gain != 1.0) {
    self_attn->reset_parameters(gain);
    ffn->reset_parameters(gain);
  }
}

torch::Tensor EncoderLayerImpl::forward(const torch::Tensor& x,
                                        const torch::Tensor& pad_mask) {
  torch::Tensor h = attn_sublayer->forward(x, [&](const torch::Tensor& in) {
    return self_attn(in, in, pad_mask, torch::Tensor());
  });
  return ffn_sublayer->forward(h, [&](const torch::Tensor& in) { return ffn(in); });
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c,
                                   const ResidualVariant& v,
                                   const SublayerSite& site) {
  self_attn = register_module("self_attn", make_attention(c, true));
  cross_attn = register_module("cross_attn", make_attention(c, false));
  ffn = register_module("ffn", make_ffn(c));
  int64_t base = 3 * site.layer;
  self_sublayer = register_module(
      "self_sublayer", Sublayer(at_index(site, base), v, c.dropout, "self_attn"));
  cross_sublayer = register_module(
      "cross_sublayer",
      Sublayer(at_index(site, base + 1), v, c.dropout, "cross_attn"));
  ffn_sublayer = register_module(
      "ffn_sublayer", Sublayer(at_index(site, base + 2), v, c.dropout, "ffn"));
  double gain = v.branch_init_gain(site);
  if (gain != 1.0) {
    self_attn->reset_parameters(gain);
    cross_attn->reset_parameters(gain);
    ffn->reset_parameters(gain);
  }
}

torch::Tensor DecoderLayerImpl::forward(
    const torch::Tensor& x, const torch::Tensor& enc,
    const torch::Tensor& enc_pad, const torch::Tensor& future,
    torch::Tensor* self_k, torch::Tensor* self_v, torch::Tensor* cross_k,
    torch::Tensor* cross_v, const torch::Tensor& write_at) {
  torch::Tensor h = self_sublayer->forward(x, [&](const torch::Tensor& in) {
    // A static cache's slot mask is not the causal square: no is_causal then.
    return self_attn(in, in, torch::Tensor(), future, self_k, self_v,
                     /*future_is_causal=*/!write_at.defined(), write_at);
  });
  h = cross_sublayer->forward(h, [&](const torch::Tensor& in) {
    return cross_attn(in, enc, enc_pad, torch::Tensor(), cross_k, cross_v);
  });
  return ffn_sublayer->forward(h, [&](const torch::Tensor& in) { return ffn(in); });
}

TransformerImpl::TransformerImpl(const ModelConfig& cfg, const VocabInfo& v)
    : config(cfg), vocab(v) {
  TORCH_CHECK(v.src_size > 0 && v.tgt_size > 0, "empty vocabulary");
  variant = residual_registry().get(cfg.residual)(cfg);
  auto stack_variant = [&](const std::string& name) {
    return name.empty() || name == cfg.residual ? variant : residual_registry().get(name)(cfg);
  };
  encoder_variant = stack_variant(cfg.encoder_residual);
  decoder_variant = stack_variant(cfg.decoder_residual);
  embed_scale = std::sqrt(static_cast<double>(cfg.d_model));
  // fairseq 0.8 Embedding(): N(0, d^-1/2), padding row zero.
  auto make_embed = [&](int64_t n) {
    torch::nn::Embedding e(torch::nn::EmbeddingOptions(n, cfg.d_model));
    torch::NoGradGuard g;
    e->weight.normal_(0, std::pow(cfg.d_model, -0.5));
    e->weight[kPad].zero_();
    return e;
  };
  if (cfg.share_all_embeddings) {
    TORCH_CHECK(v.joint && v.src_size == v.tgt_size,
                "share_all_embeddings needs one joint vocabulary");
    encoder_embed = register_module("encoder_embed", make_embed(v.src_size));
    decoder_embed = encoder_embed;  // not registered twice: one parameter
  } else {
    encoder_embed = register_module("encoder_embed", make_embed(v.src_size));
    decoder_embed = register_module("decoder_embed", make_embed(v.tgt_size));
  }
  if (cfg.share_all_embeddings || cfg.share_decoder_input_output_embed) {
    output_weight = decoder_embed->weight;
  } else {
    output_weight = register_parameter(
        "output_weight", torch::empty({v.tgt_size, cfg.d_model}));
    torch::NoGradGuard g;
    output_weight.normal_(0, std::pow(cfg.d_model, -0.5));
  }
  positions = register_module(
      "positions",
      SinusoidalPositions(std::max(cfg.max_source_positions,
                                   cfg.max_target_positions),
                          cfg.d_model));
  encoder_layers = register_module("encoder_layers", torch::nn::ModuleList());
  decoder_layers = register_module("decoder_layers", torch::nn::ModuleList());
  SublayerSite site;
  site.encoder_layers = cfg.encoder_layers;
  site.decoder_layers = cfg.decoder_layers;
  site.d_model = cfg.d_model;
  site.norm_eps = cfg.layer_norm_eps;
  for (int64_t l = 0; l < cfg.encoder_layers; ++l) {
    site.decoder = false;
    site.layer = l;
    encoder_layers->push_back(EncoderLayer(cfg, *encoder_variant, site));
  }
  for (int64_t l = 0; l < cfg.decoder_layers; ++l) {
    site.decoder = true;
    site.layer = l;
    decoder_layers->push_back(DecoderLayer(cfg, *decoder_variant, site));
  }
  auto o = torch::nn::LayerNormOptions({cfg.d_model}).eps(cfg.layer_norm_eps);
  if (encoder_variant->final_norm())
    encoder_norm = register_module("encoder_norm", torch::nn::LayerNorm(o));
  if (decoder_variant->final_norm())
    decoder_norm = register_module("decoder_norm", torch::nn::LayerNorm(o));
}

torch::Tensor TransformerImpl::embed_source(const torch::Tensor& src) {
  return encoder_embed(src) * embed_scale + positions(src);
}

torch::Tensor TransformerImpl::embed_target(const torch::Tensor& tgt,
                                            int64_t step) {
  return decoder_embed(tgt) * embed_scale + positions(tgt, step);
}

torch::Tensor TransformerImpl::project_output(const torch::Tensor& h) {
  return torch::nn::functional::linear(h, output_weight);
}

EncoderOut TransformerImpl::encode(const torch::Tensor& src) {
  TORCH_CHECK(src.dim() == 2, "encode expects src [B, S], got ", src.sizes());
  EncoderOut out;
  out.pad_mask = src.eq(kPad);
  auto x = apply_dropout(embed_source(src), config.dropout, is_training());
  const bool recompute = config.checkpoint_activations && is_training();
  for (const auto& layer : *encoder_layers) {
    auto* l = layer->as<EncoderLayerImpl>();
    const auto& pad = out.pad_mask;
    if (recompute)
      x = recompute_in_backward(
          [l, pad](const std::vector<torch::Tensor>& in) { return l->forward(in[0], pad); },
          {x});
    else
      x = l->forward(x, pad);
  }
  if (encoder_norm) x = layer_norm_fp32(encoder_norm, x);
  out.out = x;
  return out;
}

bool TransformerImpl::linear_output() const {
  return typeid(*this) == typeid(TransformerImpl);
}

bool TransformerImpl::static_cache() const {
  return typeid(*this) == typeid(TransformerImpl);
}

DecoderFeatures TransformerImpl::decode_features(const torch::Tensor& tgt_in,
                                                 const EncoderOut& enc) {
  if (!linear_output()) return Seq2SeqModel::decode_features(tgt_in, enc);
  return {decode_hidden(tgt_in, enc, nullptr), output_weight, torch::Tensor()};
}

torch::Tensor TransformerImpl::decode(const torch::Tensor& tgt_in,
                                      const EncoderOut& enc,
                                      DecoderCache* cache) {
  return project_output(decode_hidden(tgt_in, enc, cache));
}

torch::Tensor TransformerImpl::decode_hidden(const torch::Tensor& tgt_in,
                                             const EncoderOut& enc,
                                             DecoderCache* cache) {
  TORCH_CHECK(tgt_in.dim() == 2, "decode expects tgt [B, T], got ",
              tgt_in.sizes());
  const int64_t T = tgt_in.size(1);
  torch::Tensor future, write_at;
  if (cache) {
    TORCH_CHECK(T == 1, "incremental decoding takes one token per step");
    if (cache->self_k.empty()) {
      DecoderCache fresh = new_cache();
      fresh.capacity = cache->capacity;
      fresh.position = cache->position;
      *cache = std::move(fresh);
    }
    if (cache->capacity > 0) {  // static: slot `position`, the later ones masked
      TORCH_CHECK(cache->position.defined(), "a static cache needs its position tensor");
      write_at = cache->position.view({1});
      future = torch::arange(cache->capacity, cache->position.options()).gt(cache->position)
                   .view({1, -1});
    }
  } else if (T > 1) {
    future = torch::ones({T, T}, torch::dtype(torch::kBool).device(tgt_in.device()))
                 .triu(1);
  }
  torch::Tensor embedded =
      write_at.defined()
          ? decoder_embed(tgt_in) * embed_scale + positions->at(tgt_in, write_at)
          : embed_target(tgt_in, cache ? cache->steps : -1);
  auto x = apply_dropout(embedded, config.dropout, is_training());
  for (size_t l = 0; l < decoder_layers->size(); ++l) {
    auto* layer = decoder_layers[l]->as<DecoderLayerImpl>();
    if (cache) {
      x = layer->forward(x, enc.out, enc.pad_mask, future, &cache->self_k[l],
                         &cache->self_v[l], &cache->cross_k[l],
                         &cache->cross_v[l], write_at);
    } else if (config.checkpoint_activations && is_training()) {
      const auto& pad = enc.pad_mask;
      x = recompute_in_backward(
          [layer, pad, future](const std::vector<torch::Tensor>& in) {
            return layer->forward(in[0], in[1], pad, future);
          },
          {x, enc.out});
    } else {
      x = layer->forward(x, enc.out, enc.pad_mask, future);
    }
  }
  if (decoder_norm) x = layer_norm_fp32(decoder_norm, x);
  if (cache) cache->steps += 1;
  if (write_at.defined()) cache->position.add_(1);  // in place: a replay advances it
  return x;
}

DecoderCache TransformerImpl::new_cache() const {
  DecoderCache c;
  size_t n = decoder_layers->size();
  c.self_k.resize(n);
  c.self_v.resize(n);
  c.cross_k.resize(n);
  c.cross_v.resize(n);
  return c;
}

std::vector<Sublayer> TransformerImpl::sublayers() const {
  std::vector<Sublayer> out;
  for (const auto& m : *encoder_layers) {
    auto* l = m->as<EncoderLayerImpl>();
    out.push_back(l->attn_sublayer);
    out.push_back(l->ffn_sublayer);
  }
  for (const auto& m : *decoder_layers) {
    auto* l = m->as<DecoderLayerImpl>();
    out.push_back(l->self_sublayer);
    out.push_back(l->cross_sublayer);
    out.push_back(l->ffn_sublayer);
  }
  return out;
}

void TransformerImpl::set_observer(SublayerObserver* observer) {
  for (auto& s : sublayers()) s->observer = observer;
  auto attach = [&](MultiheadAttention& a, const Sublayer& s) {
    a->observer = observer;
    a->stack = s->site.decoder ? "decoder" : "encoder";
    a->layer = s->site.layer;
    a->index = s->site.index;
  };
  for (const auto& m : *encoder_layers) {
    auto l = m->as<EncoderLayerImpl>();
    attach(l->self_attn, l->attn_sublayer);
  }
  for (const auto& m : *decoder_layers) {
    auto l = m->as<DecoderLayerImpl>();
    attach(l->self_attn, l->self_sublayer);
    attach(l->cross_attn, l->cross_sublayer);
  }
}

bool TransformerImpl::is_no_decay(const std::string& name) const {
  auto ends_with = [&](const char* suffix) {
    std::string s(suffix);
    return name.size() >= s.size() &&
           name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with("bias") || name.find("norm.") != std::string::npos ||
         ends_with("omega") || ends_with("alpha");
}

std::string TransformerImpl::initialize_from_batch(const Batch& batch) {
  if (!encoder_variant->needs_profiling() && !decoder_variant->needs_profiling()) return "";
  auto omegas = admin_initialize(*this, batch);
  // admin_initialize() profiles only the Admin stack(s); the encoder's come first.
  const bool encoder = !encoder_variant || encoder_variant->needs_profiling();
  return admin_omega_summary(omegas, encoder ? 2 * config.encoder_layers : 0);
}

std::string admin_omega_summary(const std::vector<double>& omegas, size_t n_encoder) {
  std::string s = "admin omega per sublayer:";
  for (size_t i = 0; i < omegas.size(); ++i)
    s += fmt::format("{}{}:{:.4f}", i == 0 ? (n_encoder > 0 ? " enc " : " dec ")
                                           : (i == n_encoder ? " | dec " : " "),
                     i < n_encoder ? i + 1 : i - n_encoder + 1, omegas[i]);
  return s;
}

std::vector<double> admin_initialize(TransformerImpl& model,
                                     const Batch& batch) {
  // With per-stack variants only the Admin stack(s) are profiled; a model
  // built in code without per-stack variants profiles both.
  if (model.encoder_variant && model.decoder_variant)
    return admin_profile(model, batch, model.encoder_variant->needs_profiling(),
                         model.decoder_variant->needs_profiling());
  return admin_profile(model, batch, true, true);
}

std::vector<double> admin_profile(Seq2SeqModel& model, const Batch& batch, bool profile_encoder,
                                  bool profile_decoder) {
  struct Profiler : SublayerObserver {
    double running[2] = {1.0, 1.0};  // encoder, decoder
    bool profile[2] = {true, true};  // stacks whose variant is profiled
    std::vector<double> omegas;
    void on_branch(SublayerView& v) override {
      const int stack = v.stack[0] == 'd' ? 1 : 0;
      if (!profile[stack]) return;
      TORCH_CHECK(v.omega.defined(),
                  "admin_initialize needs a residual variant with omega");
      double& r = running[stack];
      torch::NoGradGuard g;
      v.omega.fill_(r);
      omegas.push_back(r);
      auto x = v.x.to(torch::kFloat) * v.omega;
      double var_x = x.var(/*unbiased=*/false).item<double>();
      double var_f = v.fx.to(torch::kFloat).var(false).item<double>();
      r = std::sqrt(var_x + var_f);
    }
  } profiler;
  profiler.profile[0] = profile_encoder;
  profiler.profile[1] = profile_decoder;
  bool was_training = model.is_training();
  model.train(true);
  model.set_observer(&profiler);
  try {
    torch::NoGradGuard g;
    model.forward(batch.src, batch.tgt_in);
  } catch (...) {
    model.set_observer(nullptr);
    throw;
  }
  model.set_observer(nullptr);
  model.train(was_training);
  return profiler.omegas;
}

std::shared_ptr<TransformerImpl> fold_to_post_ln(const TransformerImpl& m) {
  for (const auto& r : {m.config.residual, m.config.encoder_residual, m.config.decoder_residual})
    TORCH_CHECK(r.empty() || r == "admin" || r == "admin_closed_form" || r == "deepnorm" ||
                    r == "post_ln",
                "fold_to_post_ln: residual '", r,
                "' has no Post-LN form (only admin, admin_closed_form, deepnorm)");
  ModelConfig cfg = m.config;
  cfg.residual = "post_ln";
  cfg.encoder_residual.clear();
  cfg.decoder_residual.clear();
  auto folded = std::make_shared<TransformerImpl>(cfg, m.vocab);
  torch::NoGradGuard g;
  auto src = m.named_parameters(true);
  auto src_buffers = m.named_buffers(true);
  for (auto& p : folded->named_parameters(true)) p.value().copy_(src[p.key()]);
  for (auto& b : folded->named_buffers(true))
    if (src_buffers.contains(b.key())) b.value().copy_(src_buffers[b.key()]);
  // Branch-closing projection of each sublayer, in sublayers() order.
  std::vector<torch::nn::Linear> last;
  for (const auto& l : *folded->encoder_layers) {
    auto* e = l->as<EncoderLayerImpl>();
    last.push_back(e->self_attn->out_proj);
    last.push_back(e->ffn->fc2);
  }
  for (const auto& l : *folded->decoder_layers) {
    auto* d = l->as<DecoderLayerImpl>();
    last.push_back(d->self_attn->out_proj);
    last.push_back(d->cross_attn->out_proj);
    last.push_back(d->ffn->fc2);
  }
  auto subs = m.sublayers();
  for (size_t i = 0; i < subs.size(); ++i) {
    torch::Tensor w = subs[i]->residual->omega;
    if (!w.defined()) continue;
    TORCH_CHECK(w.numel() == 1,
                "fold_to_post_ln: vector omega (model.omega_shape: vector) "
                "cannot be folded exactly into Post-LN: LayerNorm is invariant "
                "to one positive scalar, not to a per-dimension scale");
    double s = w.item<double>();
    TORCH_CHECK(s > 0, "fold_to_post_ln: omega must be positive, got ", s);
    last[i]->weight.div_(s);
    last[i]->bias.div_(s);
  }
  folded->train(m.is_training());
  return folded;
}

}  // namespace clinic
