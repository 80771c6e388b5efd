// The two case models (models/cases.*) and their data and schedule options
// against the reports' specifications (docs/cases.md).
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/data/corpus.h"
#include "framework/errors.h"
#include "framework/optim/schedule.h"
#include "framework/train/trainer.h"
#include "models/cases.h"
#include "test/support.h"

namespace clinic {
namespace {

RunConfig case_recipe(const std::string& name, const std::vector<std::string>& o = {}) {
  register_builtins();
  return load_recipe(name, o);
}

// Case A: Adam at 1/5 of Attention-Is-All-You-Need's schedule,
// 0.2 * 512^-0.5 * min(step^-0.5, step * 4000^-1.5), step k from 1; update k
// runs with schedule(k - 1) (fairseq timing).
// `clinic diagnose D/RUN --out D/report`: its exit status, its output in *out.
int diagnose_into_report(const test::TempDir& d, const std::string& run, std::string* out) {
  return test::run_shell(
      test::clinic_bin() + " diagnose " + d.file(run) + " --out " + d.file("report"), out);
}

// The records of one event ("diag", "spike", ...) in D/RUN/metrics.jsonl.
std::vector<nlohmann::json> events(const test::TempDir& d, const std::string& run,
                                   const std::string& event) {
  std::vector<nlohmann::json> out;
  std::ifstream in(d.file(run + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == event) out.push_back(std::move(j));
  }
  return out;
}

TEST(Cases, NoamScheduleValuesAtGivenSteps) {
  RunConfig a = case_recipe("cases/de_en_tagger");
  Schedule s = build_schedule(a);
  auto noam = [](double k) { return 0.2 / std::sqrt(512.0) * std::min(1 / std::sqrt(k), k * std::pow(4000.0, -1.5)); };
  for (int64_t k : {1, 2, 100, 3999, 4000, 4001, 10000, 100000})
    EXPECT_NEAR(s(k - 1), noam(static_cast<double>(k)), 1e-15) << "update " << k;
  EXPECT_NEAR(s(3999), 0.2 / std::sqrt(512.0) / std::sqrt(4000.0), 1e-15);  // the peak
  // Case B: factor 1, d = 32, warmup 3000.
  Schedule b = build_schedule(case_recipe("cases/toy_loss_spikes"));
  EXPECT_NEAR(b(0), 1.0 / std::sqrt(32.0) * std::pow(3000.0, -1.5), 1e-15);
  EXPECT_NEAR(b(99999), 1.0 / std::sqrt(32.0) / std::sqrt(100000.0), 1e-15);
}

TEST(Cases, FixedBatchIsTheReportedToyData) {
  RunConfig b = case_recipe("cases/toy_loss_spikes");
  Batch batch = fixed_batch(b.data);
  // input [[1,0],[0,1]], target = 1 - input, ids shifted past the 4 specials.
  EXPECT_TRUE(torch::equal(batch.src, torch::tensor({{5, 4}, {4, 5}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(batch.tgt_out, torch::tensor({{4, 5}, {5, 4}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(batch.tgt_in, batch.src));
  EXPECT_EQ(batch.tgt_tokens, 4);
  DataConfig bad = b.data;
  bad.fixed_input = "1 2; 0 1";
  EXPECT_NE(test::error_of<ConfigError>([&] { fixed_batch(bad); })
                .find("data.fixed_input: '2' is not a token id in [0, 2)"),
            std::string::npos);
  bad.fixed_input = "1 0; 0";
  EXPECT_NE(test::error_of<ConfigError>([&] { fixed_batch(bad); }).find("different lengths"),
            std::string::npos);
}

// Case B's model: 1 layer, hidden 32, 2 heads, FFN 64, GELU, post-LN eps
// 1e-12, BERT init, causal, logits only over the 2 real tokens.
TEST(Cases, CausalLmMatchesTheToySpecification) {
  RunConfig b = case_recipe("cases/toy_loss_spikes");
  torch::manual_seed(3);
  auto m = build_model(b.model, VocabInfo{6, 6, true});
  auto* lm = dynamic_cast<CausalLmImpl*>(m.get());
  ASSERT_NE(lm, nullptr);
  ASSERT_EQ(lm->layers->size(), 1u);
  auto* layer = lm->layers[0]->as<EncoderLayerImpl>();
  EXPECT_EQ(layer->self_attn->options.heads(), 2);
  EXPECT_EQ(layer->ffn->fc1->weight.size(0), 64);
  EXPECT_TRUE(layer->ffn->options.gelu());
  EXPECT_EQ(layer->attn_sublayer->position, NormPosition::kPost);
  EXPECT_DOUBLE_EQ(layer->attn_sublayer->norm->options.eps(), 1e-12);
  EXPECT_DOUBLE_EQ(lm->embed_norm->options.eps(), 1e-12);
  EXPECT_EQ(lm->head->weight.sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_NEAR(lm->tokens->weight.std().item<double>(), 0.02, 0.01);
  EXPECT_NEAR(layer->ffn->fc1->weight.std().item<double>(), 0.02, 0.003);
  EXPECT_EQ(layer->ffn->fc1->bias.abs().max().item<double>(), 0.0);
  m->eval();
  auto src = torch::tensor({{5, 4, 5}}, torch::kLong);
  auto logits = m->forward(src, src);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 3, 6}));
  EXPECT_TRUE((logits.narrow(2, 0, 4) == -1e9).all().item<bool>());
  // Softmax over all 6 ids = softmax over the 2 real tokens.
  auto p6 = torch::softmax(logits, -1).narrow(2, 4, 2);
  auto p2 = torch::softmax(logits.narrow(2, 4, 2), -1);
  test::expect_close(p6, p2, 1e-6, 1e-7);
  // Causal: a later token does not change earlier positions.
  auto other = m->forward(torch::tensor({{5, 4, 4}}, torch::kLong), src);
  test::expect_close(other.narrow(1, 0, 2), logits.narrow(1, 0, 2), 1e-5, 1e-6);
  EXPECT_FALSE(torch::allclose(other.narrow(1, 2, 1), logits.narrow(1, 2, 1)));
  // The "without the transformer layer" ablation builds and runs.
  RunConfig none = case_recipe("cases/toy_loss_spikes", {"model.encoder_layers=0"});
  auto bare = build_model(none.model, VocabInfo{6, 6, true});
  EXPECT_EQ(bare->forward(src, src).sizes(), (std::vector<int64_t>{1, 3, 6}));
}

// The toy against the reference program (scripts/case_b_reference.py, plain
// PyTorch written from the report, run by tools/golden/case_b_golden.py on
// these weights): the same logits, loss and gradient norm on the toy batch.
// So the two systems whose spike counts docs/cases.md compares are one system.
TEST(Cases, CausalLmMatchesTheReferenceProgram) {
  std::string out;
  if (test::run_shell("/usr/bin/python3 -c 'import torch'", &out) != 0)
    GTEST_SKIP() << "python3-torch not installed";
  RunConfig b = case_recipe("cases/toy_loss_spikes");
  torch::manual_seed(5);
  auto m = build_model(b.model, VocabInfo{6, 6, true});
  {
    // Trained-looking weights: BERT's init leaves biases and LayerNorms at 0/1.
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.3);
  }
  m->eval();
  test::TempDir d;
  c10::Dict<std::string, torch::Tensor> params;
  for (const auto& p : m->named_parameters()) params.insert(p.key(), p.value().detach().clone());
  auto bytes = torch::pickle_save(c10::IValue(params));
  std::ofstream(d.file("params.pt"), std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_EQ(test::run_shell("/usr/bin/python3 " + std::string(kSourceDir) +
                                "/tools/golden/case_b_golden.py " + d.file("params.pt"),
                            &out),
            0)
      << out;
  auto want = nlohmann::json::parse(out.substr(out.find('{')));
  // The toy's tokens 0 and 1 are ids 4 and 5.
  auto src = torch::tensor({{5, 4}, {4, 5}}, torch::kLong);
  auto logits = m->forward(src, src).narrow(2, 4, 2);
  auto target = torch::tensor({0, 1, 1, 0}, torch::kLong);
  auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, 2}), target);
  loss.backward();
  double sq = 0;
  for (const auto& p : m->parameters())
    if (p.grad().defined()) sq += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t c = 0; c < 2; ++c)
        EXPECT_NEAR(logits[r][t][c].item<double>(), want["logits"][r][t][c].get<double>(), 1e-4)
            << "row " << r << " position " << t << " token " << c;
  EXPECT_NEAR(loss.item<double>(), want["loss"].get<double>(), 1e-5 * want["loss"].get<double>());
  EXPECT_NEAR(std::sqrt(sq), want["grad_norm"].get<double>(), 1e-4 * want["grad_norm"].get<double>());
  EXPECT_GT(want["loss"].get<double>(), 0.01);  // not a trivially saturated batch
  // Label smoothing 0.1 through clinic's criterion on the model's features:
  // the mass goes to the 2 real tokens (DecoderFeatures::allowed), as torch's
  // label_smoothing over 2 classes does, not to the -1e9 special ids.
  TrainConfig tc;
  tc.label_smoothing = 0.1;
  Criterion crit = loss_registry().get("label_smoothed_cross_entropy")(tc);
  m->zero_grad();
  auto ls_out = crit(m->forward_features(src, src), torch::tensor({{4, 5}, {5, 4}}, torch::kLong),
                  torch::kFloat);
  auto ls = ls_out.loss / 4;  // the criterion sums over the 4 target tokens
  ls.backward();
  sq = 0;
  for (const auto& p : m->parameters())
    if (p.grad().defined()) sq += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(ls.item<double>(), want["loss_ls01"].get<double>(),
              1e-5 * want["loss_ls01"].get<double>());
  EXPECT_NEAR(std::sqrt(sq), want["grad_norm_ls01"].get<double>(),
              1e-4 * want["grad_norm_ls01"].get<double>());
  EXPECT_NEAR(ls_out.nll.item<double>() / 4, loss.item<double>(), 1e-5 * loss.item<double>());
  EXPECT_GT(std::abs(want["loss_ls01"].get<double>() - want["loss"].get<double>()), 1e-3);
}

// Case A's model and data: embeddings x sqrt(d) + the tutorial's positions,
// 2 encoder layers (d 512, 8 heads, FFN 2048, no final norm), a linear head
// over 10,000 targets at every source position; the reported init ranges.
TEST(Cases, EncoderTaggerMatchesTheReport) {
  RunConfig a = case_recipe("cases/de_en_tagger", {"model.d_model=64", "model.ffn_dim=128"});
  const int64_t V = 10000;
  torch::manual_seed(4);
  auto m = build_model(a.model, VocabInfo{9000, V, false});
  auto* t = dynamic_cast<EncoderTaggerImpl*>(m.get());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->layers->size(), 2u);
  EXPECT_LE(t->embed->weight.abs().max().item<double>(), 0.1);
  EXPECT_GT(t->embed->weight.abs().max().item<double>(), 0.099);
  EXPECT_LE(t->head->weight.abs().max().item<double>(), 0.1);
  double c = std::log(1.0 / V);
  EXPECT_GE(t->head->bias.min().item<double>(), c - 0.1);
  EXPECT_LE(t->head->bias.max().item<double>(), c + 0.1);
  EXPECT_GT(t->head->bias.max().item<double>() - t->head->bias.min().item<double>(), 0.19);
  // The tutorial's PositionalEncoding: sin at even, cos at odd columns.
  for (int64_t p : {0, 1, 7})
    for (int64_t i : {0, 10}) {
      double ang = p / std::pow(10000.0, 2.0 * i / 64);
      EXPECT_NEAR(t->positions[p][2 * i].item<double>(), std::sin(ang), 1e-5);
      EXPECT_NEAR(t->positions[p][2 * i + 1].item<double>(), std::cos(ang), 1e-5);
    }
  const int e = static_cast<int>(kEos);
  auto src = torch::tensor({{7, 8, 9, e}, {10, e, 0, 0}}, torch::kLong);
  auto logits = m->forward(src, src);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 4, V}));
  // norm_first: pre_ln layers, and still no final norm (the tutorial's).
  RunConfig pre = case_recipe("cases/de_en_tagger",
                              {"model.d_model=64", "model.ffn_dim=128", "model.residual=pre_ln"});
  auto pm = build_model(pre.model, VocabInfo{100, 100, false});
  auto* pt = dynamic_cast<EncoderTaggerImpl*>(pm.get());
  EXPECT_EQ(pt->layers[0]->as<EncoderLayerImpl>()->attn_sublayer->position, NormPosition::kPre);
}

// model.residual: admin on the encoder-only models runs Admin's profiling
// (it once did not: omega stayed 1 and "admin" trained as Post-LN). The
// recursion is recomputed from the sublayer inputs and branch outputs of a
// second forward with the profiled omegas (dropout 0 in case A: the same
// tensors as the profiling pass).
TEST(Cases, AdminOnTheEncoderOnlyModelsIsProfiled) {
  RunConfig a = case_recipe("cases/de_en_tagger", {"model.d_model=64", "model.ffn_dim=128",
                                                   "model.residual=admin",
                                                   "model.encoder_layers=3"});
  torch::manual_seed(5);
  auto m = build_model(a.model, VocabInfo{100, 100, false});
  const int e = static_cast<int>(kEos);
  Batch b;
  b.src = torch::tensor({{7, 8, 9, e}, {10, e, 0, 0}}, torch::kLong);
  b.tgt_in = b.src;
  std::string summary = m->initialize_from_batch(b);
  EXPECT_NE(summary.find("admin omega per sublayer: enc 1:1.0000 2:"), std::string::npos)
      << summary;
  auto rec = test::record_branches(*m, b);
  ASSERT_EQ(rec.omega.size(), 6u);
  double r = 1;
  for (size_t k = 0; k < rec.omega.size(); ++k) {
    EXPECT_NEAR(rec.omega[k], r, 1e-5) << "sublayer " << k;
    r = std::sqrt((rec.x[k] * rec.omega[k]).var(false).item<double>() +
                  rec.fx[k].var(false).item<double>());
  }
  // Not the unprofiled 1 (with the tutorial's small-variance branches and
  // input, Admin's omegas stay near 1 here: 0.99-1.01).
  EXPECT_GT(std::abs(rec.omega[1] - 1.0), 1e-3);
  EXPECT_GT(std::abs(rec.omega[5] - 1.0), 1e-3);
  // Post-LN has nothing to profile.
  RunConfig post = case_recipe("cases/de_en_tagger", {"model.d_model=64", "model.ffn_dim=128"});
  EXPECT_EQ(build_model(post.model, VocabInfo{100, 100, false})->initialize_from_batch(b), "");
}

// encoder_tagger_row_pe: the tutorial's sequence-first PositionalEncoding on
// batch-first input adds pe[b] to every position of row b. Checked with no
// layer (encode's output is the embedding sum) against the tutorial's formula
// written here, and by its consequence: a row's tokens carry no position.
TEST(Cases, RowPositionalEncodingIsTheSequenceFirstTableOnBatchFirstInput) {
  RunConfig a = case_recipe("cases/de_en_tagger_row_positions",
                            {"model.d_model=16", "model.ffn_dim=32", "model.heads=2",
                             "model.encoder_layers=0"});
  EXPECT_EQ(a.model.arch, "encoder_tagger_row_pe");
  EXPECT_EQ(a.data.max_tokens, 1024);
  torch::manual_seed(6);
  auto m = build_model(a.model, VocabInfo{50, 50, false});
  auto* t = dynamic_cast<EncoderTaggerRowPeImpl*>(m.get());
  ASSERT_NE(t, nullptr);
  m->eval();
  auto src = torch::tensor({{7, 8, 9, 10}, {11, 12, 13, 3}, {20, 21, 3, 0}}, torch::kLong);
  auto out = t->encode(src).out;
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 16}));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t p = 0; p < 4; ++p)
      for (int64_t i = 0; i < 8; ++i) {
        double ang = b / std::pow(10000.0, 2.0 * i / 16);  // the row index, not p
        double e0 = t->embed->weight[src[b][p].item<int64_t>()][2 * i].item<double>() * 4;
        double e1 = t->embed->weight[src[b][p].item<int64_t>()][2 * i + 1].item<double>() * 4;
        EXPECT_NEAR(out[b][p][2 * i].item<double>(), e0 + std::sin(ang), 1e-5);
        EXPECT_NEAR(out[b][p][2 * i + 1].item<double>(), e1 + std::cos(ang), 1e-5);
      }
  // With layers: reversing a row's tokens reverses its outputs (a bag of
  // words: no position), which the correct table does not do.
  auto with_layers = [&](const std::string& arch) {
    RunConfig c = case_recipe("cases/de_en_tagger", {"model.arch=" + arch, "model.d_model=16",
                                                     "model.ffn_dim=32", "model.heads=2"});
    torch::manual_seed(7);
    auto mm = build_model(c.model, VocabInfo{50, 50, false});
    mm->eval();
    auto x = torch::tensor({{7, 8, 9, 10}}, torch::kLong);
    auto y = mm->forward(x, x), yr = mm->forward(x.flip(1), x);
    return (y - yr.flip(1)).abs().max().item<double>();
  };
  EXPECT_LT(with_layers("encoder_tagger_row_pe"), 1e-4);
  EXPECT_GT(with_layers("encoder_tagger"), 1e-2);
}

// data.target_layout: source_aligned — the target token at each source
// position, padded or truncated to the source length, padding ignored.
TEST(Cases, SourceAlignedTargets) {
  test::TempDir d;
  test::write_text(d.file("c.src"), "a b c d\na b\n");
  test::write_text(d.file("c.tgt"), "x y\np q r s t\n");
  DataConfig cfg;
  cfg.dir = d.path();
  cfg.src_lang = "src";
  cfg.tgt_lang = "tgt";
  cfg.train = "c";
  cfg.tokenizer = "pretokenized";
  Vocabularies v = prepare_vocab(cfg, d.file("run"));
  ParallelCorpus c = load_parallel(cfg, "c", v, d.file("run/cache"), 0, 0);
  c.source_aligned = true;
  Batch b = c.make_batch({0, 1});
  ASSERT_EQ(b.tgt_out.sizes(), b.src.sizes());  // [2, 5]: 4 tokens + EOS
  auto id = [&](const char* w) { return static_cast<int64_t>(v.tgt->encode(w)[0]); };
  // Row 0: "x y" + EOS, then padding up to the source length 5.
  EXPECT_EQ(b.tgt_out[0][0].item<int64_t>(), id("x"));
  EXPECT_EQ(b.tgt_out[0][2].item<int64_t>(), kEos);
  EXPECT_EQ(b.tgt_out[0][3].item<int64_t>(), kPad);
  // Row 1: the source has 2 tokens + EOS: "p q r" (truncated), no EOS.
  EXPECT_EQ(b.tgt_out[1][2].item<int64_t>(), id("r"));
  EXPECT_EQ(b.tgt_out[1][3].item<int64_t>(), kPad);
  EXPECT_EQ(b.tgt_tokens, 3 + 3);
}

// Both cases train through the ordinary trainer: the toy on its fixed batch
// (epochs of fixed_updates_per_epoch updates, validation on the same batch,
// resume), the tagger on a copy corpus with source-aligned targets.
TEST(Cases, BothCasesTrainAndResume) {
  test::TempDir d;
  RunConfig b = case_recipe("cases/toy_loss_spikes",
                            {"train.max_updates=300", "data.fixed_updates_per_epoch=100",
                             "diag.interval=50"});
  {
    Trainer t(b, d.file("toy"));
    t.fit();
    EXPECT_EQ(t.state().update, 300);
    EXPECT_EQ(t.state().position.epoch, 3);  // 100 updates an epoch; stopped inside the third
    EXPECT_LT(t.validate().first, 0.05);      // the toy is learned
  }
  RunConfig more = b;
  more.train.max_updates = 350;
  Trainer r(more, d.file("toy"));
  r.fit();
  EXPECT_EQ(r.state().update, 350);
  test::write_copy_corpus(d.file("c"), 300, 20);
  RunConfig a = case_recipe("cases/de_en_tagger",
                            {"data.dir=" + d.file("c"), "data.src_lang=src", "data.tgt_lang=tgt",
                             "data.valid=valid", "data.test=valid", "data.tokenizer=pretokenized",
                             "data.max_tokens=512", "model.d_model=32", "model.ffn_dim=64",
                             "model.heads=4", "optim.lr=2", "schedule.warmup_updates=50",
                             "train.max_updates=150", "train.validate_interval=0",
                             "diag.interval=50", "train.threads=1"});
  Trainer t(a, d.file("tagger"));
  double before = (t.setup(), t.validate().first);
  t.fit();
  EXPECT_LT(t.validate().first, 0.5 * before);  // copying is learnable position by position
  // `clinic diagnose` on an encoder-only run: no decoder figures (it once
  // failed drawing the decoder's empty heatmap), with the per-layer norms of
  // its "layers.N" stack.
  std::string out;
  ASSERT_EQ(diagnose_into_report(d, "tagger", &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(d.file("report/dependency_encoder.png"))) << out;
  EXPECT_FALSE(std::filesystem::exists(d.file("report/dependency_decoder.png"))) << out;
  EXPECT_TRUE(std::filesystem::exists(d.file("report/layer_norms.png"))) << out;
  EXPECT_NE(out.find("tagger (encoder_tagger post_ln, 2 layers):"), std::string::npos) << out;
  auto diag = events(d, "tagger", "diag");
  EXPECT_EQ(diag.size(), 3u);  // updates 50, 100, 150
  for (const auto& j : diag) {
    ASSERT_TRUE(j.contains("encoder_layer_grad_norm")) << j.dump().substr(0, 200);
    EXPECT_EQ(j["encoder_layer_grad_norm"].size(), 2u);  // the recipe's 2 layers
  }
}

// The toy without its layer (scripts/cases.sh's no_layer setting): the output
// change is 0 at every probe, which a log axis cannot show; `clinic diagnose`
// once failed on it ("all points y value undefined") and now leaves that
// figure out and reports the rest.
TEST(Cases, DiagnoseReadsARunWithNoLayer) {
  test::TempDir d;
  RunConfig b = case_recipe("cases/toy_loss_spikes",
                            {"train.max_updates=100", "data.fixed_updates_per_epoch=100",
                             "diag.interval=50", "model.encoder_layers=0"});
  Trainer t(b, d.file("toy"));
  t.fit();
  ASSERT_EQ(t.state().update, 100);
  std::string out;
  ASSERT_EQ(diagnose_into_report(d, "toy", &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(d.file("report/report.md"))) << out;
  EXPECT_TRUE(std::filesystem::exists(d.file("report/curves.png"))) << out;
  EXPECT_FALSE(std::filesystem::exists(d.file("report/output_change.png"))) << out;
  EXPECT_NE(out.find("toy (causal_lm post_ln, 0 layers):"), std::string::npos) << out;
}

// Case B as the report's loop trained it (gradients never zeroed): loss
// spikes of >= 10 nats come, and clinic diagnose names the stale gradient;
// the same toy with zeroed gradients (the recipe's cure) stays at 0.
TEST(Cases, ToyWithoutZeroGradSpikesAndDiagnoseNamesIt) {
  test::TempDir d;
  auto spikes = [&](const std::string& run) {
    int64_t n = 0;
    for (const auto& j : events(d, run, "spike"))
      n += j.value("rule", "").find("abs") != std::string::npos;
    return n;
  };
  for (const char* zero : {"false", "true"}) {
    RunConfig b = case_recipe("cases/toy_loss_spikes_no_zero_grad",
                              {"train.max_updates=6000", "diag.interval=1000",
                               std::string("train.zero_grad=") + zero});
    Trainer t(b, d.file(std::string("toy-") + zero));
    t.fit();
  }
  EXPECT_GE(spikes("toy-false"), 3);
  EXPECT_EQ(spikes("toy-true"), 0);
  std::string out;
  ASSERT_EQ(diagnose_into_report(d, "toy-false", &out), 0) << out;
  EXPECT_NE(out.find("[stale_gradient] the loss was below 0.001 bits"), std::string::npos) << out;
  ASSERT_EQ(diagnose_into_report(d, "toy-true", &out), 0) << out;
  EXPECT_EQ(out.find("[stale_gradient]"), std::string::npos) << out;
}


// Case A with the gradients never zeroed (recipes/cases/de_en_tagger_no_zero_grad):
// the recipe is case A's with only the loop, the batch size and the budget
// changed; at test scale the carried run's Adam first moment matches its
// second (|m_hat| / |sqrt(v_hat)| ~ 1) and clinic diagnose names the stale
// gradient while the loss is far from 0; the zeroed twin's ratio stays lower.
TEST(Cases, TaggerWithoutZeroGradIsNamedByAdamsFirstMoment) {
  RunConfig spec = case_recipe("cases/de_en_tagger");
  RunConfig nzg = case_recipe("cases/de_en_tagger_no_zero_grad");
  EXPECT_FALSE(nzg.train.zero_grad);
  EXPECT_TRUE(spec.train.zero_grad);
  EXPECT_EQ(nzg.data.max_tokens, 1024);
  EXPECT_EQ(nzg.train.max_updates, 1000);
  EXPECT_EQ(nzg.model.arch, spec.model.arch);
  EXPECT_EQ(nzg.model.d_model, 512);
  EXPECT_EQ(nzg.model.encoder_layers, 2);
  EXPECT_EQ(nzg.data.vocab_size, spec.data.vocab_size);
  EXPECT_EQ(nzg.optim.lr, spec.optim.lr);
  EXPECT_EQ(nzg.schedule.warmup_updates, spec.schedule.warmup_updates);
  test::TempDir d;
  test::write_copy_corpus(d.file("c"), 300, 20);
  auto ratios = [&](const std::string& run) {
    std::vector<double> r;
    for (const auto& j : events(d, run, "diag")) r.push_back(j.value("adam_first_moment_ratio", -1.0));
    return r;
  };
  for (const char* zero : {"false", "true"}) {
    RunConfig a = case_recipe(
        "cases/de_en_tagger_no_zero_grad",
        {"data.dir=" + d.file("c"), "data.src_lang=src", "data.tgt_lang=tgt",
         "data.valid=valid", "data.test=valid", "data.tokenizer=pretokenized",
         "data.max_tokens=512", "model.d_model=32", "model.ffn_dim=64", "model.heads=4",
         "optim.lr=2", "schedule.warmup_updates=50", "train.max_updates=150",
         "train.validate_interval=0", "diag.interval=25", "train.threads=1",
         std::string("train.zero_grad=") + zero});
    Trainer t(a, d.file(std::string("tagger-") + zero));
    t.fit();
  }
  auto carried = ratios("tagger-false"), zeroed = ratios("tagger-true");
  ASSERT_EQ(carried.size(), 6u);
  ASSERT_EQ(zeroed.size(), 6u);
  for (size_t i = 1; i < carried.size(); ++i) EXPECT_GE(carried[i], 0.95) << "record " << i;
  EXPECT_LT(zeroed.back(), 0.9);
  std::string out;
  ASSERT_EQ(diagnose_into_report(d, "tagger-false", &out), 0) << out;
  EXPECT_NE(out.find("[stale_gradient] Adam's |m_hat| / |sqrt(v_hat)| was >= 0.95"),
            std::string::npos)
      << out;
  ASSERT_EQ(diagnose_into_report(d, "tagger-true", &out), 0) << out;
  EXPECT_EQ(out.find("[stale_gradient]"), std::string::npos) << out;
}

}  // namespace
}  // namespace clinic
