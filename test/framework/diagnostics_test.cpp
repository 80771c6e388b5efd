// Stability instruments (framework/diagnostics): each statistic against an
// independent computation.
#include <cmath>
#include <numeric>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>

#include "framework/data/text.h"
#include "framework/diagnostics/optimizer_state.h"
#include "framework/diagnostics/probe.h"
#include "framework/diagnostics/spikes.h"
#include "framework/diagnostics/tensorboard.h"
#include "framework/optim/radam.h"
#include "framework/optim/state_key.h"
#include "framework/train/trainer.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

RunConfig diag_config(const TempDir& d, const std::vector<std::string>& overrides) {
  test::write_copy_corpus(d.file("corpus"), 300, 40);
  return parse_recipe_text(test::copy_recipe(d.file("corpus")), "copy.yaml", overrides);
}

// The records of one event kind in a metrics.jsonl.
std::vector<std::string> event_lines(const std::string& metrics, const std::string& event) {
  std::vector<std::string> out;
  for (const auto& l : read_lines(metrics))
    if (l.find("\"event\": \"" + event + "\"") != std::string::npos) out.push_back(l);
  return out;
}

// A flat numeric array field of a JSON line ("key": [1, 2.5, ...]).
std::vector<double> json_array(const std::string& json, const std::string& key) {
  auto p = json.find("\"" + key + "\": [");
  EXPECT_NE(p, std::string::npos) << key;
  std::vector<double> out;
  if (p == std::string::npos) return out;
  std::istringstream in(json.substr(p + key.size() + 5));
  std::string tok;
  while (std::getline(in, tok, ',')) {
    auto end = tok.find(']');
    out.push_back(std::stod(tok.substr(0, end)));
    if (end != std::string::npos) break;
  }
  return out;
}

double json_value(const std::string& json, const std::string& key) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(json, m, std::regex("\"" + key + "\": ([-0-9.eE+]+)"))) << key;
  return m.empty() ? NAN : std::stod(m[1]);
}

TEST(Spikes, AbsoluteRuleCountsJumpsBetweenConsecutiveUpdates) {
  SpikeDetector s(10.0, 100, 10.0);
  std::vector<double> loss = {5, 4, 3, 0, 0, 0, 12, 0, 9.9, 0, 0, 400, 390, 0};
  std::vector<int> want_abs = {0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0};
  for (size_t i = 0; i < loss.size(); ++i)
    EXPECT_EQ(s.observe(loss[i]).abs, want_abs[i] == 1) << "step " << i;
  // Non-finite losses are never spikes and do not enter the window.
  EXPECT_FALSE(s.observe(NAN).any());
  EXPECT_EQ(s.state().back(), 0.0);
}

TEST(Spikes, RobustRuleUsesMedianAndMadWithAFloor) {
  SpikeDetector s(1000.0, 20, 10.0);  // absolute rule out of reach
  // A noisy plateau: median 2, MAD 0.1 -> threshold 2 + 10 * 0.148 = 3.48.
  const double plateau[5] = {1.8, 1.9, 2.0, 2.1, 2.2};
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(s.observe(plateau[i % 5]).any()) << i;
  EXPECT_FALSE(s.observe(3.4).robust);
  Spike sp = s.observe(3.6);
  EXPECT_TRUE(sp.robust);
  EXPECT_EQ(sp.rule(), "robust");
  // A loss sitting at exactly 0: MAD 0, the 0.01 floor keeps 0.05 quiet.
  SpikeDetector z(1000.0, 10, 10.0);
  for (int i = 0; i < 10; ++i) z.observe(0.0);
  EXPECT_FALSE(z.observe(0.05).any());
  EXPECT_TRUE(z.observe(0.2).robust);
  // The window survives a checkpoint.
  SpikeDetector r(1000.0, 10, 10.0);
  r.restore(z.state());
  EXPECT_EQ(r.state(), z.state());
  EXPECT_EQ(r.observe(0.3).robust, z.observe(0.3).robust);
}

// Constructed attention: a collapsed head (every query on key 2), a uniform
// head, and a head that attends to the query's own position.
TEST(Attention, StatisticsAndCollapseOnConstructedProbabilities) {
  const int64_t B = 2, H = 3, T = 4, S = 5;
  auto probs = torch::zeros({B, H, T, S});
  probs.select(1, 0).select(2, 2).fill_(1.0);   // head 0: all on key 2
  probs.select(1, 1).fill_(1.0 / S);            // head 1: uniform
  for (int64_t t = 0; t < T; ++t) probs.select(1, 2).select(1, t).select(1, t).fill_(1.0);
  auto keep = torch::ones({B, T}, torch::kBool);
  keep[1][3] = false;  // a padding query: ignored (it would attend elsewhere)
  probs[1][0][3].zero_();
  probs[1][0][3][4] = 1.0;
  std::vector<double> ent, mx, same;
  StabilityProbe::attention_stats(probs, keep, &ent, &mx, &same);
  EXPECT_NEAR(ent[0], 0.0, 1e-6);
  EXPECT_NEAR(ent[1], std::log(5.0), 1e-5);
  EXPECT_NEAR(ent[2], 0.0, 1e-6);
  EXPECT_NEAR(mx[0], 1.0, 1e-6);
  EXPECT_NEAR(mx[1], 0.2, 1e-6);
  EXPECT_NEAR(same[0], 1.0, 1e-6);   // collapsed
  EXPECT_NEAR(same[2], (1.0 / 4 + 1.0 / 3) / 2, 1e-6);  // one query per key
  // Only head 0 is flagged: the uniform head's argmax ties all pick key 0
  // (same-key share 1) but no key holds half the mass.
  EXPECT_NEAR(same[1], 1.0, 1e-6);
  std::vector<bool> flags;
  for (int h = 0; h < H; ++h) flags.push_back(StabilityProbe::collapsed(same[h], mx[h], 0.9));
  EXPECT_EQ(flags, (std::vector<bool>{true, false, false}));
}

TEST(TensorBoard, Crc32cMatchesKnownValues) {
  // RFC 3720 B.4 test vectors and the classic check value.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  std::string inc;
  for (int i = 0; i < 32; ++i) inc += static_cast<char>(i);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
}

std::string oracle_python() {
  return std::string(kBinDir) + "/../oracle-venv/bin/python";
}

// The real TensorBoard reader (the `tensorboard` package, installed by
// scripts/test.sh into build/oracle-venv) loads what clinic writes.
TEST(TensorBoard, RealReaderLoadsTrainingAndDiagScalars) {
  std::string out;
  if (test::run_shell(oracle_python() + " -c 'import tensorboard'", &out) != 0)
    GTEST_SKIP() << "no tensorboard oracle at " << oracle_python() << " (scripts/test.sh installs it)";
  TempDir d;
  Trainer t(diag_config(d, {"train.max_updates=6", "train.log_interval=2", "diag.interval=3"}),
            d.file("run"));
  t.fit();
  std::string script = d.file("read.py");
  test::write_text(script,
                   "import sys\n"
                   "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
                   "ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0}); ea.Reload()\n"
                   "for tag in ['train/loss', 'train/lr', 'diag/encoder_dependency/1', "
                   "'diag/decoder_output_change_update/6', 'diag/adam_eps_dominated']:\n"
                   "    print(tag, ' '.join('%d:%.9g' % (e.step, e.value) for e in ea.Scalars(tag)))\n");
  ASSERT_EQ(test::run_shell(oracle_python() + " " + script + " " + d.file("run/tensorboard"), &out), 0)
      << out;
  auto train = event_lines(d.file("run/metrics.jsonl"), "train");
  std::vector<std::string> lines;
  for (const auto& l : read_lines(d.file("run/metrics.jsonl")))
    if (l.rfind("{\"update\"", 0) == 0) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u);
  std::string want_loss = "train/loss";
  for (const auto& l : lines)
    want_loss += fmt::format(" {}:{:.9g}", static_cast<int>(json_value(l, "update")),
                             static_cast<float>(json_value(l, "loss")));
  EXPECT_NE(out.find(want_loss + "\n"), std::string::npos) << want_loss << "\n" << out;
  auto diag = event_lines(d.file("run/metrics.jsonl"), "diag");
  ASSERT_EQ(diag.size(), 2u);
  EXPECT_NE(out.find(fmt::format("diag/encoder_dependency/1 3:{:.9g} 6:{:.9g}",
                                 static_cast<float>(json_array(diag[0], "encoder_dependency")[1]),
                                 static_cast<float>(json_array(diag[1], "encoder_dependency")[1]))),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("diag/adam_eps_dominated 3:"), std::string::npos) << out;
}

// Dependency and output change against tools/golden/stability_golden.py, a
// plain PyTorch re-implementation run on the same weights (carried by
// TorchScript exports of W_t and W_{t+1}) and the same probe batch.
TEST(Instruments, DependencyAndOutputChangeMatchPython) {
  std::string out;
  if (test::run_shell("/usr/bin/python3 -c 'import torch'", &out) != 0)
    GTEST_SKIP() << "python3-torch not installed";
  for (const char* variant : {"post_ln", "pre_ln"}) {
    TempDir d;
    Trainer t(diag_config(d, {std::string("model.residual=") + variant, "diag.interval=1",
                              "diag.probe_sentences=5", "optim.lr=0.01",
                              "schedule.name=constant"}),
              d.file("run"));
    t.setup();
    auto batch = t.train_data().make_batch({0, 1, 2, 3, 4, 5});
    t.train_update({batch});  // update 1: W_0 -> W_1
    t.model().to_torchscript().save(d.file("w1.pt"));
    t.train_update({batch});  // update 2 is measured at W_1 -> W_2
    t.model().to_torchscript().save(d.file("w2.pt"));
    auto literal = [](const torch::Tensor& ids) {
      std::string s = "[";
      for (int64_t r = 0; r < ids.size(0); ++r) {
        s += r ? ", [" : "[";
        for (int64_t c = 0; c < ids.size(1); ++c)
          s += (c ? ", " : "") + std::to_string(ids[r][c].item<int64_t>());
        s += "]";
      }
      return s + "]";
    };
    const Batch& probe = t.instruments()->probe();
    std::string cmd = "/usr/bin/python3 " + std::string(kSourceDir) +
                      "/tools/golden/stability_golden.py " + variant + " " + d.file("w1.pt") + " " +
                      d.file("w2.pt") + " '" + literal(probe.src.cpu()) + "' '" +
                      literal(probe.tgt_in.cpu()) + "'";
    ASSERT_EQ(test::run_shell(cmd, &out), 0) << out;
    auto diag = event_lines(d.file("run/metrics.jsonl"), "diag");
    ASSERT_EQ(diag.size(), 2u);
    EXPECT_EQ(json_value(diag[1], "update"), 2);
    for (const char* stack : {"encoder", "decoder"}) {
      auto dep = json_array(diag[1], std::string(stack) + "_dependency");
      auto want_dep = json_array(out, std::string(stack) + "_dependency");
      ASSERT_EQ(dep.size(), want_dep.size()) << variant << " " << stack;
      for (size_t i = 0; i < dep.size(); ++i)
        EXPECT_NEAR(dep[i], want_dep[i], 1e-4) << variant << " " << stack << " sublayer " << i;
      auto ch = json_array(diag[1], std::string(stack) + "_output_change_update");
      auto want_ch = json_array(out, std::string(stack) + "_output_change");
      ASSERT_EQ(ch.size(), want_ch.size()) << variant << " " << stack;
      for (size_t i = 0; i < ch.size(); ++i)
        EXPECT_NEAR(ch[i], want_ch[i], 1e-3 * want_ch[i] + 1e-9)
            << variant << " " << stack << " depth " << i;
      EXPECT_GT(want_ch.back(), 0.0);
    }
  }
}

// Observe, never steer: parameters after training are bit-identical with the
// instruments off, every update, at the default interval, and without the
// section; the random perturbation is undone exactly.
TEST(Instruments, MeasuringDoesNotChangeTraining) {
  auto final_params = [](const std::vector<std::string>& o) {
    TempDir d;
    Trainer t(diag_config(d, o), d.file("run"));
    t.fit();
    std::vector<torch::Tensor> out;
    for (const auto& p : t.model().parameters()) out.push_back(p.detach().clone());
    return std::make_pair(out, event_lines(d.file("run/metrics.jsonl"), "diag").size());
  };
  auto [off, n_off] = final_params({"train.max_updates=12", "diag.interval=0"});
  EXPECT_EQ(n_off, 0u);
  for (auto o : std::vector<std::vector<std::string>>{
           {"train.max_updates=12", "diag.interval=1"},
           {"train.max_updates=12", "diag.interval=5", "diag.perturbation=0.5"},
           {"train.max_updates=12"}}) {
    auto [on, n_on] = final_params(o);
    ASSERT_EQ(on.size(), off.size());
    for (size_t i = 0; i < on.size(); ++i) EXPECT_TRUE(torch::equal(on[i], off[i])) << "tensor " << i;
    if (o.size() > 1) {
      EXPECT_GT(n_on, 0u);
    }
  }
}

// The random output change grows with the perturbation: ~100x for 10x delta
// at small delta (|F(W + delta) - F(W)|^2 is quadratic in delta).
TEST(Instruments, RandomOutputChangeIsQuadraticInThePerturbation) {
  std::vector<double> final_change;
  for (const char* eps : {"1e-4", "1e-3"}) {
    TempDir d;
    Trainer t(diag_config(d, {"train.max_updates=1", "diag.interval=1",
                              std::string("diag.perturbation=") + eps}),
              d.file("run"));
    t.fit();
    auto diag = event_lines(d.file("run/metrics.jsonl"), "diag");
    ASSERT_EQ(diag.size(), 1u);
    final_change.push_back(json_array(diag[0], "decoder_output_change_random").back());
  }
  ASSERT_GT(final_change[0], 0.0);
  EXPECT_NEAR(final_change[1] / final_change[0], 100.0, 5.0);
}

// A resumed run measures the same probe sentences and continues the same
// series: its diag records equal those of an uninterrupted run.
TEST(Instruments, ResumeContinuesTheProbeBatchAndSeries) {
  TempDir d;
  RunConfig cfg = diag_config(d, {"train.max_updates=8", "diag.interval=2"});
  {
    Trainer t(cfg, d.file("straight"));
    t.fit();
  }
  RunConfig half = cfg;
  half.train.max_updates = 5;
  {
    Trainer t(half, d.file("resumed"));
    t.fit();
  }
  {
    Trainer t(cfg, d.file("resumed"));
    t.fit();
  }
  auto a = event_lines(d.file("straight/metrics.jsonl"), "diag");
  auto b = event_lines(d.file("resumed/metrics.jsonl"), "diag");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "record " << i;
}

TEST(Instruments, PerLayerNormsSumTheLayersTensors) {
  auto l = per_layer_norms({"encoder_embed.weight", "encoder_layers.0.ffn.fc1.weight",
                            "encoder_layers.0.ffn.fc1.bias", "encoder_layers.1.ffn.fc2.weight",
                            "decoder_layers.2.self_attn.in_proj_weight", "decoder_norm.weight"},
                           {7.0, 3.0, 4.0, 2.0, 1.5, 9.0});
  EXPECT_EQ(l["encoder"], (std::vector<double>{5.0, 2.0}));  // sqrt(9 + 16), embeddings skipped
  EXPECT_EQ(l["decoder"], (std::vector<double>{0.0, 0.0, 1.5}));
  // An encoder-only model's one stack ("layers.<i>."), not "head" or "tokens".
  auto e = per_layer_norms({"tokens.weight", "layers.1.ffn.fc1.weight", "layers.1.ffn.fc1.bias",
                            "head.weight", "sublayers.0.x"},
                           {1.0, 6.0, 8.0, 2.0, 3.0});
  EXPECT_EQ(e.size(), 1u);
  EXPECT_EQ(e["encoder"], (std::vector<double>{0.0, 10.0}));
}

// Logit margins: logit[target] minus the largest other logit, by hand.
TEST(Instruments, LogitMarginsOnConstructedLogits) {
  auto logits = torch::tensor({1.0f, 3.0f, 2.0f, 5.0f, -1.0f, 0.0f, 0.5f, 0.5f, -2.0f}).view({3, 3});
  auto m = logit_margins(logits, torch::tensor({1, 0, 2}));
  EXPECT_FLOAT_EQ(m[0].item<float>(), 1.0f);   // 3 - 2
  EXPECT_FLOAT_EQ(m[1].item<float>(), 5.0f);   // 5 - 0
  EXPECT_FLOAT_EQ(m[2].item<float>(), -2.5f);  // -2 - 0.5: wrong by 2.5
}

// diag.probe_sentences beyond the validation set (40 lines here): the probe
// is the whole set, each line once, and the log says so.
TEST(Instruments, ProbeLargerThanTheValidationSetTakesAllOfItAndSaysSo) {
  TempDir d;
  Trainer t(diag_config(d, {"diag.interval=1", "diag.probe_sentences=4096", "train.max_updates=1"}),
            d.file("run"));
  t.fit();
  const Batch& probe = t.instruments()->probe();
  ASSERT_EQ(probe.src.size(0), 40);
  auto rows = choose_probe_rows(40, 4096, 7);
  std::vector<int64_t> all(40);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(rows, all);
  EXPECT_NE(read_file(d.file("run/train.log"))
                .find("on 40 probe sentences (diag.probe_sentences = 4096; the validation set has 40)"),
            std::string::npos)
      << read_file(d.file("run/train.log"));
}

// The diag record's margin quantiles against the model's full logits
// (decode(), not the split-off projection the probe uses), sorted by hand.
TEST(Instruments, LogitMarginQuantilesMatchTheModelsLogits) {
  TempDir d;
  Trainer t(diag_config(d, {"diag.interval=1", "diag.probe_sentences=5"}), d.file("run"));
  t.setup();
  const Batch& probe = t.instruments()->probe();
  std::vector<double> margins;
  {
    torch::NoGradGuard g;
    t.model().eval();
    auto logits = t.model().decode(probe.tgt_in, t.model().encode(probe.src));
    t.model().train();
    for (int64_t b = 0; b < probe.tgt_in.size(0); ++b)
      for (int64_t i = 0; i < probe.tgt_in.size(1); ++i) {
        if (probe.tgt_in[b][i].item<int64_t>() == kPad) continue;
        int64_t y = probe.tgt_out[b][i].item<int64_t>();
        double best_other = -1e300;
        for (int64_t v = 0; v < logits.size(2); ++v)
          if (v != y) best_other = std::max(best_other, logits[b][i][v].item<double>());
        margins.push_back(logits[b][i][y].item<double>() - best_other);
      }
  }
  std::sort(margins.begin(), margins.end());
  auto quantile = [&](double p) {  // linear interpolation between order statistics
    double pos = p * (margins.size() - 1);
    size_t lo = static_cast<size_t>(std::floor(pos));
    size_t hi = std::min(lo + 1, margins.size() - 1);
    return margins[lo] + (pos - lo) * (margins[hi] - margins[lo]);
  };
  t.train_update({t.train_data().make_batch({0, 1, 2, 3})});  // measured before this step
  auto diag = event_lines(d.file("run/metrics.jsonl"), "diag");
  ASSERT_EQ(diag.size(), 1u);
  auto q = json_array(diag[0], "logit_margin_quantiles");
  ASSERT_EQ(q.size(), 5u);
  std::vector<double> ps = {0.0, 0.1, 0.5, 0.9, 1.0};
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(q[i], quantile(ps[i]), 1e-4) << "quantile " << ps[i];
  EXPECT_LT(q[0], q[4]);
}

// The source-swap probe against the model's full logits (decode(), not the
// probe's split-off projection): the probe tokens' mean NLL in bits with
// their own sources and with the sources rotated by one row, log-sum-exp by
// hand.
TEST(Instruments, SourceSwapLossMatchesTheModelsLoss) {
  TempDir d;
  Trainer t(diag_config(d, {"diag.interval=1", "diag.probe_sentences=5"}), d.file("run"));
  t.setup();
  ASSERT_TRUE(t.model().conditions_on_source());
  const Batch& probe = t.instruments()->probe();
  ASSERT_GE(probe.src.size(0), 2);
  auto mean_nll_bits = [&](const torch::Tensor& src) {
    torch::NoGradGuard g;
    t.model().eval();
    auto logits = t.model().decode(probe.tgt_in, t.model().encode(src)).to(torch::kDouble);
    t.model().train();
    double sum = 0;
    int64_t n = 0;
    for (int64_t b = 0; b < probe.tgt_in.size(0); ++b)
      for (int64_t i = 0; i < probe.tgt_in.size(1); ++i) {
        if (probe.tgt_in[b][i].item<int64_t>() == kPad) continue;
        double mx = -1e300, z = 0;
        for (int64_t v = 0; v < logits.size(2); ++v) mx = std::max(mx, logits[b][i][v].item<double>());
        for (int64_t v = 0; v < logits.size(2); ++v) z += std::exp(logits[b][i][v].item<double>() - mx);
        sum += mx + std::log(z) - logits[b][i][probe.tgt_out[b][i].item<int64_t>()].item<double>();
        ++n;
      }
    return sum / n / std::log(2.0);
  };
  // Row b read against row b-1's source (row 0 against the last row's).
  std::vector<torch::Tensor> rows;
  const int64_t B = probe.src.size(0);
  for (int64_t b = 0; b < B; ++b) rows.push_back(probe.src[(b + B - 1) % B]);
  const double own = mean_nll_bits(probe.src), swapped = mean_nll_bits(torch::stack(rows));
  t.train_update({t.train_data().make_batch({0, 1, 2, 3})});  // measured before this step
  auto diag = event_lines(d.file("run/metrics.jsonl"), "diag");
  ASSERT_EQ(diag.size(), 1u);
  EXPECT_NEAR(json_value(diag[0], "probe_nll"), own, 1e-4);
  EXPECT_NEAR(json_value(diag[0], "probe_nll_rotated_source"), swapped, 1e-4);
  EXPECT_GT(std::abs(swapped - own), 1e-6);  // an encoder-decoder reads its source
}

// Second moments against eps, on an Adam state set by hand.
TEST(Instruments, SecondMomentSummaryAgainstEps) {
  auto p = torch::zeros({1000}, torch::requires_grad());
  torch::optim::Adam adam({p}, torch::optim::AdamOptions(0.1).betas({0.9, 0.99}).eps(1e-6));
  p.mutable_grad() = torch::ones({1000});
  adam.step();  // creates the state, step 1
  auto key = optim_state_key(p);
  auto& st = static_cast<torch::optim::AdamParamState&>(*adam.state().at(key));
  // sqrt(v / (1 - 0.99)) = i * 1e-8, i = 0..999: 100 entries below eps = 1e-6.
  st.exp_avg_sq(torch::arange(1000, torch::kFloat).mul(1e-8).pow(2).mul(0.01));
  auto s = summarize_second_moments(adam, {p});
  ASSERT_TRUE(s.available);
  EXPECT_DOUBLE_EQ(s.eps, 1e-6);
  EXPECT_NEAR(s.eps_dominated, 0.1, 1e-9);
  ASSERT_EQ(s.sqrt_v_quantiles.size(), 5u);
  EXPECT_NEAR(s.sqrt_v_quantiles[2], 500e-8, 2e-8);  // median
  EXPECT_NEAR(s.sqrt_v_quantiles[4], 989e-8, 2e-8);  // 99 %
}

// |m_hat| / |sqrt(v_hat)| against the moments recomputed by hand: a gradient
// that never changes gives exactly 1 (Adam and clinic's RAdam), one that
// flips sign every update gives the ratio of the two bias-corrected EMAs.
TEST(Instruments, FirstMomentRatioIsOneForAGradientThatNeverChanges) {
  auto g = torch::linspace(-2, 3, 64);
  for (int kind = 0; kind < 2; ++kind) {
    auto p = torch::zeros({64}, torch::requires_grad());
    std::unique_ptr<torch::optim::Optimizer> opt;
    if (kind == 0)
      opt = std::make_unique<torch::optim::Adam>(
          std::vector<torch::Tensor>{p}, torch::optim::AdamOptions(1e-3).betas({0.9, 0.98}));
    else
      opt = std::make_unique<RAdam>(std::vector<torch::Tensor>{p},
                                    RAdamOptions(1e-3).betas({0.9, 0.98}));
    for (int t = 0; t < 7; ++t) {
      p.mutable_grad() = g.clone();
      opt->step();
    }
    EXPECT_NEAR(summarize_second_moments(*opt, {p}).first_moment_ratio, 1.0, 1e-5) << kind;
  }
  // +g, -g, +g, ...: m_t = sum_k (1-b1) b1^(t-k) (-1)^(k+1) g, v_t = (1-b2^t) g^2.
  auto p = torch::zeros({64}, torch::requires_grad());
  torch::optim::Adam adam({p}, torch::optim::AdamOptions(1e-3).betas({0.9, 0.98}));
  double m = 0, v = 0;
  const int steps = 9;
  for (int t = 1; t <= steps; ++t) {
    double sign = t % 2 ? 1.0 : -1.0;
    p.mutable_grad() = g * sign;
    adam.step();
    m = 0.9 * m + 0.1 * sign;
    v = 0.98 * v + 0.02;
  }
  double expected = std::abs(m / (1 - std::pow(0.9, steps))) / std::sqrt(v / (1 - std::pow(0.98, steps)));
  auto s = summarize_second_moments(adam, {p});
  EXPECT_NEAR(s.first_moment_ratio, expected, 1e-5);
  EXPECT_LT(s.first_moment_ratio, 0.5);
}

}  // namespace
}  // namespace clinic
