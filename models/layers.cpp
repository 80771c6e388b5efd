#include "models/layers.h"

#include <torch/version.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
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

// An AVX2 copy of a kernel beside the baseline one, picked at load time (x86
// GCC/Clang); elsewhere just the baseline.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CLINIC_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLINIC_SIMD_CLONES
#endif

// Dropout keeps no mask: element i is kept iff bits(seed, i) >= threshold,
// bits = the top 15 bits of murmur3's fmix32 of a Weyl sequence (seed_lo +
// i * golden) xor seed_hi: counter-based, so forward and backward each
// regenerate the mask inside the one pass that applies it, and threads fill
// disjoint ranges with the same result at any thread count. 32-bit integer
// ops only, so the fp32 loop vectorises (built for AVX2 and baseline x86-64,
// picked at load time). Measured (bench multi30k/admin, --profile and perf):
// x * bool-mask took TensorIterator's mixed-dtype path (34 ms of mask copies
// per update); where(keep, x, 0) 126 ms; a float mask 4% of all samples
// writing it; a 64-bit SplitMix64 per 4 elements, unvectorised, 4.3%.
// seed: one draw from the default generator per call, so manual_seed,
// checkpoints' RNG state and recompute replay it.
inline uint32_t keep_bits(uint32_t i, uint32_t lo, uint32_t hi) {
  uint32_t z = lo + i * 0x9e3779b9u;
  z ^= z >> 16;
  z *= 0x85ebca6bu;
  z ^= z >> 13;
  z *= 0xc2b2ae35u;
  z ^= z >> 16;
  return (z ^ hi) >> (32 - kKeepBits);
}

CLINIC_SIMD_CLONES
void keep_scale_f32(const float* in, float* out, int64_t begin, int64_t end, uint32_t lo,
                    uint32_t hi, uint32_t threshold, float scale) {
  const uint32_t first = static_cast<uint32_t>(begin);
  // Branch-free (an AND with an all-ones/zero mask) so GCC vectorises it.
#pragma omp simd
  for (int64_t j = 0; j < end - begin; ++j) {
    const float v = in[begin + j] * scale;
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    u &= 0u - static_cast<uint32_t>(
                  keep_bits(first + static_cast<uint32_t>(j), lo, hi) >= threshold);
    std::memcpy(&out[begin + j], &u, sizeof u);
  }
}

// The same for bfloat16 storage (autocast's activations), computing in fp32:
// widen, scale, round to nearest even (quiet NaN kept NaN, as c10::BFloat16).
CLINIC_SIMD_CLONES
void keep_scale_bf16(const uint16_t* in, uint16_t* out, int64_t begin, int64_t end,
                     uint32_t lo, uint32_t hi, uint32_t threshold, float scale) {
  const uint32_t first = static_cast<uint32_t>(begin);
#pragma omp simd
  for (int64_t j = 0; j < end - begin; ++j) {
    const uint32_t wide = static_cast<uint32_t>(in[begin + j]) << 16;
    float f;
    std::memcpy(&f, &wide, sizeof f);
    f *= scale;
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t nan = static_cast<uint32_t>((u & 0x7fffffffu) > 0x7f800000u);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    r = (r & (nan - 1u)) | (0x7fc0u & (0u - nan));
    r &= 0u - static_cast<uint32_t>(
                  keep_bits(first + static_cast<uint32_t>(j), lo, hi) >= threshold);
    out[begin + j] = static_cast<uint16_t>(r);
  }
}

// One dropout call's mask: drop probability p, seed drawn from the default
// generator (or the one a forward saved, for its backward).
struct KeepBits {
  uint32_t lo, hi, threshold;
  KeepBits(double p, int64_t seed)
      : lo(static_cast<uint32_t>(seed)),
        hi(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)),
        threshold(static_cast<uint32_t>(std::llround(p * (1 << kKeepBits)))) {}
  explicit KeepBits(double p) : KeepBits(p, draw_seed()) {}
  static int64_t draw_seed() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return static_cast<int64_t>(at::check_generator<at::CPUGeneratorImpl>(gen)->random64());
  }
  int64_t seed() const { return static_cast<int64_t>((uint64_t{hi} << 32) | lo); }
  bool kept(int64_t i) const {
    return keep_bits(static_cast<uint32_t>(i), lo, hi) >= threshold;
  }
};

// out = x * keep * scale for float, bfloat16 (the kernels above) or double x.
torch::Tensor keep_scale(const torch::Tensor& x_in, const KeepBits& bits, double scale) {
  auto x = x_in.contiguous();
  auto out = torch::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t n = x.numel();
  TORCH_CHECK(n < (int64_t{1} << 32), "dropout: tensor too large (", n, " elements)");
  if (x.scalar_type() == torch::kFloat) {
    const float* in = x.data_ptr<float>();
    float* o = out.data_ptr<float>();
    at::parallel_for(0, n, /*grain_size=*/1 << 15, [&](int64_t begin, int64_t end) {
      keep_scale_f32(in, o, begin, end, bits.lo, bits.hi, bits.threshold,
                     static_cast<float>(scale));
    });
    return out;
  }
  if (x.scalar_type() == torch::kBFloat16) {
    static_assert(sizeof(at::BFloat16) == sizeof(uint16_t), "bfloat16 is 16 bits");
    const auto* in = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    auto* o = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
    at::parallel_for(0, n, /*grain_size=*/1 << 15, [&](int64_t begin, int64_t end) {
      keep_scale_bf16(in, o, begin, end, bits.lo, bits.hi, bits.threshold,
                      static_cast<float>(scale));
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "clinic_dropout", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const float sc = static_cast<float>(scale);
    at::parallel_for(0, n, /*grain_size=*/1 << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        o[i] = bits.kept(i) ? static_cast<scalar_t>(static_cast<float>(in[i]) * sc)
                            : scalar_t(0);
    });
  });
  return out;
}

struct SeededDropout : public torch::autograd::Function<SeededDropout> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, double p) {
    KeepBits bits(p);
    ctx->saved_data["seed"] = bits.seed();
    ctx->saved_data["p"] = p;
    return keep_scale(x, bits, 1.0 / (1.0 - p));
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    double p = ctx->saved_data["p"].toDouble();
    KeepBits bits(p, ctx->saved_data["seed"].toInt());
    return {keep_scale(g[0], bits, 1.0 / (1.0 - p)), torch::Tensor()};
  }
};

// drop(relu(x)), saving only the output y: d y / d x = 1/(1-p) where y > 0.
struct ReluSeededDropout : public torch::autograd::Function<ReluSeededDropout> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, double p) {
    auto y = keep_scale(x, KeepBits(p), 1.0 / (1.0 - p)).clamp_min_(0);
    ctx->save_for_backward({y});
    ctx->saved_data["p"] = p;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto y = ctx->get_saved_variables()[0];
    double p = ctx->saved_data["p"].toDouble();
    // relu's own backward kernel (g where y > 0, else 0): no bool tensor.
    return {torch::threshold_backward(g[0], y, 0).mul_(1.0 / (1.0 - p)), torch::Tensor()};
  }
};

#ifdef CLINIC_HAVE_BLAS
// Matrix t[i, j] ([R, C] = the last two dims) as a BLAS operand: unit stride
// along C ('N', ld = row stride) or along R ('T', ld = column stride).
// False for layouts BLAS cannot read (no unit stride, overlapping rows).
bool blas_operand(const torch::Tensor& t, char* trans, int* ld) {
  const int64_t R = t.size(2), C = t.size(3);
  const int64_t sr = t.stride(2), sc = t.stride(3);
  int64_t l;
  if (sc == 1 && (R == 1 || sr >= C)) {
    *trans = 'N';
    l = std::max<int64_t>({sr, C, 1});
  } else if (sr == 1 && (C == 1 || sc >= R)) {
    *trans = 'T';
    l = std::max<int64_t>({sc, R, 1});
  } else {
    return false;
  }
  *ld = static_cast<int>(l);
  return l < (int64_t{1} << 31);
}

// Dims of 4-D t from largest to smallest stride (expanded, stride-0 dims
// outermost): its memory order. Contiguous order unless a matrix dim (2 or 3)
// ends up innermost, which BLAS needs.
std::vector<int64_t> memory_order(const torch::Tensor& t) {
  std::vector<int64_t> order{0, 1, 2, 3};
  auto key = [&](int64_t x) {
    return t.stride(x) == 0 ? std::numeric_limits<int64_t>::max() : t.stride(x);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return key(x) > key(y); });
  if (order[3] != 2 && order[3] != 3) return {0, 1, 2, 3};
  return order;
}

// An uninitialised tensor of `sizes`, dense in memory order `order`. For the
// gradient of a per-head view of [B, L, H, dh] activations that order is
// [B, L, H, dh], so autograd's view/transpose backward up to the projection
// is free instead of a copy per step.
torch::Tensor empty_in_order(torch::IntArrayRef sizes, const std::vector<int64_t>& order,
                             const torch::TensorOptions& options) {
  std::vector<int64_t> dense, inverse(sizes.size());
  for (size_t i = 0; i < order.size(); ++i) {
    dense.push_back(sizes[order[i]]);
    inverse[order[i]] = static_cast<int64_t>(i);
  }
  return torch::empty(dense, options).permute(inverse);
}

// out[i, j] = alpha a[i, j] b[i, j] over 4-D [I, J, ., .] views, any strides
// on the two batch dims: one single-threaded sgemm per (i, j), the batch split
// across intra-op threads (OpenBLAS runs single-threaded inside an OpenMP
// region). Row-major C[M, P] = A[M, K] B[K, P] is column-major C^T = B^T A^T.
// `out` needs a unit stride on one of its matrix dims.
void blas_bmm_into(const torch::Tensor& out, const torch::Tensor& a_in,
                   const torch::Tensor& b_in, float alpha) {
  if (out.stride(3) != 1) {
    if (out.stride(2) == 1) {  // column-major out: write out^T = b^T a^T
      blas_bmm_into(out.transpose(2, 3), b_in.transpose(2, 3), a_in.transpose(2, 3), alpha);
    } else {
      auto dense = torch::empty(out.sizes(), out.options());
      blas_bmm_into(dense, a_in, b_in, alpha);
      out.copy_(dense);
    }
    return;
  }
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
  const int64_t I = a.size(0), J = a.size(1), M = a.size(2), K = a.size(3), P = b.size(3);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = out.data_ptr<float>();
  const int64_t a0 = a.stride(0), a1 = a.stride(1), b0 = b.stride(0), b1 = b.stride(1);
  const int64_t c0 = out.stride(0), c1 = out.stride(1);
  const int ldc = static_cast<int>(std::max<int64_t>(out.stride(2), std::max<int64_t>(P, 1)));
  at::parallel_for(0, I * J, /*grain_size=*/4, [&](int64_t begin, int64_t end) {
    const int m = static_cast<int>(P), n = static_cast<int>(M), k = static_cast<int>(K);
    const float zero = 0;
    for (int64_t x = begin; x < end; ++x) {
      const int64_t i = x / J, j = x % J;
      sgemm_(&tb, &ta, &m, &n, &k, &alpha, pb + i * b0 + j * b1, &ldb, pa + i * a0 + j * a1,
             &lda, &zero, pc + i * c0 + j * c1, &ldc);
    }
  });
}

// 4-D a [I, J, M, K], b [I, J, K, P]; out_order (empty: contiguous) is the
// output's memory order, e.g. [B, T, H, dh] for attention's context so that
// merging heads is a view.
struct BlasBmm : public torch::autograd::Function<BlasBmm> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, double alpha,
                               std::vector<int64_t> out_order) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["alpha"] = alpha;
    std::vector<int64_t> sizes{a.size(0), a.size(1), a.size(2), b.size(3)};
    auto out = out_order.empty() ? torch::empty(sizes, a.options())
                                 : empty_in_order(sizes, out_order, a.options());
    blas_bmm_into(out, a, b, static_cast<float>(alpha));
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto s = ctx->get_saved_variables();
    const float alpha = static_cast<float>(ctx->saved_data["alpha"].toDouble());
    torch::Tensor ga, gb;
    // Each gradient in its input's memory order (see empty_in_order);
    // expanded (stride-0) inputs get a dense one that autograd then sums.
    if (ctx->needs_input_grad(0)) {
      ga = empty_in_order(s[0].sizes(), memory_order(s[0]), s[0].options());
      blas_bmm_into(ga, g[0], s[1].transpose(2, 3), alpha);
    }
    if (ctx->needs_input_grad(1)) {
      gb = empty_in_order(s[1].sizes(), memory_order(s[1]), s[1].options());
      blas_bmm_into(gb, s[0].transpose(2, 3), g[0], alpha);
    }
    return {ga, gb, torch::Tensor(), torch::Tensor()};
  }
};
#endif

}  // namespace

bool head_bmm_uses_blas() {
#ifdef CLINIC_HAVE_BLAS
  return true;
#else
  return false;
#endif
}

torch::Tensor head_bmm(const torch::Tensor& a, const torch::Tensor& b, double alpha,
                       const torch::Tensor& out_layout) {
  TORCH_CHECK(a.dim() == b.dim() && (a.dim() == 3 || a.dim() == 4),
              "head_bmm takes two 3-D or two 4-D tensors, got ", a.sizes(), " and ", b.sizes());
#ifdef CLINIC_HAVE_BLAS
  // Shapes BLAS's 32-bit ints hold, no empty dims (BLAS needs ld >= 1 rows).
  auto fits = [](const torch::Tensor& t) {
    return t.numel() > 0 && t.numel() < (int64_t{1} << 31);
  };
  const int64_t n = a.dim();
  if (a.is_cpu() && b.is_cpu() && a.scalar_type() == torch::kFloat &&
      b.scalar_type() == torch::kFloat && fits(a) && fits(b) &&
      a.sizes().slice(0, n - 2) == b.sizes().slice(0, n - 2) && a.size(n - 1) == b.size(n - 2)) {
    std::vector<int64_t> order;
    if (out_layout.defined()) {
      TORCH_CHECK(out_layout.dim() == n, "head_bmm: out_layout must be ", n, "-D");
      order = memory_order(n == 4 ? out_layout : out_layout.unsqueeze(0));
    }
    if (n == 4) return BlasBmm::apply(a, b, alpha, order);
    return BlasBmm::apply(a.unsqueeze(0), b.unsqueeze(0), alpha, order).squeeze(0);
  }
#endif
  auto y = torch::matmul(a, b);
  return alpha == 1.0 ? y : y * alpha;
}

torch::Tensor dropout_keep_mask(const torch::Tensor& like, double p) {
  auto keep = torch::empty(like.sizes(), torch::TensorOptions().dtype(torch::kBool));
  bool* out = keep.data_ptr<bool>();
  KeepBits bits(p);
  at::parallel_for(0, keep.numel(), /*grain_size=*/1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = bits.kept(i);
  });
  return keep.to(like.device());
}

torch::Tensor apply_dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  TORCH_CHECK(p < 1, "dropout probability must be < 1, got ", p);
  if (!x.is_cpu() || (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kDouble &&
                      x.scalar_type() != torch::kBFloat16))
    return torch::dropout(x, p, true);
  return SeededDropout::apply(x, p);
}

torch::Tensor apply_relu_dropout(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0 || !x.is_cpu() ||
      (x.scalar_type() != torch::kFloat && x.scalar_type() != torch::kDouble &&
       x.scalar_type() != torch::kBFloat16))
    return apply_dropout(torch::relu(x), p, training);
  TORCH_CHECK(p < 1, "dropout probability must be < 1, got ", p);
  return ReluSeededDropout::apply(x, p);
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
                                              torch::Tensor* cache_v,
                                              bool future_is_causal,
                                              const torch::Tensor& write_at) {
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
    if (cache_k && write_at.defined()) {  // static: written in place, read whole
      if (!cache_k->defined()) {
        TORCH_CHECK(future_mask.defined(), "a static cache needs the slot mask");
        *cache_k = torch::zeros({B, H, future_mask.size(-1), dh}, k.options());
        *cache_v = torch::zeros({B, H, future_mask.size(-1), dh}, v.options());
      }
      cache_k->index_copy_(2, write_at, k);
      cache_v->index_copy_(2, write_at, v);
      k = *cache_k;
      v = *cache_v;
    } else if (cache_k) {
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
    if (observer) {  // SDPA never forms the probabilities: compute them to show
      auto scores = torch::matmul(q, k.transpose(2, 3)).to(torch::kFloat) /
                    std::sqrt(static_cast<double>(dh));
      if (keep.defined()) scores.masked_fill_(keep.logical_not(), -INFINITY);
      auto probs = torch::softmax(scores, -1);
      observer->on_attention(AttentionView{stack, layer, index,
                                           options.self_attention() ? "self_attn" : "cross_attn",
                                           probs});
    }
    // The causal mask alone, square: is_causal instead of a mask tensor.
    const bool causal = future_is_causal && future_mask.defined() && !key_pad_mask.defined() &&
                        q.size(2) == k.size(2);
    ctx = at::scaled_dot_product_attention(
        q, k, v, keep.defined() && !causal ? c10::optional<torch::Tensor>(keep) : c10::nullopt,
        p, /*is_causal=*/causal);
  }
#else
  (void)future_is_causal;  // 1.13 masks the scores itself
  {
    const double scaling = 1.0 / std::sqrt(static_cast<double>(dh));
    // q, k, v stay strided views of the projections ([B, L, H, dh] memory):
    // head_bmm reads them in place and writes ctx [B, T, H, dh]-dense, so no
    // head split/merge copies (forward or backward) and no q * scaling pass.
    auto scores = head_bmm(q, k.transpose(2, 3), scaling);  // [B, H, T, S]
    // Softmax in fp32: under CPU autocast 1.13 keeps it in bf16.
    if (scores.scalar_type() != torch::kFloat) scores = scores.to(torch::kFloat);
    if (key_pad_mask.defined())
      scores.masked_fill_(key_pad_mask.view({B, 1, 1, -1}),
                          -std::numeric_limits<float>::infinity());
    if (future_mask.defined())
      scores.masked_fill_(future_mask, -std::numeric_limits<float>::infinity());
    auto attn = torch::softmax(scores, -1);
    if (observer)
      observer->on_attention(AttentionView{stack, layer, index,
                                           options.self_attention() ? "self_attn" : "cross_attn",
                                           attn});
    attn = apply_dropout(attn, options.dropout(), is_training());
    ctx = head_bmm(attn.to(v.scalar_type()), v, 1.0, q);  // [B, H, T, dh], q's layout
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

torch::Tensor SinusoidalPositionsImpl::at(const torch::Tensor& tokens, const torch::Tensor& step) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  return table.index_select(0, step + 1).view({1, 1, -1}).expand({B, T, -1});
}

torch::Tensor layer_norm_fp32(torch::nn::LayerNorm& ln,
                              const torch::Tensor& x) {
  return ln(x.scalar_type() == torch::kFloat ? x : x.to(torch::kFloat));
}

}  // namespace clinic
