// TorchScript export. C++ cannot script a torch::nn::Module, so the trained
// tensors are registered on a torch::jit::Module and its methods are
// TorchScript source generated for this model's depth and residual variant
// (define() has no Python resolver: aten builtins only, see
// libtorch-on-debian.md §3.3). Admin with scalar omega, admin_closed_form
// and DeepNorm are first folded into plain Post-LN weights; vector omega and
// ReZero's alpha are exported as parameters.
#include <fmt/format.h>

#include <sstream>

#include "models/transformer.h"

namespace clinic {
namespace {

std::string attr(const std::string& name) {
  std::string s = "p_" + name;
  for (auto& c : s)
    if (c == '.') c = '_';
  return s;
}

// Helpers shared by every exported model. Shapes: x [B, T, d].
constexpr const char* kHelpers = R"TS(
def _ln(self, x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    return torch.layer_norm(x, [self.d_model], w, b, eps, False)

def _positions(self, tokens: Tensor, table: Tensor) -> Tensor:
    nonpad = (tokens != self.pad).long()
    pos = torch.cumsum(nonpad, 1) * nonpad
    return torch.embedding(table, pos)

def _attn(self, q_in: Tensor, kv_in: Tensor, w: Tensor, b: Tensor, wo: Tensor, bo: Tensor, mask: Tensor) -> Tensor:
    B = q_in.size(0)
    T = q_in.size(1)
    S = kv_in.size(1)
    d = self.d_model
    H = self.heads
    dh = d // H
    q = torch.linear(q_in, w[0:d], b[0:d])
    k = torch.linear(kv_in, w[d:2 * d], b[d:2 * d])
    v = torch.linear(kv_in, w[2 * d:3 * d], b[2 * d:3 * d])
    q = q.view(B, T, H, dh).transpose(1, 2) * self.scaling
    k = k.view(B, S, H, dh).transpose(1, 2)
    v = v.view(B, S, H, dh).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-2, -1)) + mask
    attn = torch.softmax(scores, -1)
    ctx = torch.matmul(attn, v).transpose(1, 2).reshape(B, T, d)
    return torch.linear(ctx, wo, bo)

def _ffn(self, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    h = torch.linear(x, w1, b1)
    if self.gelu:
        h = torch.gelu(h)
    else:
        h = torch.relu(h)
    return torch.linear(h, w2, b2)

def _pad_mask(self, pad: Tensor) -> Tensor:
    m = torch.zeros([pad.size(0), 1, 1, pad.size(1)], dtype=6)
    return m.masked_fill(pad.unsqueeze(1).unsqueeze(2), float("-inf"))

def _future_mask(self, T: int) -> Tensor:
    return torch.triu(torch.full([T, T], float("-inf")), 1)

def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
    enc, pad = self.encode(src)
    return self.decode(tgt, enc, pad)

def decode_step(self, prefix: Tensor, enc: Tensor, enc_pad: Tensor) -> Tensor:
    logits = self.decode(prefix, enc, enc_pad)
    return logits[:, -1, :]

def _beam_one(self, enc: Tensor, pad: Tensor, K: int, max_len: int) -> List[int]:
    fin_tokens: List[List[int]] = []
    fin_scores: List[float] = []
    seqs: List[List[int]] = [[self.bos]]
    scores = torch.zeros([1], dtype=6)
    for step in range(max_len + 1):
        n = len(seqs)
        prefix = torch.tensor(seqs)
        logits = self.decode_step(prefix, enc.expand(n, -1, -1), pad.expand(n, -1))
        lprobs = torch.log_softmax(logits, -1)
        V = lprobs.size(1)
        lprobs[:, self.pad] = float("-inf")
        lprobs[:, self.bos] = float("-inf")
        if step < 1:
            lprobs[:, self.eos] = float("-inf")
        if step >= max_len:
            keep = lprobs[:, self.eos].clone()
            lprobs.fill_(float("-inf"))
            lprobs[:, self.eos] = keep
        cand = (scores.unsqueeze(1) + lprobs).view(-1)
        top = torch.topk(cand, min(2 * K, cand.size(0)))
        vals: List[float] = top[0].tolist()
        idxs: List[int] = top[1].tolist()
        new_seqs: List[List[int]] = []
        new_scores: List[float] = []
        for c in range(len(vals)):
            v = vals[c]
            if v == float("-inf"):
                break
            beam = idxs[c] // V
            tok = idxs[c] % V
            if tok == self.eos:
                if c < K and len(fin_tokens) < K:
                    fin_tokens.append(seqs[beam][1:])
                    fin_scores.append(v / float(len(seqs[beam])) ** self.lenpen)
                continue
            if len(new_seqs) < K:
                s = seqs[beam].copy()
                s.append(tok)
                new_seqs.append(s)
                new_scores.append(v)
        if len(fin_tokens) >= K or len(new_seqs) == 0 or step >= max_len:
            break
        seqs = new_seqs
        scores = torch.tensor(new_scores, dtype=6)
    best = 0
    for i in range(len(fin_scores)):
        if fin_scores[i] > fin_scores[best]:
            best = i
    if len(fin_tokens) == 0:
        return []
    return fin_tokens[best]

def translate(self, src_tokens: Tensor, beam: int, max_len: int) -> List[List[int]]:
    out: List[List[int]] = []
    for i in range(src_tokens.size(0)):
        n = int((src_tokens[i] != self.pad).sum().item())
        row = src_tokens[i:i + 1, 0:n]
        enc, pad = self.encode(row)
        out.append(self._beam_one(enc, pad, beam, max_len))
    return out
)TS";

}  // namespace

torch::jit::Module TransformerImpl::to_torchscript() const {
  const std::string& r = config.residual;
  auto src = std::const_pointer_cast<TransformerImpl>(
      std::static_pointer_cast<const TransformerImpl>(shared_from_this()));
  bool vector_omega = r == "admin" && config.omega_shape == "vector";
  std::vector<double> ln_eps(sublayers().size(), config.layer_norm_eps);
  size_t site = 0;  // index of the sublayer being generated
  if (!vector_omega && (r == "admin" || r == "admin_closed_form" || r == "deepnorm")) {
    bool scalar = true;
    for (const auto& s : sublayers())
      if (s->residual->omega.defined() && s->residual->omega.numel() > 1) scalar = false;
    if (scalar) {
      // LN_eps(w x + f) = LN_{eps/w^2}(x + f/w) exactly, so the folded
      // sublayer keeps the original outputs with LayerNorm eps / w^2.
      auto subs = sublayers();
      for (size_t i = 0; i < subs.size(); ++i)
        if (subs[i]->residual->omega.defined()) {
          double w = subs[i]->residual->omega.item<double>();
          ln_eps[i] = config.layer_norm_eps / (w * w);
        }
      src = fold_to_post_ln(*this);
    }
  }
  torch::jit::Module m("ClinicTransformer");
  torch::NoGradGuard g;
  for (const auto& p : src->named_parameters(true))
    m.register_parameter(attr(p.key()), p.value().detach().clone(), false);
  for (const auto& b : src->named_buffers(true))
    m.register_buffer(attr(b.key()), b.value().detach().clone());
  m.register_attribute("d_model", c10::IntType::get(), config.d_model);
  m.register_attribute("heads", c10::IntType::get(), config.heads);
  m.register_attribute("pad", c10::IntType::get(), kPad);
  m.register_attribute("bos", c10::IntType::get(), kBos);
  m.register_attribute("eos", c10::IntType::get(), kEos);
  m.register_attribute("gelu", c10::BoolType::get(), config.activation == "gelu");
  m.register_attribute("embed_scale", c10::FloatType::get(), src->embed_scale);
  m.register_attribute("scaling", c10::FloatType::get(),
                       1.0 / std::sqrt(static_cast<double>(config.d_model / config.heads)));
  m.register_attribute("lenpen", c10::FloatType::get(), 1.0);

  auto sublayer = [&](std::ostringstream& o, const std::string& prefix,
                      const Sublayer& s, const std::string& branch_fmt) {
    const NormPosition pos = s->position;  // per stack with mixed variants
    // branch_fmt names the branch input {0}.
    std::string ln_w = attr(prefix + ".norm.weight"), ln_b = attr(prefix + ".norm.bias");
    std::string eps = fmt::format("{:.17g}", ln_eps[site++]);
    std::string shortcut = "x";
    if (s->residual->omega.defined()) shortcut = "x * self." + attr(prefix + ".residual.omega");
    std::string scale =
        s->residual->alpha.defined() ? " * self." + attr(prefix + ".residual.alpha") : "";
    if (pos == NormPosition::kPre) {
      o << "    h = self._ln(x, self." << ln_w << ", self." << ln_b << ", " << eps << ")\n"
        << "    x = " << shortcut << " + " << fmt::format(branch_fmt, "h") << scale << "\n";
    } else if (pos == NormPosition::kPost) {
      o << "    x = self._ln(" << shortcut << " + " << fmt::format(branch_fmt, "x") << scale
        << ", self." << ln_w << ", self." << ln_b << ", " << eps << ")\n";
    } else {
      o << "    x = " << shortcut << " + " << fmt::format(branch_fmt, "x") << scale << "\n";
    }
  };
  auto attn_call = [&](const std::string& p, const std::string& kv, const std::string& mask) {
    return "self._attn({0}, " + kv + ", self." + attr(p + ".in_proj_weight") + ", self." +
           attr(p + ".in_proj_bias") + ", self." + attr(p + ".out_proj.weight") + ", self." +
           attr(p + ".out_proj.bias") + ", " + mask + ")";
  };
  auto ffn_call = [&](const std::string& p) {
    return "self._ffn({0}, self." + attr(p + ".fc1.weight") + ", self." + attr(p + ".fc1.bias") +
           ", self." + attr(p + ".fc2.weight") + ", self." + attr(p + ".fc2.bias") + ")";
  };
  std::string dec_embed = src->decoder_embed.get() == src->encoder_embed.get()
                              ? "encoder_embed.weight"
                              : "decoder_embed.weight";
  std::string out_w = src->output_weight.is_same(src->decoder_embed->weight)
                          ? dec_embed
                          : std::string("output_weight");
  std::ostringstream enc;
  enc << "def encode(self, src: Tensor) -> Tuple[Tensor, Tensor]:\n"
      << "    pad = src == self.pad\n"
      << "    x = torch.embedding(self." << attr("encoder_embed.weight")
      << ", src) * self.embed_scale + self._positions(src, self." << attr("positions.table")
      << ")\n"
      << "    mask = self._pad_mask(pad)\n";
  for (size_t l = 0; l < encoder_layers->size(); ++l) {
    std::string p = fmt::format("encoder_layers.{}", l);
    auto* layer = src->encoder_layers[l]->as<EncoderLayerImpl>();
    sublayer(enc, p + ".attn_sublayer", layer->attn_sublayer, attn_call(p + ".self_attn", "{0}", "mask"));
    sublayer(enc, p + ".ffn_sublayer", layer->ffn_sublayer, ffn_call(p + ".ffn"));
  }
  if (src->encoder_norm)
    enc << "    x = self._ln(x, self." << attr("encoder_norm.weight") << ", self."
        << attr("encoder_norm.bias") << fmt::format(", {:.17g})\n", config.layer_norm_eps);
  enc << "    return x, pad\n";

  std::ostringstream dec;
  dec << "def decode(self, tgt: Tensor, enc: Tensor, enc_pad: Tensor) -> Tensor:\n"
      << "    x = torch.embedding(self." << attr(dec_embed)
      << ", tgt) * self.embed_scale + self._positions(tgt, self." << attr("positions.table")
      << ")\n"
      << "    future = self._future_mask(tgt.size(1))\n"
      << "    cross = self._pad_mask(enc_pad)\n";
  for (size_t l = 0; l < decoder_layers->size(); ++l) {
    std::string p = fmt::format("decoder_layers.{}", l);
    auto* layer = src->decoder_layers[l]->as<DecoderLayerImpl>();
    sublayer(dec, p + ".self_sublayer", layer->self_sublayer,
             attn_call(p + ".self_attn", "{0}", "future"));
    sublayer(dec, p + ".cross_sublayer", layer->cross_sublayer,
             attn_call(p + ".cross_attn", "enc", "cross"));
    sublayer(dec, p + ".ffn_sublayer", layer->ffn_sublayer, ffn_call(p + ".ffn"));
  }
  if (src->decoder_norm)
    dec << "    x = self._ln(x, self." << attr("decoder_norm.weight") << ", self."
        << attr("decoder_norm.bias") << fmt::format(", {:.17g})\n", config.layer_norm_eps);
  dec << "    return torch.linear(x, self." << attr(out_w) << ")\n";
  m.define(enc.str() + "\n" + dec.str() + kHelpers);
  m.eval();
  return m;
}

}  // namespace clinic
