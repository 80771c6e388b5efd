// clinic diagnose / analyze: the rules on synthetic metrics, the report on a
// real diverging run, the growth fit on known curves.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <tuple>

#include "framework/data/text.h"
#include "framework/diagnostics/analysis.h"
#include "framework/report/diagnosis.h"
#include "framework/report/report.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

// A run dir whose metrics.jsonl holds `lines`.
RunData synthetic(const TempDir& d, const std::vector<std::string>& lines) {
  std::filesystem::create_directories(d.file("run"));
  std::string text;
  for (auto l : lines) {  // one record per line, whatever the literal's layout
    std::replace(l.begin(), l.end(), '\n', ' ');
    text += l + "\n";
  }
  test::write_text(d.file("run/metrics.jsonl"), text);
  return read_run(d.file("run"));
}

const Finding& rule(const std::vector<Finding>& fs, const std::string& name) {
  for (const auto& f : fs)
    if (f.rule == name) return f;
  throw std::runtime_error("no rule " + name);
}

// `text` holds `part` (on failure the message shows the whole text).
void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing: " << part << "\nin: " << text;
}

std::string array(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + fmt::format("{}", v[i]);
  return s + "]";
}

TEST(Diagnose, HealthyRunFiresNothing) {
  TempDir d;
  std::vector<double> pre_ln_dep;  // Pre-LN: beta_ii ~ 1/sqrt(i + 1)
  for (int i = 1; i <= 36; ++i) pre_ln_dep.push_back(1 / std::sqrt(i + 1.0));
  auto run = synthetic(d, {
      R"j({"update": 10, "loss": 8.0, "loss_scale": 1, "skipped": 0})j",
      R"j({"update": 20, "loss": 7.5, "loss_scale": 1, "skipped": 0})j",
      R"j({"event": "diag", "update": 20, "encoder_dependency": )j" + array(pre_ln_dep) +
          R"j(, "encoder_layer_grad_norm": [0.5, 0.4, 0.6], "attn_collapsed_heads": 0, "adam_eps": 1e-8, "adam_eps_dominated": 0.01,
             "encoder_attn_sublayer": [0], "encoder_attn_same_key": [[1.0, 0.3]], "encoder_attn_max_prob": [[0.62, 0.3]],
             "encoder_attn_entropy": [[1.4, 2.0]]})j",
      R"j({"update": 30, "loss": 7.4, "loss_scale": 1, "skipped": 0})j"});
  for (const auto& f : diagnose(run)) {
    EXPECT_FALSE(f.fired) << f.rule << ": " << f.summary;
    EXPECT_FALSE(f.checked.empty()) << f.rule;
  }
  EXPECT_NEAR(amplification_index(run.diag[0], "encoder"),
              [&] {
                double s = 0;
                for (double b : pre_ln_dep) s += b * b;
                return s / (1 + std::log(36.0));
              }(),
              1e-12);
}

TEST(Diagnose, EveryRuleFiresOnItsEvidence) {
  TempDir d;
  std::vector<double> post_ln_dep(36, 0.9);
  auto run = synthetic(d, {
      R"j({"update": 10, "loss": 8.0, "loss_scale": 1, "skipped": 0})j",
      R"j({"event": "diag", "update": 10, "encoder_dependency": )j" + array(post_ln_dep) +
          R"j(, "encoder_layer_grad_norm": [1e-5, 0.1, 1.0], "attn_collapsed_heads": 1,
             "encoder_kind": ["self_attn", "ffn", "self_attn", "ffn"], "encoder_layer": [0, 0, 1, 1],
             "encoder_attn_sublayer": [0, 2], "encoder_attn_collapsed": [[0, 0], [0, 1]],
             "encoder_attn_entropy": [[1.2, 1.3], [0.9, 0.021]], "encoder_attn_same_key": [[0.2, 0.3], [0.4, 0.97]],
             "encoder_attn_max_prob": [[0.3, 0.4], [0.5, 0.995]],
             "adam_eps": 1e-8, "adam_eps_dominated": 0.8, "logit_margin_quantiles": [-0.5, 0.2, 3.25, 9, 27.5]})j",
      R"j({"update": 20, "loss": 7.0, "loss_scale": 0.5, "skipped": 3})j",
      R"j({"event": "spike", "update": 24, "loss": 19.5, "prev_loss": 7.1, "jump": 12.4, "rule": "abs+robust"})j",
      R"j({"update": 30, "loss": 9.5, "loss_scale": 1, "skipped": 0})j",
      R"j({"event": "nonfinite", "update": 33, "where": "decoder layer 3 ffn output f(x)"})j",
      R"j({"update": 40, "loss": "nan", "loss_scale": 1, "skipped": 1})j"});
  auto fs = diagnose(run);
  EXPECT_NE(rule(fs, "divergence").summary.find("diverged at update 30"), std::string::npos)
      << rule(fs, "divergence").summary;
  const auto& amp = rule(fs, "amplification");
  ASSERT_TRUE(amp.fired);
  // 36 * 0.81 = 29.16 over 1 + ln 36 = 4.58: x6.4.
  EXPECT_NE(amp.summary.find("sum beta_ii^2 = 29.2 over 36 sublayers, x6.4"), std::string::npos)
      << amp.summary;
  EXPECT_NE(amp.cure.find("model.residual: admin"), std::string::npos);
  const auto& van = rule(fs, "vanishing_gradient");
  ASSERT_TRUE(van.fired);
  EXPECT_NE(van.summary.find("encoder layer 1 gradient norm 1e-05 is 1e+05x smaller"),
            std::string::npos)
      << van.summary;
  const auto& col = rule(fs, "attention_collapse");
  ASSERT_TRUE(col.fired);
  EXPECT_NE(col.summary.find("attention of encoder layer 2 (self_attn) collapsed at update 10: "
                             "head 1 has entropy 0.021 nats and 97 % of its queries on one key, "
                             "20 updates before the loss rose (update 30)"),
            std::string::npos)
      << col.summary;
  const auto& sp = rule(fs, "loss_spikes");
  ASSERT_TRUE(sp.fired);
  EXPECT_NE(sp.summary.find("the largest +12.4 bits; before them Adam's sqrt(v) was below eps "
                            "for 80-80 % of entries"),
            std::string::npos)
      << sp.summary;
  EXPECT_NE(sp.cure.find("raise optim.eps"), std::string::npos) << sp.cure;
  EXPECT_NE(sp.summary.find("at update 10 the probe tokens' logit margins were -0.5 / 3.25 / 27.5 "
                            "nats (min / median / max)"),
            std::string::npos)
      << sp.summary;
  EXPECT_TRUE(rule(fs, "eps_dominated").fired);
  EXPECT_NE(rule(fs, "eps_dominated").summary.find("margins were -0.5 / 3.25 / 27.5"),
            std::string::npos);
  EXPECT_NE(rule(fs, "nonfinite").summary.find("first non-finite value at decoder layer 3 ffn"),
            std::string::npos);
  EXPECT_TRUE(rule(fs, "loss_scale").fired);
  EXPECT_TRUE(fs.front().fired);  // fired rules come first
  // Label smoothing is suggested only to a run that does not smooth already.
  EXPECT_NE(rule(fs, "eps_dominated").cure.find("train.label_smoothing)"), std::string::npos);
  run.label_smoothing = 0.1;
  auto smoothed = diagnose(run);
  EXPECT_EQ(rule(smoothed, "eps_dominated").cure,
            "raise optim.eps (train.label_smoothing = 0.1 already keeps the loss off 0)");
  EXPECT_EQ(rule(smoothed, "loss_spikes").cure.find("or keep the loss off 0"), std::string::npos)
      << rule(smoothed, "loss_spikes").cure;
}

// Post-LN 18+18 at Adam 3e-3 (docs/analysis.md §2): the training loss stays
// near 8.8 bits while the validation loss climbs from 9.1 to 13. The margin is
// max(1 bit, 20 % of the minimum): from a minimum of 9.11 that is 1.822 bits.
TEST(Diagnose, DivergenceOfTheValidationLossWhileTheTrainingLossHolds) {
  auto run_with = [](const TempDir& d, const std::string& risen) {
    return synthetic(d, {
        R"j({"update": 100, "loss": 9.1, "loss_scale": 1, "skipped": 0})j",
        R"j({"event": "valid", "update": 100, "valid_loss": 9.15})j",
        R"j({"event": "valid", "update": 124, "valid_loss": 9.11})j",
        R"j({"update": 150, "loss": 8.7, "loss_scale": 1, "skipped": 0})j",
        R"j({"event": "valid", "update": 150, "valid_loss": 9.13})j",
        R"j({"update": 186, "loss": 8.8, "loss_scale": 1, "skipped": 0})j",
        R"j({"event": "valid", "update": 186, "valid_loss": )j" + risen + "}",
        R"j({"event": "valid", "update": 200, "valid_loss": 13.06})j"});
  };
  {
    TempDir d;  // 11.10 - 9.11 = 1.99 >= 1.822
    const auto fs = diagnose(run_with(d, "11.10"));
    const Finding f = rule(fs, "divergence");
    ASSERT_TRUE(f.fired);
    expect_contains(f.summary, "validation loss diverged at update 186: it rose from its minimum "
                               "9.110 bits (update 124) to 11.100");
    expect_contains(f.summary, "(last 8.800 bits)");
    EXPECT_EQ(divergence_update(run_with(d, "11.10")), -1);  // the training loss held
  }
  {
    TempDir d;  // 10.9 - 9.11 = 1.79: above 1 bit, below 20 %: the next record fires
    const Finding f = rule(diagnose(run_with(d, "10.9")), "divergence");
    ASSERT_TRUE(f.fired);
    expect_contains(f.summary, "diverged at update 200: it rose from its minimum 9.110 bits "
                               "(update 124) to 13.060");
  }
  {
    TempDir d;  // a non-finite validation loss is a divergence at once
    const Finding f = rule(diagnose(run_with(d, R"("nan")")), "divergence");
    ASSERT_TRUE(f.fired);
    expect_contains(f.summary, "validation loss diverged at update 186");
  }
  {
    TempDir d;  // all within the margin: checked, nothing found
    auto run = synthetic(d, {R"j({"update": 100, "loss": 9.1, "loss_scale": 1, "skipped": 0})j",
                             R"j({"event": "valid", "update": 100, "valid_loss": 9.15})j",
                             R"j({"event": "valid", "update": 200, "valid_loss": 10.9})j"});
    const Finding f = rule(diagnose(run), "divergence");
    EXPECT_FALSE(f.fired) << f.summary;
    expect_contains(f.checked, "neither the training nor the validation loss");
  }
}

// A run resumed from its epoch-8 checkpoint (update 1024) logged updates
// 1025-1125 twice, and the first record after the resume averaged one
// update (3.546 bits against 4.533 for the same update's 25): diagnose said
// "diverged at update 1050" (docs/results.md §1.1, Admin seed 1; these are
// that run's losses). The resumed session's records are kept, the short one
// sets no minimum; in files that say how many updates a record averages and
// in older ones alike. A low record that is not short still counts.
TEST(Diagnose, AResumedRunKeepsItsLatestRecordsAndNoShortOneIsItsBest) {
  auto lines = [](bool with_counts, bool resumed) {
    auto rec = [&](int u, double loss, int n) {
      return fmt::format(R"j({{"update": {}, "loss": {}, "loss_scale": 1, "skipped": 0{}}})j", u,
                         loss, with_counts ? fmt::format(", \"updates\": {}", n) : "");
    };
    std::vector<std::string> v = {rec(975, 4.435, 25), rec(1000, 4.536, 25)};
    if (resumed)
      for (auto [u, l] : std::vector<std::pair<int, double>>{
               {1025, 4.533}, {1050, 4.55}, {1075, 4.381}, {1100, 4.363}, {1125, 4.299}})
        v.push_back(rec(u, l, 25));
    v.push_back(rec(1025, 3.546, resumed ? 1 : 25));
    for (auto [u, l] : std::vector<std::pair<int, double>>{
             {1050, 4.55}, {1075, 4.381}, {1100, 4.363}, {1125, 4.299}, {1150, 4.241}})
      v.push_back(rec(u, l, 25));
    return v;
  };
  for (bool with_counts : {true, false}) {
    TempDir d;
    RunData run = synthetic(d, lines(with_counts, true));
    EXPECT_EQ(run.resumes, 1);
    ASSERT_EQ(run.train.size(), 8u);  // 975, 1000, then the resumed session's six
    std::vector<int64_t> updates;
    for (const auto& j : run.train) updates.push_back(j["update"].get<int64_t>());
    EXPECT_EQ(updates, (std::vector<int64_t>{975, 1000, 1025, 1050, 1075, 1100, 1125, 1150}));
    EXPECT_TRUE(is_short_record(run.train[2]));
    EXPECT_FALSE(is_short_record(run.train[3]));
    EXPECT_EQ(divergence_update(run), -1) << "counts in the file: " << with_counts;
    EXPECT_FALSE(rule(diagnose(run), "divergence").fired);
  }
  {
    TempDir d;  // the report says so
    synthetic(d, lines(true, true));
    std::string out;
    ASSERT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + d.file("run") + " --out " +
                                  d.file("report"),
                              &out),
              0)
        << out;
    expect_contains(read_file(d.file("report/report.md")),
                    "8 training records, 0 validations, 0 measurements, 0 spikes, 0 non-finite "
                    "updates; resumed 1 time (the updates logged twice");
  }
  {
    TempDir d;  // the same 3.546 as a 25-update record, no resume: a rise of 1.004 bits fires
    RunData run = synthetic(d, lines(true, false));
    EXPECT_EQ(run.resumes, 0);
    EXPECT_FALSE(is_short_record(run.train[2]));
    EXPECT_EQ(divergence_update(run), 1050);
  }
}

// Case B's signature (docs/cases.md): the loss is ~0 but the gradient keeps
// its starting size, which no cross-entropy gradient of that loss can have.
TEST(Diagnose, StaleGradientFiresWhenTheGradientOutlivesItsLoss) {
  auto records = [](double g_at_zero) {
    std::vector<std::string> r;
    for (int u = 1; u <= 5; ++u)  // the start: grad norms 2, 3, 4, 3, 3 (median 3)
      r.push_back(fmt::format(R"j({{"update": {}, "loss": {}, "grad_norm": {}}})j", 10 * u,
                              1.0 / u, u == 1 ? 2 : u == 3 ? 4 : 3));
    for (int u = 6; u <= 9; ++u)
      r.push_back(fmt::format(R"j({{"update": {}, "loss": {}, "grad_norm": {}}})j", 10 * u,
                              u == 7 ? 2e-3 : 1e-9, g_at_zero));
    r.push_back(R"j({"event": "spike", "update": 85, "loss": 30, "prev_loss": 0, "jump": 30, "rule": "abs+robust"})j");
    return r;
  };
  TempDir d;
  auto fs = diagnose(synthetic(d, records(1.0)));
  const auto& st = rule(fs, "stale_gradient");
  ASSERT_TRUE(st.fired);
  expect_contains(st.summary, "the loss was below 0.001 bits in 3 of 9 logged intervals (from "
                              "update 60), yet the gradient norm there stayed at 1 (median; 3 "
                              "over the first logged updates)");
  expect_contains(st.cure, "train.zero_grad: true");
  EXPECT_NE(rule(fs, "loss_spikes").cure.find("see stale_gradient"), std::string::npos);
  // The threshold is 0.1 of the start's median, 0.3: a gradient norm of
  // 0.29 at the ~0 losses counts as vanished, 0.31 as stale.
  TempDir e;
  auto healthy = diagnose(synthetic(e, records(0.29)));
  EXPECT_FALSE(rule(healthy, "stale_gradient").fired);
  EXPECT_EQ(rule(healthy, "stale_gradient").checked,
            "stale gradients: at a loss below 0.001 bits the gradient norm fell to 0.29 (3 at "
            "the start); no Adam first-moment ratio recorded");
  EXPECT_EQ(rule(healthy, "loss_spikes").cure.find("stale_gradient"), std::string::npos);
  TempDir f;
  EXPECT_TRUE(rule(diagnose(synthetic(f, records(0.31))), "stale_gradient").fired);
}

// source_ignored: the probe's loss with swapped sources minus with its own,
// in the last diag record, against the threshold, once the loss has fallen.
TEST(Diagnose, SourceIgnoredWhenSwappingTheSourcesCostsNothing) {
  // (update, probe_nll, probe_nll_rotated_source) per diag record, plus an
  // encoder whose first layer gets `enc_ratio` of its largest layer's gradient.
  auto records = [](const std::vector<std::array<double, 3>>& p, double enc_ratio) {
    std::vector<std::string> r;
    for (const auto& [u, own, swapped] : p) {
      r.push_back(fmt::format(R"j({{"update": {}, "loss": {}, "grad_norm": 1}})j", u, own));
      r.push_back(fmt::format(
          R"j({{"event": "diag", "update": {}, "probe_nll": {}, "probe_nll_rotated_source": {}, "encoder_layer_grad_norm": [{}, 1, 0.5]}})j",
          u, own, swapped, enc_ratio));
    }
    return r;
  };
  // Used its source (gain 0.8 bits at 200), then stopped: 0.03 bits at 400.
  TempDir d;
  const Finding lm = rule(diagnose(synthetic(d, records({{0, 13.0, 13.0}, {200, 8.0, 8.8},
                                                          {400, 6.5, 6.53}}, 1e-4))),
                          "source_ignored");
  ASSERT_TRUE(lm.fired);
  expect_contains(lm.summary, "the model ignores its source at update 400: the probe sentences' "
                              "loss is 6.50 bits with their own sources and 6.53");
  expect_contains(lm.summary, "gain +0.030 bits; threshold 0.1; the largest gain in the run "
                              "+0.800 at update 200), while the loss fell 6.5 bits from update 0");
  // Its encoder's first layer starves (1e-4 of the largest): the encoder is named.
  expect_contains(lm.cure, "the encoder barely learns");
  expect_contains(lm.cure, "model.encoder_residual: admin | pre_ln");
  // A healthy encoder: the data is the first suspect.
  TempDir e;
  expect_contains(rule(diagnose(synthetic(e, records({{0, 13.0, 13.0}, {400, 6.5, 6.53}}, 0.5))),
                       "source_ignored")
                      .cure,
                  "aligned line by line");
  // Swapping costs 0.5 bits: the source is used.
  TempDir f;
  const Finding used = rule(
      diagnose(synthetic(f, records({{0, 13.0, 13.0}, {400, 6.5, 7.0}}, 1e-4))), "source_ignored");
  EXPECT_FALSE(used.fired);
  expect_contains(used.checked, "swapping the probe sentences' sources costs +0.500 bits at "
                                "update 400 (threshold 0.1; the loss fell 6.5 bits since update 0)");
  // A loss that rose (Post-LN 18+18 at Adam 3e-3) is said so, not "fell -3.6".
  TempDir r;
  expect_contains(
      rule(diagnose(synthetic(r, records({{50, 9.0, 9.0}, {300, 12.6, 12.6}}, 1e-4))),
           "source_ignored")
          .checked,
      "costs +0.000 bits at update 300 (threshold 0.1; the loss rose 3.6 bits since update 50)");
  // Nothing learned yet (the loss fell 1 bit): too early to say.
  TempDir g;
  EXPECT_FALSE(rule(diagnose(synthetic(g, records({{0, 13.0, 13.0}, {20, 12.0, 12.0}}, 1e-4))),
                    "source_ignored")
                   .fired);
  // Not measured (an encoder-only model, or an older run).
  TempDir h;
  expect_contains(rule(diagnose(synthetic(h, {R"j({"update": 10, "loss": 5, "grad_norm": 1})j"})),
                       "source_ignored")
                      .checked,
                  "source use: not measured");
}

// End to end: a copy task whose sentences are runs of consecutive words
// ("w5 w6 w7"), so a target-side language model alone learns most of it, once
// aligned and once with each target paired with the next sentence's source (a
// misaligned corpus). The misaligned model cannot use its source: the
// instruments' source swap costs it nothing and the rule fires; the aligned
// one pays bits for the swap.
TEST(Diagnose, SourceIgnoredOnAMisalignedCorpus) {
  TempDir d;
  std::vector<std::string> lines;
  uint64_t x = 5;
  auto next = [&] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % 1000000);
  };
  for (int i = 0; i < 320; ++i) {
    int k = next() % 12, len = 2 + next() % 6;
    std::string line;
    for (int j = 0; j < len; ++j) line += (j ? " w" : "w") + std::to_string((k + j) % 12);
    lines.push_back(line);
  }
  for (const char* dir : {"aligned", "misaligned"}) {
    const bool rotate = std::string(dir) == "misaligned";
    std::filesystem::create_directories(d.file(dir));
    for (auto [split, from, to] : {std::tuple<const char*, int, int>{"train", 0, 300},
                                   {"valid", 300, 320}}) {
      std::string src, tgt;
      for (int i = from; i < to; ++i) {
        src += lines[i] + "\n";
        tgt += lines[rotate ? from + (i - from + 1) % (to - from) : i] + "\n";
      }
      test::write_text(d.file(std::string(dir) + "/" + split + ".src"), src);
      test::write_text(d.file(std::string(dir) + "/" + split + ".tgt"), tgt);
    }
    test::write_text(d.file(std::string(dir) + ".yaml"), test::copy_recipe(d.file(dir)));
    std::string out;
    ASSERT_EQ(test::run_shell(test::clinic_bin() + " train " + d.file(std::string(dir) + ".yaml") +
                                  " --run-dir " + d.file(std::string(dir) + "-run") +
                                  " --set train.max_updates=200 --set diag.interval=5",
                              &out),
              0)
        << out;
  }
  const RunData mis = read_run(d.file("misaligned-run")), ok = read_run(d.file("aligned-run"));
  const Finding ignored = rule(diagnose(mis), "source_ignored");
  EXPECT_TRUE(ignored.fired) << ignored.checked;
  expect_contains(ignored.summary, "the model ignores its source at update 200");
  const Finding used = rule(diagnose(ok), "source_ignored");
  EXPECT_FALSE(used.fired) << used.summary;
  // The aligned model pays for the swap, the misaligned one does not.
  const auto& last_ok = ok.diag.back();
  const auto& last_mis = mis.diag.back();
  EXPECT_GT(json_num(last_ok, "probe_nll_rotated_source") - json_num(last_ok, "probe_nll"), 1.0);
  EXPECT_LT(std::abs(json_num(last_mis, "probe_nll_rotated_source") -
                     json_num(last_mis, "probe_nll")),
            0.1);
}

// The stale gradient at a loss far from 0 (case A with gradients never
// zeroed): Adam's |m_hat| / |sqrt(v_hat)| stays at ~1 in most diag records.
// Measured on case A: 0.99-1.27 with the gradients carried, 0.15-0.80 zeroed.
TEST(Diagnose, StaleGradientFiresWhenAdamsFirstMomentMatchesItsSecond) {
  auto records = [](const std::vector<double>& ratios) {
    std::vector<std::string> r;
    for (size_t i = 0; i < ratios.size(); ++i) {
      r.push_back(fmt::format(R"j({{"update": {}, "loss": 8.{}, "grad_norm": {}}})j",
                              50 * (i + 1), i, 100 + 50 * i));
      r.push_back(fmt::format(R"j({{"event": "diag", "update": {}, "adam_first_moment_ratio": {}}})j",
                              50 * (i + 1), ratios[i]));
    }
    return r;
  };
  TempDir d;
  auto lines = records({0.8, 0.96, 1.2, 1.0, 0.99});
  lines.push_back(R"j({"event": "spike", "update": 260, "loss": 9, "prev_loss": 8.5, "jump": 0.5, "rule": "robust"})j");
  auto carried = diagnose(synthetic(d, lines));
  const auto& st = rule(carried, "stale_gradient");
  ASSERT_TRUE(st.fired);
  expect_contains(st.summary, "Adam's |m_hat| / |sqrt(v_hat)| was >= 0.95 in 4 of 5 diag "
                              "records (from update 100, median 0.995");
  expect_contains(st.cure, "train.zero_grad: true");
  // A spike far from loss 0: the zero-loss explanation (case B) is not given.
  expect_contains(rule(carried, "loss_spikes").cure,
                  "zero the gradients before each backward (see stale_gradient): every update "
                  "steps on the sum of the earlier gradients");
  EXPECT_EQ(rule(carried, "loss_spikes").cure.find("at a loss of 0"), std::string::npos);
  // Three of seven at the threshold is under half: not fired; two of two is
  // under three records: not fired.
  TempDir e;
  const Finding minority =
      rule(diagnose(synthetic(e, records({0.96, 0.5, 0.95, 0.4, 1.0, 0.3, 0.3}))),
           "stale_gradient");
  EXPECT_FALSE(minority.fired);
  expect_contains(minority.checked, "Adam's |m_hat| / |sqrt(v_hat)| >= 0.95 in 3 of 7 diag "
                                    "records (median 0.500)");
  TempDir f;
  EXPECT_FALSE(rule(diagnose(synthetic(f, records({1.0, 1.0}))), "stale_gradient").fired);
  // One fixed batch every update repeats its gradient by design.
  TempDir g;
  std::filesystem::create_directories(g.file("run"));
  test::write_text(g.file("run/recipe.yaml"),
                   "data:\n  source: fixed_batch\n  fixed_input: \"1 0; 0 1\"\n"
                   "  fixed_target: \"0 1; 1 0\"\n  fixed_vocab: 2\n");
  auto fixed = synthetic(g, records({0.8, 0.96, 1.2, 1.0, 0.99}));
  ASSERT_TRUE(fixed.fixed_batch);
  const Finding fx = rule(diagnose(fixed), "stale_gradient");
  EXPECT_FALSE(fx.fired);
  expect_contains(fx.checked, "one fixed batch repeats its gradient by design");
}

TEST(Diagnose, Base64) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
}

// End to end: a Post-LN run at lr 3 diverges at once; its twin at lr 3e-3
// does not. The report says so, with plots inlined in report.html.
// Issue 36 item 7: a metrics.jsonl with damaged lines (binary garbage a full
// disk left, a line that is not JSON, a partial last line) is diagnosed from
// the rest; each damaged line is named by file:line on stderr and in the
// report; only a file with no readable record is refused.
TEST(Diagnose, DamagedLinesAreSkippedNamedAndTheRestDiagnosed) {
  TempDir d;
  std::filesystem::create_directories(d.file("run"));
  std::string text;
  for (int u = 1; u <= 6; ++u) {
    text += fmt::format(R"j({{"update": {}, "loss": {}, "loss_scale": 1, "skipped": 0}})j", u * 10,
                        8.0 - 0.1 * u) + "\n";
    if (u == 2) text += std::string("\xff\xfe\x00garbage\x80", 11) + "\n";  // line 3
    if (u == 4) text += "{\"update\": 45, \"loss\"\n";                      // line 6
  }
  text += R"j({"update": 70, "lo)j";  // line 9: partial, no newline
  test::write_text(d.file("run/metrics.jsonl"), text);
  RunData run = read_run(d.file("run"));
  EXPECT_EQ(run.train.size(), 6u);
  ASSERT_EQ(run.data_problems.size(), 3u);
  const std::string m = d.file("run/metrics.jsonl");
  expect_contains(run.data_problems[0], m + ":3: byte 0xff at column 1 is not valid UTF-8");
  expect_contains(run.data_problems[1], m + ":6: not a JSON record");
  expect_contains(run.data_problems[2], m + ":9: a partial last line");

  std::string out;
  ASSERT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + d.file("run") + " 2>&1", &out), 0)
      << out;
  expect_contains(out, "clinic: warning: " + m + ":3: byte 0xff");
  expect_contains(out, "clinic: warning: " + m + ":6:");
  std::string md = read_file(d.file("run/report/report.md"));
  expect_contains(md, "### Data problems");
  expect_contains(md, m + ":9: a partial last line");
  expect_contains(md, "6 training records");

  test::write_text(d.file("run/metrics.jsonl"), std::string("\xff\xff\n{nope\n", 9));
  EXPECT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + d.file("run") + " 2>&1", &out), 1);
  expect_contains(out, "clinic: error: " + m + ": no readable record (2 unreadable lines; the "
                       "first: 1: byte 0xff");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;  // one line
}

// Issue 36 item 8: --out naming a file is refused in clinic's words and the
// file is left intact; a report the user edited is kept beside the new one,
// an unedited one is replaced without leaving copies.
TEST(Diagnose, OutMustBeADirectoryAndAnEditedReportIsKept) {
  TempDir d;
  synthetic(d, {R"j({"update": 10, "loss": 8.0, "loss_scale": 1, "skipped": 0})j",
                R"j({"update": 20, "loss": 7.5, "loss_scale": 1, "skipped": 0})j"});
  test::write_text(d.file("afile"), "mine\n");
  std::string out;
  const std::string diag = test::clinic_bin() + " diagnose " + d.file("run");
  EXPECT_EQ(test::run_shell(diag + " --out " + d.file("afile") + " 2>&1", &out), 1);
  expect_contains(out, "clinic: error: --out " + d.file("afile") + ": exists and is not a directory");
  EXPECT_EQ(out.find("filesystem error"), std::string::npos) << out;
  EXPECT_EQ(read_file(d.file("afile")), "mine\n");
  EXPECT_EQ(test::run_shell(diag + " --out " + d.file("afile/sub") + " 2>&1", &out), 1);
  expect_contains(out, "clinic: error: " + d.file("afile/sub") + ": cannot create the report directory");

  const std::string rep = d.file("run/report/report.md");
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;
  const std::string first = read_file(rep);
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;  // unedited: replaced, no copy
  EXPECT_FALSE(std::filesystem::exists(rep + ".~1~"));
  EXPECT_EQ(read_file(rep), first);
  test::write_text(rep, first + "\nMy notes on this run.\n");
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;
  expect_contains(out, rep + " had changes clinic did not write: kept as " + rep + ".~1~");
  EXPECT_EQ(read_file(rep + ".~1~"), first + "\nMy notes on this run.\n");
  EXPECT_EQ(read_file(rep), first);
  test::write_text(rep, "edited again\n");
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;
  EXPECT_EQ(read_file(rep + ".~2~"), "edited again\n");
  EXPECT_EQ(read_file(rep + ".~1~"), first + "\nMy notes on this run.\n");
}

// Issue 36 item 9: SIGTERM at any moment of a diagnose over an existing
// report: every file then present is whole (the complete report's bytes, or a
// PNG to its IEND), and the next diagnose removes what the killed one left.
TEST(Diagnose, SigtermMidReportReplacesNothingWithAPartialFile) {
  TempDir d;
  std::vector<std::string> lines;
  for (int u = 1; u <= 40; ++u)
    lines.push_back(fmt::format(
        R"j({{"update": {}, "loss": {}, "lr": 0.001, "grad_norm": {}, "loss_scale": 1, "skipped": 0}})j",
        u * 10, 9.0 - 0.05 * u, 1.0 + 0.01 * u));
  synthetic(d, lines);
  const std::string diag = test::clinic_bin() + " diagnose " + d.file("run");
  const std::string rep = d.file("run/report");
  std::string out;
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;
  const std::string md = read_file(rep + "/report.md"), html = read_file(rep + "/report.html");
  auto whole_png = [](const std::string& bytes) {
    static const std::string sig("\x89PNG\r\n\x1a\n", 8), iend("IEND\xae\x42\x60\x82", 8);
    return bytes.size() > 16 && bytes.compare(0, 8, sig) == 0 &&
           bytes.compare(bytes.size() - 8, 8, iend) == 0;
  };
  int temporaries_seen = 0;
  for (const char* delay : {"0.01", "0.05", "0.1", "0.2", "0.3", "0.5"}) {
    test::run_shell("(" + diag + " >/dev/null 2>&1 & p=$!; sleep " + delay +
                        "; kill -TERM $p; wait $p) >/dev/null 2>&1",
                    &out);
    EXPECT_EQ(read_file(rep + "/report.md"), md) << "killed after " << delay << " s";
    EXPECT_EQ(read_file(rep + "/report.html"), html) << "killed after " << delay << " s";
    for (const auto& e : std::filesystem::recursive_directory_iterator(rep)) {
      const std::string name = e.path().filename().string();
      if (name.find(".tmp.") != std::string::npos) {
        ++temporaries_seen;
        continue;
      }
      if (e.path().extension() == ".png") {
        EXPECT_TRUE(whole_png(read_file(e.path().string()))) << e.path() << " after " << delay;
      }
    }
  }
  ASSERT_EQ(test::run_shell(diag + " 2>&1", &out), 0) << out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(rep))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << e.path() << " left after a complete diagnose";
  EXPECT_EQ(read_file(rep + "/report.md"), md);
  RecordProperty("temporaries_left_by_kills", temporaries_seen);
}

TEST(Diagnose, ReportOnARealDivergingRun) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 300, 20);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("c")));
  std::string out;
  auto train = [&](const std::string& dir, const std::string& lr) {
    return test::run_shell(test::clinic_bin() + " train " + d.file("r.yaml") + " --run-dir " +
                               d.file(dir) + " --set optim.lr=" + lr +
                               " --set schedule.name=constant --set train.max_updates=16 "
                               "--set train.log_interval=1 --set diag.interval=4 "
                               "--set train.max_bad_steps=100",
                           &out);
  };
  ASSERT_EQ(train("bad", "3"), 0) << out;
  ASSERT_EQ(train("good", "0.003"), 0) << out;
  ASSERT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + d.file("bad") + " " +
                                d.file("good") + " --out " + d.file("report"),
                            &out),
            0)
      << out;
  EXPECT_NE(out.find("[divergence] training diverged at update"), std::string::npos) << out;
  std::string md = read_file(d.file("report/report.md"));
  auto good = md.find("## good");
  ASSERT_NE(good, std::string::npos) << md;
  EXPECT_NE(md.substr(0, good).find("**divergence**"), std::string::npos) << md;
  EXPECT_EQ(md.substr(good).find("**divergence**"), std::string::npos) << md;
  EXPECT_NE(md.find("### Checked, nothing found"), std::string::npos);
  for (const char* png : {"curves.png", "dependency_encoder.png", "output_change.png",
                          "layer_norms.png", "fig5_relative_norms.png",
                          "attn_entropy_mean_decoder.png", "omega.png", "source_use.png"}) {
    ASSERT_TRUE(std::filesystem::exists(d.file(std::string("report/") + png))) << png;
    EXPECT_EQ(read_file(d.file(std::string("report/") + png)).substr(1, 3), "PNG") << png;
  }
  std::string html = read_file(d.file("report/report.html"));
  EXPECT_NE(html.find("src=\"data:image/png;base64,iVBORw0KGgo"), std::string::npos);
  EXPECT_EQ(html.find("src=\"curves.png"), std::string::npos);  // self-contained
  // A directory without metrics.jsonl is a clear error.
  EXPECT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + d.file("c"), &out), 1);
  EXPECT_NE(out.find("no metrics.jsonl"), std::string::npos) << out;
}

TEST(Analyze, GrowthFitTellsLinearFromLogarithmic) {
  std::vector<double> n = {6, 12, 18, 24}, lin, lg;
  for (double x : n) {
    lin.push_back(2.0 + 3.0 * x);
    lg.push_back(1.0 + 5.0 * std::log(x));
  }
  auto a = fit_growth(n, lin), b = fit_growth(n, lg);
  EXPECT_NEAR(a.r2_linear, 1.0, 1e-12);
  EXPECT_NEAR(a.slope_linear, 3.0, 1e-9);
  EXPECT_LT(a.r2_log, a.r2_linear);
  EXPECT_EQ(a.better(), "linear (O(N))");
  EXPECT_NEAR(b.r2_log, 1.0, 1e-12);
  EXPECT_NEAR(b.slope_log, 5.0, 1e-9);
  EXPECT_EQ(b.better(), "log (O(log N))");
  EXPECT_NEAR(a.growth, 74.0 / 20.0, 1e-12);
  // Power law through the origin: y = 3 N has alpha 1, y = 5 ln N the
  // apparent exponent of ln N; with an intercept, in between.
  std::vector<double> prop, plog;
  for (double x : n) prop.push_back(3.0 * x), plog.push_back(5.0 * std::log(x));
  auto c = fit_growth(n, prop), e = fit_growth(n, plog);
  EXPECT_NEAR(c.exponent, 1.0, 1e-12);
  EXPECT_EQ(c.nearer_exponent(), "O(N)");
  EXPECT_NEAR(e.exponent, e.exponent_of_log, 1e-12);
  EXPECT_EQ(e.nearer_exponent(), "O(log N)");
  // Two points: the slope is ln(y2/y1) / ln(x2/x1), checked by hand.
  auto two = fit_growth({6, 24}, {0.0069, 0.0200});
  EXPECT_NEAR(two.exponent, std::log(0.0200 / 0.0069) / std::log(4.0), 1e-12);
  EXPECT_NEAR(two.exponent_of_log, std::log(std::log(24.0) / std::log(6.0)) / std::log(4.0), 1e-12);
  EXPECT_NEAR(two.exponent_of_log, 0.41, 0.005);
  // Non-positive values have no power law.
  EXPECT_TRUE(std::isnan(fit_growth({6, 12}, {0.0, 1.0}).exponent));
}

// The analysis at init on a tiny recipe: a table for every (variant, depth)
// and the plot; Post-LN depends more on its own branches than Pre-LN.
TEST(Analyze, CommandWritesTableAndPlot) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 100, 10);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("c")));
  std::string out;
  ASSERT_EQ(test::run_shell(test::clinic_bin() + " analyze " + d.file("r.yaml") +
                                " --depths 2,4 --variants post_ln,pre_ln --out " + d.file("a"),
                            &out),
            0)
      << out;
  auto tsv = read_lines(d.file("a/analysis.tsv"));
  ASSERT_EQ(tsv.size(), 5u);
  EXPECT_EQ(tsv[1].rfind("post_ln\t2\t1\t", 0), 0u) << tsv[1];
  EXPECT_TRUE(std::filesystem::exists(d.file("a/output_change_vs_depth.png")));
  EXPECT_NE(out.find("R2 linear"), std::string::npos) << out;
  auto dep = [&](size_t row) {
    std::vector<std::string> f;
    std::stringstream ss(tsv[row]);
    for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
    return std::stod(f[9]);
  };
  EXPECT_GT(dep(2), dep(4));  // post_ln N=4 vs pre_ln N=4, encoder mean beta_ii
}

// Probes of the command line: repeated or unknown settings are one error
// naming the flag; one depth measures, but says why no growth fit is drawn.
TEST(Analyze, BadListsAreOneErrorAndOneDepthSaysNoFit) {
  TempDir d;
  test::write_copy_corpus(d.file("c"), 100, 10);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("c")));
  const std::string base = test::clinic_bin() + " analyze " + d.file("r.yaml");
  std::string out;
  EXPECT_NE(test::run_shell(base + " --depths 2,4,2 --out " + d.file("x"), &out), 0);
  EXPECT_EQ(out, "clinic: error: --depths: 2 is given twice; list each once\n");
  EXPECT_NE(test::run_shell(base + " --variants admin,pre_ln,admin --out " + d.file("x"), &out), 0);
  EXPECT_EQ(out, "clinic: error: --variants: admin is given twice; list each once\n");
  EXPECT_NE(test::run_shell(base + " --variants post_ln,frob --out " + d.file("x"), &out), 0);
  EXPECT_EQ(out.rfind("clinic: error: ", 0), 0u) << out;
  EXPECT_NE(out.find("--variants"), std::string::npos) << out;
  EXPECT_NE(out.find("frob"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_FALSE(std::filesystem::exists(d.file("x")));
  ASSERT_EQ(test::run_shell(base + " --depths 2 --variants pre_ln --out " + d.file("one"), &out), 0)
      << out;
  EXPECT_NE(out.find("(a growth fit needs two depths or more; --depths has 1)"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("R2 linear"), std::string::npos) << out;
  EXPECT_EQ(read_lines(d.file("one/analysis.tsv")).size(), 2u);
}

}  // namespace
}  // namespace clinic
