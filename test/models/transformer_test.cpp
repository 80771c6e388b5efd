#include "models/transformer.h"

#include <fmt/format.h>

#include <cmath>

#include "framework/amp/autocast.h"
#include "framework/errors.h"
#include <sstream>
#include "test/support.h"

namespace clinic {
namespace {

using test::expect_close;
using test::tiny_model;

std::shared_ptr<TransformerImpl> make(const ModelConfig& m, int64_t V = 20, uint64_t seed = 7) {
  torch::manual_seed(seed);
  auto t = std::make_shared<TransformerImpl>(m, VocabInfo{V, V, true});
  t->eval();
  return t;
}

torch::Tensor ids(std::vector<std::vector<int64_t>> rows) {
  size_t T = 0;
  for (auto& r : rows) T = std::max(T, r.size());
  auto t = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)}, torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t;
}

TEST(Transformer, PostLnEncoderLayerEqualsTorchTransformerEncoderLayer) {
  auto m = make(tiny_model("post_ln", 1, 8));
  auto* ours = m->encoder_layers[0]->as<EncoderLayerImpl>();
  torch::nn::TransformerEncoderLayer ref(
      torch::nn::TransformerEncoderLayerOptions(8, 2).dim_feedforward(16).dropout(0.0));
  ref->eval();
  {
    torch::NoGradGuard g;
    ref->self_attn->in_proj_weight.copy_(ours->self_attn->in_proj_weight);
    ref->self_attn->in_proj_bias.copy_(ours->self_attn->in_proj_bias);
    ref->self_attn->out_proj->weight.copy_(ours->self_attn->out_proj->weight);
    ref->self_attn->out_proj->bias.copy_(ours->self_attn->out_proj->bias);
    ref->linear1->weight.copy_(ours->ffn->fc1->weight);
    ref->linear1->bias.copy_(ours->ffn->fc1->bias);
    ref->linear2->weight.copy_(ours->ffn->fc2->weight);
    ref->linear2->bias.copy_(ours->ffn->fc2->bias);
    // Non-trivial LayerNorm affine parameters so their placement matters.
    ours->attn_sublayer->norm->weight.uniform_(0.5, 1.5);
    ours->attn_sublayer->norm->bias.uniform_(-0.5, 0.5);
    ours->ffn_sublayer->norm->weight.uniform_(0.5, 1.5);
    ref->norm1->weight.copy_(ours->attn_sublayer->norm->weight);
    ref->norm1->bias.copy_(ours->attn_sublayer->norm->bias);
    ref->norm2->weight.copy_(ours->ffn_sublayer->norm->weight);
    ref->norm2->bias.copy_(ours->ffn_sublayer->norm->bias);
  }
  auto x = torch::randn({3, 5, 8});
  auto pad = torch::zeros({3, 5}, torch::kBool);
  pad[1][4] = true;
  auto got = ours->forward(x, pad);
  auto want = ref(x.transpose(0, 1), torch::Tensor(), pad).transpose(0, 1);
  // Padded query rows are free to differ; compare real positions.
  auto keep = pad.logical_not().unsqueeze(-1).expand_as(got);
  expect_close(got.masked_select(keep), want.masked_select(keep), 1e-5, 1e-5);
}

TEST(Transformer, PreLnLayerEqualsItsFormula) {
  auto m = make(tiny_model("pre_ln", 1, 8));
  auto* l = m->encoder_layers[0]->as<EncoderLayerImpl>();
  auto x = torch::randn({2, 4, 8});
  auto pad = torch::zeros({2, 4}, torch::kBool);
  auto h = x + l->self_attn(l->attn_sublayer->norm(x), l->attn_sublayer->norm(x), pad, torch::Tensor());
  auto want = h + l->ffn(l->ffn_sublayer->norm(h));
  expect_close(l->forward(x, pad), want, 1e-6, 1e-6);
  EXPECT_TRUE(m->encoder_norm);  // Pre-LN stacks end in a LayerNorm
  EXPECT_FALSE(make(tiny_model("post_ln"))->encoder_norm);
}

TEST(Transformer, AdminWithUnitOmegaEqualsPostLn) {
  auto post = make(tiny_model("post_ln"));
  auto admin = make(tiny_model("admin"));
  auto src = ids({{5, 6, 7, kEos}, {8, 9, kEos}});
  auto tgt = ids({{kBos, 4, 5}, {kBos, 6, 0}});
  expect_close(admin->forward(src, tgt), post->forward(src, tgt), 0, 1e-6);
}

TEST(Transformer, VariantConstantsMatchPaperTable) {
  EXPECT_NEAR(deepnorm_alpha(false, 6, 6), 1.418, 1e-3);
  EXPECT_NEAR(deepnorm_beta(false, 6, 6), 0.497, 1e-3);
  EXPECT_NEAR(deepnorm_alpha(true, 6, 6), 2.060, 1e-3);
  EXPECT_NEAR(deepnorm_beta(true, 6, 6), 0.343, 1e-3);
  EXPECT_NEAR(deepnorm_alpha(false, 18, 18), 1.999, 1e-3);
  EXPECT_NEAR(deepnorm_beta(false, 18, 18), 0.353, 1e-3);
  EXPECT_NEAR(deepnorm_alpha(true, 18, 18), 2.711, 1e-3);
  EXPECT_NEAR(deepnorm_beta(true, 18, 18), 0.261, 1e-3);
  EXPECT_NEAR(admin_closed_form_omega(12, "O(logn)"), 2.017, 1e-3);
  EXPECT_NEAR(admin_closed_form_omega(18, "O(logn)"), 2.335, 1e-3);
  EXPECT_NEAR(admin_closed_form_omega(36, "O(logn)"), 3.041, 1e-3);
  EXPECT_NEAR(admin_closed_form_omega(54, "O(logn)"), 3.567, 1e-3);
  EXPECT_NEAR(admin_closed_form_omega(12, "O(1)"), std::sqrt(12.0), 1e-12);
  // The model applies them per stack: n = 2N for the encoder, 3M for the decoder.
  auto m = make(tiny_model("admin_closed_form", 6));
  EXPECT_NEAR(m->sublayers().front()->residual->omega.mean().item<double>(), 2.017, 1e-3);
  EXPECT_NEAR(m->sublayers().back()->residual->omega.mean().item<double>(), 2.335, 1e-3);
}

TEST(Transformer, AdminProfilingFollowsTheClinicRecursion) {
  auto cfg = tiny_model("admin", 3);
  cfg.dropout = 0.1;
  auto m = make(cfg);
  Batch b;
  b.src = ids({{5, 6, 7, 8, kEos}, {9, 10, kEos}});
  b.tgt_in = ids({{kBos, 4, 5, 6}, {kBos, 7}});
  // Recompute the recursion independently from the sublayer inputs and
  // branch outputs of the same forward (same dropout draws).
  torch::manual_seed(3);
  auto omegas = admin_initialize(*m, b);
  ASSERT_EQ(omegas.size(), 6u + 9u);
  m->train();
  torch::manual_seed(3);
  auto rec = test::record_branches(*m, b);
  ASSERT_EQ(rec.omega.size(), omegas.size());
  double r_enc = 1, r_dec = 1;
  for (size_t k = 0; k < omegas.size(); ++k) {
    double& r = k < 6 ? r_enc : r_dec;
    EXPECT_NEAR(omegas[k], r, 1e-5) << "sublayer " << k;
    EXPECT_NEAR(rec.omega[k], omegas[k], 1e-6) << "stored omega " << k;
    r = std::sqrt((rec.x[k] * omegas[k]).var(false).item<double>() +
                  rec.fx[k].var(false).item<double>());
  }
  EXPECT_DOUBLE_EQ(omegas[0], 1.0);
  EXPECT_DOUBLE_EQ(omegas[6], 1.0);  // each stack starts at 1
  EXPECT_GT(omegas[5], omegas[1]);   // grows with depth
}

// Cross-implementation check: tools/golden/admin_profile.py re-implements the
// Clinic recursion in plain PyTorch on the same weights (carried by the
// TorchScript export) and the same batch.
TEST(Transformer, AdminProfilingMatchesPythonReimplementation) {
  std::string out;
  if (test::run_shell("/usr/bin/python3 -c 'import torch'", &out) != 0)
    GTEST_SKIP() << "python3-torch not installed";
  auto cfg = tiny_model("admin", 3, 16);
  cfg.share_all_embeddings = true;
  auto m = make(cfg);
  test::TempDir d;
  m->to_torchscript().save(d.file("m.pt"));  // omega = 1: weights only
  Batch b;
  b.src = ids({{5, 6, 7, 8, 9, kEos}, {10, 11, kEos, 0, 0, 0}, {12, 13, 14, kEos, 0, 0}});
  b.tgt_in = ids({{kBos, 4, 5, 6, 7}, {kBos, 8, 9, 0, 0}, {kBos, 10, 11, 12, 0}});
  auto omegas = admin_initialize(*m, b);
  std::string cmd = "/usr/bin/python3 " + std::string(kSourceDir) +
                    "/tools/golden/admin_profile.py " + d.file("m.pt") +
                    " '[[5, 6, 7, 8, 9, 3], [10, 11, 3, 0, 0, 0], [12, 13, 14, 3, 0, 0]]'"
                    " '[[2, 4, 5, 6, 7], [2, 8, 9, 0, 0], [2, 10, 11, 12, 0]]'";
  ASSERT_EQ(test::run_shell(cmd, &out), 0) << out;
  std::istringstream in(out);
  std::vector<double> want;
  for (double v; in >> v;) want.push_back(v);
  ASSERT_EQ(want.size(), omegas.size()) << out;
  for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(omegas[k], want[k], 1e-5) << "sublayer " << k;
  EXPECT_GT(want.back(), 1.5);  // the values are not trivially 1
}

// Liu et al. 2020 Table 1 mixes stacks: model.encoder_residual /
// model.decoder_residual override model.residual per stack.
TEST(Transformer, PerStackResidualVariants) {
  auto cfg = tiny_model("post_ln");
  cfg.decoder_residual = "pre_ln";
  auto m = make(cfg);
  for (const auto& s : m->sublayers())
    EXPECT_EQ(s->position, s->site.decoder ? NormPosition::kPre : NormPosition::kPost)
        << (s->site.decoder ? "decoder" : "encoder") << " sublayer " << s->site.index;
  EXPECT_FALSE(m->encoder_norm);  // Post-LN encoder: no final norm
  EXPECT_TRUE(m->decoder_norm);   // Pre-LN decoder ends in one
  // The decoder computes exactly a Pre-LN decoder's function: copy the
  // weights into an all-Pre-LN model and compare decoder outputs on the
  // same encoder states.
  auto pre = make(tiny_model("pre_ln"));
  {
    torch::NoGradGuard g;
    auto src = m->named_parameters(true);
    for (auto& p : pre->named_parameters(true))
      if (src.contains(p.key())) p.value().copy_(src[p.key()]);
  }
  m->eval();
  pre->eval();
  auto enc = m->encode(ids({{5, 6, 7, kEos}}));
  auto tgt = ids({{kBos, 8, 9}});
  test::expect_close(m->decode(tgt, enc), pre->decode(tgt, enc), 1e-5, 1e-6);
  // Admin in the decoder only: only the decoder's omega is profiled.
  auto mixed = tiny_model("pre_ln");
  mixed.decoder_residual = "admin";
  auto a = make(mixed);
  Batch b;
  b.src = ids({{5, 6, 7, kEos}});
  b.tgt_in = ids({{kBos, 8, 9}});
  const std::string summary = a->initialize_from_batch(b);
  // The log line labels the profiled values by the stack they belong to (it
  // once numbered decoder-only omegas as the encoder's): each decoder
  // sublayer's stored omega, 1..3M, and no encoder part.
  std::string expected = "admin omega per sublayer: dec";
  int k = 0;
  for (const auto& s : a->sublayers()) {
    EXPECT_EQ(s->residual->omega.defined(), s->site.decoder);
    if (s->site.decoder)
      expected += fmt::format(" {}:{:.4f}", ++k, s->residual->omega.mean().item<double>());
  }
  EXPECT_EQ(summary, expected);
  EXPECT_GT(a->sublayers().back()->residual->omega.mean().item<double>(), 1.0);
}

TEST(Transformer, PaddingDoesNotChangeRealPositions) {
  for (const char* v : {"post_ln", "pre_ln", "admin_closed_form"}) {
    auto m = make(tiny_model(v));
    auto short_src = ids({{5, 6, kEos}});
    auto padded = ids({{5, 6, kEos, 0, 0}});
    auto tgt = ids({{kBos, 7, 8}});
    auto a = m->forward(short_src, tgt);
    auto b = m->forward(padded, tgt);
    expect_close(a, b, 1e-5, 1e-6);
    auto enc_a = m->encode(short_src).out, enc_b = m->encode(padded).out;
    expect_close(enc_a, enc_b.narrow(1, 0, 3), 1e-5, 1e-6);
  }
}

TEST(Transformer, CausalMaskBlocksTheFuture) {
  auto m = make(tiny_model("pre_ln"));
  auto src = ids({{5, 6, kEos}});
  auto a = m->forward(src, ids({{kBos, 7, 8, 9}}));
  auto b = m->forward(src, ids({{kBos, 7, 12, 13}}));
  expect_close(a.narrow(1, 0, 2), b.narrow(1, 0, 2), 0, 1e-6);
  EXPECT_GT((a.narrow(1, 2, 2) - b.narrow(1, 2, 2)).abs().max().item<double>(), 1e-4);
}

TEST(Transformer, IncrementalDecodingEqualsFullDecoding) {
  for (const char* v : {"post_ln", "pre_ln", "admin", "deepnorm", "rezero"}) {
    auto cfg = tiny_model(v);
    auto m = make(cfg);
    if (std::string(v) == "rezero") {  // alpha = 0 would make the branches vanish
      torch::NoGradGuard g;
      for (auto& s : m->sublayers()) s->residual->alpha.fill_(0.7);
    }
    auto src = ids({{5, 6, 7, kEos}, {8, kEos}});
    auto tgt = ids({{kBos, 4, 9, 10}, {kBos, 11, 12, 13}});
    auto enc = m->encode(src);
    auto full = m->decode(tgt, enc);
    DecoderCache cache;
    for (int64_t t = 0; t < tgt.size(1); ++t) {
      auto step = m->decode(tgt.narrow(1, t, 1), enc, &cache);
      expect_close(step.squeeze(1), full.select(1, t), 1e-5, 1e-5);
    }
  }
}

TEST(Transformer, CheckpointedActivationsGiveTheSameLossAndGradients) {
  // Dropout on everywhere: recompute must replay the same masks.
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    std::vector<torch::Tensor> loss, grads[2];
    for (bool ckpt : {false, true}) {
      auto cfg = tiny_model("pre_ln", 2, 16);
      cfg.dropout = 0.3;
      cfg.attention_dropout = 0.2;
      cfg.activation_dropout = 0.2;
      cfg.checkpoint_activations = ckpt;
      auto m = make(cfg);
      m->train();
      torch::manual_seed(42);
      auto src = ids({{5, 6, 7, 11, kEos}, {8, 9, kEos}});
      auto tgt = ids({{kBos, 4, 5, 12}, {kBos, 6}});
      torch::Tensor l;
      {
        AutocastGuard ac(c10::kCPU, dtype);
        l = m->forward(src, tgt).to(torch::kFloat).logsumexp(-1).sum();
      }
      l.backward();
      auto after = torch::rand({3});  // the generator ends where a plain run leaves it
      loss.push_back(torch::stack({l.detach(), after.sum()}));
      for (const auto& p : m->parameters()) grads[ckpt].push_back(p.grad().clone());
    }
    EXPECT_TRUE(torch::allclose(loss[0], loss[1], 1e-6, 1e-6)) << loss[0] << loss[1];
    ASSERT_EQ(grads[0].size(), grads[1].size());
    double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    for (size_t i = 0; i < grads[0].size(); ++i)
      ASSERT_TRUE(torch::allclose(grads[0][i], grads[1][i], tol, tol)) << "parameter " << i;
  }
}

TEST(Transformer, DeepStacksRunForwardBackwardWithoutNaN) {
  for (const char* v : {"post_ln", "pre_ln", "admin", "admin_closed_form", "deepnorm", "rezero"}) {
    auto cfg = tiny_model(v, 18, 16);
    cfg.dropout = 0.1;
    auto m = make(cfg);
    m->train();
    Batch b;
    b.src = ids({{5, 6, 7, kEos}, {8, 9, kEos}});
    b.tgt_in = ids({{kBos, 4, 5}, {kBos, 6}});
    m->initialize_from_batch(b);
    auto logits = m->forward(b.src, b.tgt_in);
    logits.logsumexp(-1).sum().backward();
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>()) << v;
    for (const auto& p : m->named_parameters()) {
      if (p.value().grad().defined()) {
        ASSERT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << v << " " << p.key();
      }
    }
  }
}

TEST(Transformer, FoldToPostLnKeepsOutputs) {
  for (const char* v : {"admin", "admin_closed_form", "deepnorm"}) {
    auto cfg = tiny_model(v, 3);
    cfg.omega_shape = "scalar";
    auto m = make(cfg);
    Batch b;
    b.src = ids({{5, 6, 7, kEos}, {8, 9, kEos}});
    b.tgt_in = ids({{kBos, 4, 5}, {kBos, 6}});
    m->initialize_from_batch(b);
    m->eval();
    auto folded = fold_to_post_ln(*m);
    folded->eval();
    EXPECT_EQ(folded->config.residual, "post_ln");
    // LN(w x + f) = LN(x + f/w) exactly but for LayerNorm's eps (1e-5):
    // sqrt(var + eps) vs sqrt(var + eps/w^2) -> relative error <= eps/var.
    auto a = m->forward(b.src, b.tgt_in), c = folded->forward(b.src, b.tgt_in);
    double rel = ((a - c).abs().max() / a.abs().max()).item<double>();
    EXPECT_LT(rel, 1e-4) << v;
  }
  auto vec = make(tiny_model("admin"));
  try {
    fold_to_post_ln(*vec);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("vector omega"), std::string::npos);
  }
}

// A user-defined residual variant: Post-LN with a fixed shortcut weight 0.5.
class HalfShortcut : public ResidualVariant {
 public:
  NormPosition norm_position() const override { return NormPosition::kPost; }
  Residual make(const SublayerSite&) const override {
    Residual r;
    r->set_omega(torch::full({1}, 0.5), false);
    return r;
  }
};

TEST(Transformer, UserRegisteredVariantBuildsFromARecipe) {
  if (!residual_registry().contains("half_shortcut"))
    residual_registry().add("half_shortcut",
                            [](const ModelConfig&) { return std::make_shared<HalfShortcut>(); });
  RunConfig cfg = parse_recipe_text(
      "model:\n  residual: half_shortcut\n  encoder_layers: 1\n  decoder_layers: 1\n"
      "  d_model: 8\n  heads: 2\n  ffn_dim: 8\n",
      "custom.yaml");
  auto m = build_model(cfg.model, VocabInfo{12, 12, true});
  auto* t = dynamic_cast<TransformerImpl*>(m.get());
  ASSERT_NE(t, nullptr);
  EXPECT_DOUBLE_EQ(t->sublayers()[0]->residual->omega.item<double>(), 0.5);
  EXPECT_EQ(t->forward(ids({{5, kEos}}), ids({{kBos, 4}})).sizes(),
            torch::IntArrayRef({1, 2, 12}));
}

// A user subclass that changes one piece: logits divided by a temperature.
class TemperatureTransformer : public TransformerImpl {
 public:
  using TransformerImpl::TransformerImpl;
  torch::Tensor project_output(const torch::Tensor& h) override {
    return TransformerImpl::project_output(h) / 2.0;
  }
};

// decode_features splits exactly the output projection off; a subclass that
// overrides project_output keeps its logits (no split).
TEST(Transformer, DecoderFeaturesSplitOffOnlyAPlainLinearOutput) {
  auto m = make(tiny_model("admin", 2, 8));
  auto src = ids({{5, 6, kEos}, {7, kEos}}), tgt = ids({{kBos, 4, 9}, {kBos, 3}});
  auto enc = m->encode(src);
  auto f = m->decode_features(tgt, enc);
  ASSERT_TRUE(f.weight.defined());
  EXPECT_EQ(f.hidden.sizes(), torch::IntArrayRef({2, 3, 8}));
  EXPECT_TRUE(torch::allclose(torch::nn::functional::linear(f.hidden, f.weight),
                              m->decode(tgt, enc), 1e-6, 1e-6));
  torch::manual_seed(7);
  TemperatureTransformer hot(tiny_model("admin", 2, 8), VocabInfo{20, 20, true});
  hot.eval();
  auto g = hot.decode_features(tgt, hot.encode(src));
  EXPECT_FALSE(g.weight.defined());
  EXPECT_TRUE(torch::allclose(g.hidden, hot.decode(tgt, hot.encode(src))));
}

TEST(Transformer, SubclassTrainsFromARecipe) {
  if (!model_registry().contains("tempered"))
    model_registry().add("tempered", [](const ModelConfig& c, const VocabInfo& v) {
      return std::make_shared<TemperatureTransformer>(c, v);
    });
  RunConfig cfg = parse_recipe_text(
      "model:\n  arch: tempered\n  d_model: 8\n  heads: 2\n  ffn_dim: 8\n"
      "  encoder_layers: 1\n  decoder_layers: 1\n  dropout: 0\n",
      "sub.yaml");
  torch::manual_seed(1);
  auto sub = build_model(cfg.model, VocabInfo{12, 12, true});
  torch::manual_seed(1);
  cfg.model.arch = "transformer";
  auto base = build_model(cfg.model, VocabInfo{12, 12, true});
  sub->eval();
  base->eval();
  auto src = ids({{5, 6, kEos}}), tgt = ids({{kBos, 4}});
  expect_close(sub->forward(src, tgt), base->forward(src, tgt) / 2.0, 1e-6, 1e-7);
}

TEST(Transformer, EveryVariantLearnsACopyTask) {
  for (const char* v : {"post_ln", "pre_ln", "admin", "admin_closed_form", "deepnorm", "rezero"}) {
    auto cfg = tiny_model(v, 2, 32);
    cfg.heads = 4;
    cfg.ffn_dim = 64;
    torch::manual_seed(11);
    auto m = std::make_shared<TransformerImpl>(cfg, VocabInfo{16, 16, true});
    m->train();
    torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(3e-3).betas({0.9, 0.98}));
    double first = 0, last = 0;
    for (int step = 0; step < 400; ++step) {
      auto body = torch::randint(4, 16, {16, 6}, torch::kLong);
      auto src = torch::cat({body, torch::full({16, 1}, kEos, torch::kLong)}, 1);
      auto tgt_in = torch::cat({torch::full({16, 1}, kBos, torch::kLong), body}, 1);
      auto tgt_out = src;
      if (step == 0 && std::string(v) == "admin") {
        Batch b;
        b.src = src;
        b.tgt_in = tgt_in;
        m->initialize_from_batch(b);
      }
      auto logits = m->forward(src, tgt_in);
      auto loss = torch::nn::functional::cross_entropy(logits.view({-1, 16}), tgt_out.view(-1));
      opt.zero_grad();
      loss.backward();
      opt.step();
      if (step == 0) first = loss.item<double>();
      last = loss.item<double>();
    }
    EXPECT_LT(last, 0.25 * first) << v << ": " << first << " -> " << last;
  }
}

}  // namespace
}  // namespace clinic
