#include "models/layers.h"

#include <torch/version.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>

namespace clinic {

namespace F = torch::nn::functional;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef CLINIC_HAVE_BLAS
// Fortran BLAS from the libblas.so.3 LibTorch itself links (Debian: OpenBLAS).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);
#endif

namespace {

constexpr int kKeepBits = 15;

// keep * scale, saving the bool mask (not a float copy) for backward.
struct MaskedScale : public torch::autograd::Function<MaskedScale> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& keep, double scale) {
    ctx->save_for_backward({keep});
    ctx->saved_data["scale"] = scale;
    return x.mul(keep).mul_(scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto keep = ctx->get_saved_variables()[0];
    double scale = ctx->saved_data["scale"].toDouble();
    return {g[0].mul(keep).mul_(scale), torch::Tensor(), torch::Tensor()};
  }
};

// relu(x) * keep * scale, saving only the output.
struct ReluMaskedScale : public torch::autograd::Function<ReluMaskedScale> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& keep, double scale) {
    auto y = x.clamp_min(0).mul_(keep).mul_(scale);
    ctx->save_for_backward({y});
    ctx->saved_data["scale"] = scale;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto y = ctx->get_saved_variables()[0];
    double scale = ctx->saved_data["scale"].toDouble();
    return {g[0].mul(y.gt(0)).mul_(scale), torch::Tensor(), torch::Tensor()};
  }
};

#ifdef CLINIC_HAVE_BLAS
// Matrix t[i] ([R, C], row-major indexing) as a BLAS operand: unit stride
// along C ('N', ld = row stride) or along R ('T', ld = column stride).
// False for layouts BLAS cannot read (no unit stride, overlapping rows).
bool blas_operand(const torch::Tensor& t, char* trans, int* ld) {
  const int64_t R = t.size(1), C = t.size(2);
  int64_t l;
  if (t.stride(2) == 1 && (R == 1 || t.stride(1) >= C)) {
    *trans = 'N';
    l = std::max<int64_t>({t.stride(1), C, 1});
  } else if (t.stride(1) == 1 && (C == 1 || t.stride(2) >= R)) {
    *trans = 'T';
    l = std::max<int64_t>({t.stride(2), R, 1});
  } else {
    return false;
  }
  *ld = static_cast<int>(l);
  return l < (int64_t{1} << 31);
}

// out[i] = a[i] b[i] with one single-threaded sgemm per i, the batch split
// across intra-op threads (OpenBLAS runs single-threaded inside an OpenMP
// region). Row-major C[M, P] = A[M, K] B[K, P] is column-major C^T = B^T A^T.
torch::Tensor blas_bmm(const torch::Tensor& a_in, const torch::Tensor& b_in) {
  auto operand = [](const torch::Tensor& t, char* trans, int* ld) {
    if (blas_operand(t, trans, ld)) return t;
    auto c = t.contiguous();  // always readable: unit stride along C
    blas_operand(c, trans, ld);
    return c;
  };
  char ta, tb;
  int lda, ldb;
  auto a = operand(a_in, &ta, &lda);
  auto b = operand(b_in, &tb, &ldb);
  const int64_t N = a.size(0), M = a.size(1), K = a.size(2), P = b.size(2);
  auto out = torch::empty({N, M, P}, a.options());
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = out.data_ptr<float>();
  const int64_t sa = a.stride(0), sb = b.stride(0);
  at::parallel_for(0, N, /*grain_size=*/4, [&](int64_t begin, int64_t end) {
    const int m = static_cast<int>(P), n = static_cast<int>(M), k = static_cast<int>(K);
    const int ldc = static_cast<int>(P);
    const float one = 1, zero = 0;
    for (int64_t i = begin; i < end; ++i)
      sgemm_(&tb, &ta, &m, &n, &k, &one, pb + i * sb, &ldb, pa + i * sa, &lda, &zero,
             pc + i * M * P, &ldc);
  });
  return out;
}

struct BlasBmm : public torch::autograd::Function<BlasBmm> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return blas_bmm(a, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto s = ctx->get_saved_variables();
    return {blas_bmm(g[0], s[1].transpose(1, 2)), blas_bmm(s[0].transpose(1, 2), g[0])};
  }
};
#endif

}  // namespace

torch::Tensor head_bmm(const torch::Tensor& a, const torch::Tensor& b) {
#ifdef CLINIC_HAVE_BLAS
  // Shapes BLAS's 32-bit ints hold, no empty dims (BLAS needs ld >= 1 rows).
  auto fits = [](const torch::Tensor& t) {
    return t.dim() == 3 && t.numel() > 0 && t.numel() < (int64_t{1} << 31);
  };
  if (a.is_cpu() && b.is_cpu() && a.scalar_type() == torch::kFloat &&
      b.scalar_type() == torch::kFloat && fits(a) && fits(b) && a.size(0) == b.size(0) &&
      a.size(2) == b.size(1))
    return BlasBmm::apply(a, b);
#endif
  return torch::bmm(a, b);
}

torch::Tensor dropout_keep_mask(const torch::Tensor& like, double p) {
  const int64_t n = like.numel();
  const uint64_t threshold = static_cast<uint64_t>(std::llround(p * (1 << kKeepBits)));
  uint64_t seed;
  {
    // One draw from the default generator per mask: torch::manual_seed and
    // the RNG state saved in checkpoints (and replayed by recompute) fix it.
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    seed = at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
  }
  auto keep = torch::empty(like.sizes(), torch::TensorOptions().dtype(torch::kBool));
  bool* out = keep.data_ptr<bool>();
  const int64_t words = (n + 3) / 4;
  // Word w = SplitMix64 (Steele et al. 2014) of seed + (w + 1) * golden:
  // counter-based, so threads fill disjoint ranges with the same result at any
  // thread count (random_() fills serially: ~40 ms per Multi30k update).
  at::parallel_for(0, words, /*grain_size=*/1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      uint64_t z = seed + static_cast<uint64_t>(w + 1) * 0x9e3779b97f4a7c15ULL;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      z ^= z >> 31;
      const int64_t base = 4 * w, lanes = std::min<int64_t>(4, n - base);
      for (int64_t k = 0; k < lanes; ++k)
        out[base + k] = ((z >> (16 * k)) & ((1u << kKeepBits) - 1)) >= threshold;
    }
  });
  return keep.to(like.device());
}

torch::Tensor apply_dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  if (!x.is_cpu()) return torch::dropout(x, p, true);
  TORCH_CHECK(p < 1, "dropout probability must be < 1, got ", p);
  return MaskedScale::apply(x, dropout_keep_mask(x, p), 1.0 / (1.0 - p));
}

torch::Tensor apply_relu_dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0 || !x.is_cpu()) return apply_dropout(torch::relu(x), p, training);
  TORCH_CHECK(p < 1, "dropout probability must be < 1, got ", p);
  return ReluMaskedScale::apply(x, dropout_keep_mask(x, p), 1.0 / (1.0 - p));
}

MultiheadAttentionImpl::MultiheadAttentionImpl(
    const MultiheadAttentionOptions& o)
    : options(o) {
  TORCH_CHECK(o.embed_dim() % o.heads() == 0, "heads (", o.heads(),
              ") must divide embed_dim (", o.embed_dim(), ")");
  int64_t d = o.embed_dim();
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * d, d}));
  in_proj_bias = register_parameter("in_proj_bias", torch::empty({3 * d}));
  out_proj = register_module("out_proj", torch::nn::Linear(d, d));
  reset_parameters();
}

void MultiheadAttentionImpl::reset_parameters(double value_gain) {
  torch::NoGradGuard g;
  int64_t d = options.embed_dim();
  if (value_gain == 1.0) {
    torch::nn::init::xavier_uniform_(in_proj_weight);
    torch::nn::init::xavier_uniform_(out_proj->weight);
  } else {
    auto q = in_proj_weight.narrow(0, 0, d), k = in_proj_weight.narrow(0, d, d),
         v = in_proj_weight.narrow(0, 2 * d, d);
    // xavier_normal on a [d, d] matrix: std = gain * sqrt(2 / (d + d)).
    double std1 = 1.0 / std::sqrt(static_cast<double>(d));
    q.normal_(0, std1);
    k.normal_(0, std1);
    v.normal_(0, value_gain * std1);
    torch::nn::init::xavier_normal_(out_proj->weight, value_gain);
  }
  in_proj_bias.zero_();
  out_proj->bias.zero_();
}

torch::Tensor MultiheadAttentionImpl::forward(const torch::Tensor& query,
                                              const torch::Tensor& memory,
                                              const torch::Tensor& key_pad_mask,
                                              const torch::Tensor& future_mask,
                                              torch::Tensor* cache_k,
                                              torch::Tensor* cache_v) {
  const int64_t B = query.size(0), T = query.size(1);
  const int64_t d = options.embed_dim(), H = options.heads(), dh = d / H;
  auto heads = [&](const torch::Tensor& t) {  // [B, L, d] -> [B, H, L, dh]
    return t.view({B, -1, H, dh}).transpose(1, 2);
  };
  torch::Tensor q, k, v;
  if (options.self_attention()) {
    auto qkv = F::linear(query, in_proj_weight, in_proj_bias).chunk(3, -1);
    q = heads(qkv[0]);
    k = heads(qkv[1]);
    v = heads(qkv[2]);
    if (cache_k) {
      if (cache_k->defined()) {
        k = torch::cat({*cache_k, k}, 2);
        v = torch::cat({*cache_v, v}, 2);
      }
      *cache_k = k;
      *cache_v = v;
    }
  } else {
    q = heads(F::linear(query, in_proj_weight.narrow(0, 0, d),
                        in_proj_bias.narrow(0, 0, d)));
    if (cache_k && cache_k->defined()) {
      k = *cache_k;
      v = *cache_v;
    } else {
      auto kv = F::linear(memory, in_proj_weight.narrow(0, d, 2 * d),
                          in_proj_bias.narrow(0, d, 2 * d))
                    .chunk(2, -1);
      k = heads(kv[0]);
      v = heads(kv[1]);
      if (cache_k) {
        *cache_k = k;
        *cache_v = v;
      }
    }
  }
  torch::Tensor ctx;  // [B, H, T, dh]
#if TORCH_VERSION_MAJOR >= 2
  {
    torch::Tensor keep;  // SDPA: true = may attend
    if (key_pad_mask.defined())
      keep = key_pad_mask.logical_not().view({B, 1, 1, -1});
    if (future_mask.defined()) {
      auto f = future_mask.logical_not();
      keep = keep.defined() ? keep.logical_and(f) : f;
    }
    double p = is_training() ? options.dropout() : 0.0;
    ctx = at::scaled_dot_product_attention(
        q, k, v, keep.defined() ? c10::optional<torch::Tensor>(keep)
                                : c10::nullopt,
        p, /*is_causal=*/false);
  }
#else
  {
    const double scaling = 1.0 / std::sqrt(static_cast<double>(dh));
    const int64_t S = k.size(2);
    auto flat = [&](const torch::Tensor& t) { return t.reshape({B * H, -1, dh}); };
    auto scores = head_bmm(flat(q * scaling), flat(k).transpose(1, 2)).view({B, H, T, S});
    // Softmax in fp32: under CPU autocast 1.13 keeps it in bf16.
    if (scores.scalar_type() != torch::kFloat) scores = scores.to(torch::kFloat);
    if (key_pad_mask.defined())
      scores.masked_fill_(key_pad_mask.view({B, 1, 1, -1}),
                          -std::numeric_limits<float>::infinity());
    if (future_mask.defined())
      scores.masked_fill_(future_mask, -std::numeric_limits<float>::infinity());
    auto attn = torch::softmax(scores, -1);
    attn = apply_dropout(attn, options.dropout(), is_training());
    ctx = head_bmm(attn.to(v.scalar_type()).view({B * H, T, S}), flat(v)).view({B, H, T, dh});
  }
#endif
  return out_proj(ctx.transpose(1, 2).reshape({B, T, d}));
}

FeedForwardImpl::FeedForwardImpl(const FeedForwardOptions& o) : options(o) {
  fc1 = register_module("fc1", torch::nn::Linear(o.d_model(), o.ffn_dim()));
  fc2 = register_module("fc2", torch::nn::Linear(o.ffn_dim(), o.d_model()));
  reset_parameters();
}

void FeedForwardImpl::reset_parameters(double gain) {
  torch::NoGradGuard g;
  for (auto* l : {&fc1, &fc2}) {
    if (gain == 1.0)
      torch::nn::init::xavier_uniform_((*l)->weight);
    else
      torch::nn::init::xavier_normal_((*l)->weight, gain);
    (*l)->bias.zero_();
  }
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto h = fc1(x);
  h = options.gelu() ? apply_dropout(torch::gelu(h), options.activation_dropout(), is_training())
                     : apply_relu_dropout(h, options.activation_dropout(), is_training());
  return fc2(h);
}

SinusoidalPositionsImpl::SinusoidalPositionsImpl(int64_t max_positions,
                                                 int64_t dim) {
  // fairseq get_embedding(): half = dim/2, freq_i = exp(-i ln(1e4)/(half-1)),
  // row p = [sin(p f) | cos(p f)]; fairseq numbers real tokens from
  // padding_idx + 1 = 2, which is row r + 1 of its table for our row r.
  int64_t half = dim / 2;
  double step = std::log(10000.0) / std::max<int64_t>(half - 1, 1);
  auto freq = torch::exp(torch::arange(half, torch::kDouble) * -step);
  auto pos = torch::arange(1, max_positions + 2, torch::kDouble);
  auto arg = pos.unsqueeze(1) * freq.unsqueeze(0);
  auto t = torch::cat({torch::sin(arg), torch::cos(arg)}, 1);
  if (dim % 2 == 1) t = torch::cat({t, torch::zeros({t.size(0), 1}, torch::kDouble)}, 1);
  t[0].zero_();
  table = register_buffer("table", t.to(torch::kFloat));
}

torch::Tensor SinusoidalPositionsImpl::forward(const torch::Tensor& tokens,
                                               int64_t step) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  torch::Tensor pos;
  if (step >= 0) {
    TORCH_CHECK(step + 1 < table.size(0), "position ", step + 1,
                " exceeds max positions ", table.size(0) - 1);
    return table[step + 1].view({1, 1, -1}).expand({B, T, -1});
  }
  auto nonpad = tokens.ne(0).to(torch::kLong);
  pos = torch::cumsum(nonpad, 1) * nonpad;
  TORCH_CHECK(T < table.size(0), "sequence of length ", T,
              " exceeds max positions ", table.size(0) - 1);
  return table.index_select(0, pos.view(-1)).view({B, T, -1});
}

torch::Tensor layer_norm_fp32(torch::nn::LayerNorm& ln,
                              const torch::Tensor& x) {
  return ln(x.scalar_type() == torch::kFloat ? x : x.to(torch::kFloat));
}

}  // namespace clinic
