#include "framework/report/diagnosis.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/diagnostics/probe.h"
#include "framework/diagnostics/spikes.h"

namespace clinic {

namespace {

int64_t update_of(const nlohmann::json& j) { return static_cast<int64_t>(json_num(j, "update")); }

// The last diag record at or before `update` (the last one when update < 0).
const nlohmann::json* diag_before(const RunData& r, int64_t update) {
  const nlohmann::json* best = nullptr;
  for (const auto& d : r.diag)
    if (update < 0 || update_of(d) <= update) best = &d;
  return best;
}

std::string sci(double v) { return fmt::format("{:.3g}", v); }

// The probe tokens' logit margins (correct logit minus the largest other, eval
// mode) of a diag record, as evidence: a loss jump of J nats on a token needs
// its margin overturned to -J (docs/cases.md, case B).
std::string margin_text(const nlohmann::json* d) {
  if (!d) return "";
  auto q = json_nums(*d, "logit_margin_quantiles");  // min, 10 %, median, 90 %, max
  if (q.size() != 5) return "";
  return fmt::format("; at update {} the probe tokens' logit margins were {:.3g} / {:.3g} / {:.3g} "
                     "nats (min / median / max)",
                     update_of(*d), q[0], q[2], q[4]);
}

// Label smoothing as a cure only for a run that does not smooth already: its
// loss then has a floor above 0 and its logit margins a finite optimum.
std::string smoothing_cure(const RunData& r) {
  if (r.label_smoothing > 0)
    return fmt::format(" (train.label_smoothing = {:g} already keeps the loss off 0)",
                       r.label_smoothing);
  return ", or keep the loss off 0 with label smoothing (train.label_smoothing)";
}

// One form of a rule: the evidence when it fired, else what was checked.
struct Symptom {
  bool fired = false;
  std::string text;
};

// Stale gradients (rule stale_gradient), two symptoms of one bug (a loop
// without zero_grad(); docs/cases.md, cases A and B):
// (a) a cross-entropy gradient vanishes with its loss (its logit part is
//     p - y, of size <= sqrt(2) * (1 - p_y) <= sqrt(2) * loss in nats), so a
//     gradient norm that stays near its starting size while the loss is ~0
//     is not the gradient of this loss;
// (b) at any loss: Adam's |m_hat| / |sqrt(v_hat)| near 1 says the gradient is
//     the same from update to update (a running sum that each update changes
//     by one step's gradient); mini-batch gradients sit well below (0.15-0.8
//     measured), and one fixed batch repeats its gradient by design, so (b)
//     is not applied to data.source: fixed_batch.
Symptom stale_at_zero_loss(const RunData& r, const DiagnoseThresholds& t) {  // form (a)
  std::vector<double> start, at_zero;
  int64_t first_zero = -1;
  for (const auto& p : r.train) {
    double g = json_num(p, "grad_norm"), loss = json_num(p, "loss");
    if (!std::isfinite(g) || !std::isfinite(loss)) continue;
    if (start.size() < 5) start.push_back(g);
    if (loss < t.zero_loss_bits) {
      if (first_zero < 0) first_zero = update_of(p);
      at_zero.push_back(g);
    }
  }
  if (at_zero.size() < 3 || start.empty())
    return {false, fmt::format("the loss was not below {:g} bits in 3 logged intervals",
                               t.zero_loss_bits)};
  double g0 = median_of(start), gz = median_of(at_zero);
  if (gz >= t.stale_gradient * g0)
    return {true, fmt::format("the loss was below {:g} bits in {} of {} logged intervals (from "
                              "update {}), yet the gradient norm there stayed at {:.3g} (median; "
                              "{:.3g} over the first logged updates): a cross-entropy gradient "
                              "vanishes with its loss",
                              t.zero_loss_bits, at_zero.size(), r.train.size(), first_zero, gz,
                              g0)};
  return {false, fmt::format("at a loss below {:g} bits the gradient norm fell to {:.3g} ({:.3g} "
                             "at the start)",
                             t.zero_loss_bits, gz, g0)};
}

Symptom stale_first_moment(const RunData& r, const DiagnoseThresholds& t) {  // form (b)
  if (r.fixed_batch)
    return {false, "Adam's first-moment ratio not used: one fixed batch repeats its gradient by "
                   "design"};
  std::vector<double> ratios, high;
  int64_t first_high = -1;
  for (const auto& d : r.diag) {
    double q = json_num(d, "adam_first_moment_ratio");
    if (!std::isfinite(q)) continue;
    ratios.push_back(q);
    if (q >= t.stale_first_moment) {
      if (first_high < 0) first_high = update_of(d);
      high.push_back(q);
    }
  }
  if (ratios.empty()) return {false, "no Adam first-moment ratio recorded"};
  if (high.size() >= 3 && 2 * high.size() >= ratios.size())
    return {true, fmt::format("Adam's |m_hat| / |sqrt(v_hat)| was >= {:g} in {} of {} diag "
                              "records (from update {}, median {:.3f}; mini-batch gradients give "
                              "0.15-0.8): the gradient is the same from update to update",
                              t.stale_first_moment, high.size(), ratios.size(), first_high,
                              median_of(high))};
  return {false, fmt::format("Adam's |m_hat| / |sqrt(v_hat)| >= {:g} in {} of {} diag records "
                             "(median {:.3f})",
                             t.stale_first_moment, high.size(), ratios.size(), median_of(ratios))};
}

// The divergence margin, shared by the training and the validation loss: a
// loss above the running minimum by max(divergence_rise_bits, divergence_rise_frac
// of the minimum).
bool rose_past_margin(double loss, double lowest, const DiagnoseThresholds& t) {
  return loss - lowest >= std::max(t.divergence_rise_bits, t.divergence_rise_frac * lowest);
}

// The first validation record whose loss rose past the margin over the
// earlier ones' minimum (or is non-finite); at = -1 when none.
struct ValidDivergence {
  int64_t at = -1;
  double loss = NAN, lowest = NAN;
  int64_t lowest_at = -1;
};
ValidDivergence valid_divergence(const RunData& r, const DiagnoseThresholds& t) {
  ValidDivergence v;
  double lowest = std::numeric_limits<double>::infinity();
  int64_t lowest_at = -1;
  for (const auto& p : r.valid) {
    if (!p.contains("valid_loss") || p["valid_loss"].is_null()) continue;  // says nothing
    double loss = json_num(p, "valid_loss");  // "nan" / "inf" count as diverged
    if (lowest_at >= 0 && (!std::isfinite(loss) || rose_past_margin(loss, lowest, t))) {
      v.at = update_of(p);
      v.loss = loss;
      v.lowest = lowest;
      v.lowest_at = lowest_at;
      return v;
    }
    if (loss < lowest) {
      lowest = loss;
      lowest_at = update_of(p);
    }
  }
  return v;
}

// A stack's first-layer gradient norm over its largest layer's (the
// vanishing-gradient measure); NaN with fewer than 2 layers or no gradient.
double first_layer_grad_share(const std::vector<double>& g) {
  if (g.size() < 2) return NAN;
  const double mx = *std::max_element(g.begin(), g.end());
  return mx > 0 ? g.front() / mx : NAN;
}
}  // namespace

double amplification_index(const nlohmann::json& diag, const std::string& stack) {
  auto dep = json_nums(diag, stack + "_dependency");
  if (dep.empty()) return NAN;
  double s = 0;
  for (double b : dep) s += b * b;
  return s / (1.0 + std::log(static_cast<double>(dep.size())));
}

int64_t divergence_update(const RunData& r, const DiagnoseThresholds& t) {
  int64_t first_nonfinite = -1;
  if (!r.nonfinite.empty()) first_nonfinite = update_of(r.nonfinite.front());
  double lowest = std::numeric_limits<double>::infinity();
  for (const auto& p : r.train) {
    double loss = json_num(p, "loss");
    int64_t u = update_of(p);
    if (first_nonfinite >= 0 && u >= first_nonfinite) break;
    if (!std::isfinite(loss)) return u;
    if (is_short_record(p)) continue;  // one batch's loss after a resume: neither a best nor a rise
    if (rose_past_margin(loss, lowest, t)) return u;
    lowest = std::min(lowest, loss);
  }
  return first_nonfinite;
}

std::vector<Finding> diagnose(const RunData& r, const DiagnoseThresholds& t) {
  std::vector<Finding> out;
  const int64_t diverged = divergence_update(r, t);

  {  // Divergence: the outcome the other rules explain.
    Finding f;
    f.rule = "divergence";
    if (diverged >= 0) {
      double lowest = std::numeric_limits<double>::infinity();
      int64_t at = -1;
      for (const auto& p : r.train)
        if (update_of(p) < diverged && !is_short_record(p) && json_num(p, "loss") < lowest) {
          lowest = json_num(p, "loss");
          at = update_of(p);
        }
      f.fired = true;
      f.summary = r.nonfinite.empty() || update_of(r.nonfinite.front()) > diverged
                      ? fmt::format("training diverged at update {}: the loss rose from its "
                                    "minimum {:.3f} bits (update {}) by more than max({} bits, "
                                    "{:.0f} %)",
                                    diverged, lowest, at, t.divergence_rise_bits,
                                    100 * t.divergence_rise_frac)
                      : fmt::format("training diverged at update {}: non-finite loss or "
                                    "gradients (lowest loss before: {:.3f} bits at update {})",
                                    diverged, lowest, at);
    } else if (auto v = valid_divergence(r, t); v.at >= 0) {
      // The training loss held but the held-out loss rose by the same margin:
      // a Post-LN 18+18 model at Adam 3e-3 does this (docs/analysis.md §2),
      // its train-mode loss flat near 8.8 bits while validation goes 9.1 -> 13.
      double last_train = r.train.empty() ? NAN : json_num(r.train.back(), "loss");
      f.fired = true;
      f.summary = fmt::format(
          "validation loss diverged at update {}: it rose from its minimum {:.3f} bits (update "
          "{}) to {:.3f}, by more than max({} bits, {:.0f} %), while the training loss did not "
          "(last {:.3f} bits): the model got worse on held-out sentences without a training "
          "loss spike",
          v.at, v.lowest, v.lowest_at, v.loss, t.divergence_rise_bits,
          100 * t.divergence_rise_frac, last_train);
    } else {
      f.checked = fmt::format("divergence: no non-finite update, and neither the training nor "
                              "the validation loss rose above its running minimum by max({} "
                              "bits, {:.0f} %)",
                              t.divergence_rise_bits, 100 * t.divergence_rise_frac);
    }
    out.push_back(f);
  }

  {  // Amplification (Liu et al. 2020 §4.2): heavy dependency on own branch.
    Finding f;
    f.rule = "amplification";
    const nlohmann::json* d = diag_before(r, diverged);
    std::vector<std::string> parts;
    for (const char* stack : kStacks) {
      if (!d) break;
      double a = amplification_index(*d, stack);
      auto dep = json_nums(*d, std::string(stack) + "_dependency");
      if (!std::isfinite(a) || a < t.amplification) continue;
      double mean = 0;
      for (double b : dep) mean += b / dep.size();
      auto change = json_nums(*d, std::string(stack) + "_output_change_update");
      std::string growth;
      if (change.size() > 2 && change[1] > 0)
        growth = fmt::format("; the update's output change grows x{} from sublayer 1 to the "
                             "stack output",
                             sci(change.back() / change[1]));
      parts.push_back(fmt::format(
          "{} sublayers depend on their own residual branch (mean beta_ii {:.2f}, last {:.2f}; "
          "sum beta_ii^2 = {:.1f} over {} sublayers, x{:.1f} the 1 + ln n = {:.1f} of a Pre-LN "
          "stack{})",
          stack, mean, dep.back(), a * (1 + std::log(static_cast<double>(dep.size()))),
          dep.size(), a, 1 + std::log(static_cast<double>(dep.size())), growth));
    }
    if (!parts.empty()) {
      f.fired = true;
      f.summary = fmt::format("amplification at update {}: {}. Each update's change of the "
                              "weights reaches the output through every sublayer undamped "
                              "(output change O(N), not O(log N))",
                              update_of(*d), fmt::join(parts, "; "));
      f.cure = "model.residual: admin (keeps Post-LN's quality, Liu et al. 2020) or pre_ln";
    } else {
      f.checked = d ? fmt::format("amplification: sum beta_ii^2 / (1 + ln n) below {} in both "
                                  "stacks at update {}",
                                  t.amplification, update_of(*d))
                    : "amplification: no diag records (add diag: {interval: 50})";
    }
    out.push_back(f);
  }

  {  // Vanishing gradients: first layers get (almost) no gradient.
    Finding f;
    f.rule = "vanishing_gradient";
    const nlohmann::json* d = diag_before(r, diverged);
    std::vector<std::string> parts;
    for (const char* stack : kStacks) {
      if (!d) break;
      auto g = json_nums(*d, std::string(stack) + "_layer_grad_norm");
      if (!(first_layer_grad_share(g) <= t.vanishing_ratio)) continue;
      const double mx = *std::max_element(g.begin(), g.end());
      parts.push_back(fmt::format("{} layer 1 gradient norm {} is {}x smaller than the "
                                  "largest ({} at layer {})",
                                  stack, sci(g.front()), sci(mx / std::max(g.front(), 1e-300)),
                                  sci(mx), std::max_element(g.begin(), g.end()) - g.begin() + 1));
    }
    if (!parts.empty()) {
      f.fired = true;
      f.summary = fmt::format("vanishing gradient at update {}: {}", update_of(*d),
                              fmt::join(parts, "; "));
      f.cure = "a Pre-LN decoder (model.decoder_residual: pre_ln) removes it, but Liu et al. "
               "2020 (Table 1) show that alone does not stop the instability; model.residual: "
               "admin treats both";
    } else {
      f.checked = fmt::format("vanishing gradient: first-layer gradient norms within x{} of the "
                              "largest layer's",
                              1 / t.vanishing_ratio);
    }
    out.push_back(f);
  }

  {  // Source ignored: the decoder learned a target-side language model.
    Finding f;
    f.rule = "source_ignored";
    std::vector<const nlohmann::json*> rec;  // diag records with the source-swap probe
    for (const auto& d : r.diag)
      if (std::isfinite(json_num(d, "probe_nll_rotated_source")) &&
          std::isfinite(json_num(d, "probe_nll")))
        rec.push_back(&d);
    auto gain = [](const nlohmann::json* d) {
      return json_num(*d, "probe_nll_rotated_source") - json_num(*d, "probe_nll");
    };
    if (rec.empty()) {
      f.checked = "source use: not measured (no diag records of an encoder-decoder)";
    } else {
      const nlohmann::json* last = rec.back();
      const nlohmann::json* best = *std::max_element(
          rec.begin(), rec.end(), [&](auto* a, auto* b) { return gain(a) < gain(b); });
      const double fell = json_num(*rec.front(), "probe_nll") - json_num(*last, "probe_nll");
      if (gain(last) < t.source_gain_bits && fell >= t.source_learned_bits) {
        f.fired = true;
        f.summary = fmt::format(
            "the model ignores its source at update {}: the probe sentences' loss is {:.2f} "
            "bits with their own sources and {:.2f} with each source swapped for another "
            "sentence's (gain {:+.3f} bits; threshold {:g}; the largest gain in the run {:+.3f} "
            "at update {}), while the loss fell {:.1f} bits from update {}: the decoder learned "
            "a target-side language model and takes nothing from the encoder",
            update_of(*last), json_num(*last, "probe_nll"),
            json_num(*last, "probe_nll_rotated_source"), gain(last), t.source_gain_bits,
            gain(best), update_of(*best), fell, update_of(*rec.front()));
        const nlohmann::json* d = diag_before(r, -1);
        const bool encoder_amplifies = d && amplification_index(*d, "encoder") >= t.amplification;
        const bool encoder_starves =
            d && first_layer_grad_share(json_nums(*d, "encoder_layer_grad_norm")) <=
                     t.vanishing_ratio;
        f.cure = encoder_amplifies || encoder_starves
                     ? fmt::format("the encoder {}: give it Admin or Pre-LN "
                                   "(model.encoder_residual: admin | pre_ln). A Pre-LN decoder "
                                   "alone does not fix a Post-LN encoder (Liu et al. 2020, "
                                   "Table 1; docs/analysis.md)",
                                   encoder_amplifies
                                       ? "amplifies its updates (see amplification)"
                                       : "barely learns (its first layer's gradient vanishes)")
                     : "check that the source and target files are aligned line by line (a "
                       "shuffled side gives this picture); otherwise train longer, or a lower "
                       "peak lr (optim.lr)";
      } else {
        f.checked = fmt::format("source use: swapping the probe sentences' sources costs "
                                "{:+.3f} bits at update {} (threshold {:g}; the loss {} {:.1f} "
                                "bits since update {})",
                                gain(last), update_of(*last), t.source_gain_bits,
                                fell >= 0 ? "fell" : "rose", std::fabs(fell),
                                update_of(*rec.front()));
      }
    }
    out.push_back(f);
  }

  const Symptom at_zero = stale_at_zero_loss(r, t), first_moment = stale_first_moment(r, t);
  const bool stale_at_zero = at_zero.fired, stale = at_zero.fired || first_moment.fired;
  {
    Finding f;
    f.rule = "stale_gradient";
    std::vector<std::string> evidence, checked;
    for (const Symptom* s : {&at_zero, &first_moment})
      (s->fired ? evidence : checked).push_back(s->text);
    if (stale) {
      f.fired = true;
      f.summary = fmt::format("{}: the optimizer is stepping on earlier updates' gradients, "
                              "accumulated without being zeroed",
                              fmt::join(evidence, "; and "));
      f.cure = "zero the gradients before each backward (optimizer.zero_grad(); in clinic, "
               "train.zero_grad: true)";
    } else {
      f.checked = fmt::format("stale gradients: {}", fmt::join(checked, "; "));
    }
    out.push_back(f);
  }

  {  // Attention collapse: every query of a head on one key.
    Finding f;
    f.rule = "attention_collapse";
    for (const auto& d : r.diag) {
      for (const char* stack : kStacks) {
        // Flags recomputed from the statistics with today's definition, so
        // reports on older runs agree with new ones.
        auto ent = json_nums2(d, std::string(stack) + "_attn_entropy");
        auto same = json_nums2(d, std::string(stack) + "_attn_same_key");
        auto maxp = json_nums2(d, std::string(stack) + "_attn_max_prob");
        std::vector<std::vector<double>> flags(same.size());
        for (size_t a = 0; a < same.size(); ++a)
          for (size_t h = 0; h < same[a].size(); ++h)
            flags[a].push_back(a < maxp.size() && h < maxp[a].size() &&
                                       StabilityProbe::collapsed(same[a][h], maxp[a][h],
                                                                 t.collapse_fraction)
                                   ? 1.0
                                   : 0.0);
        auto subl = json_nums(d, std::string(stack) + "_attn_sublayer");
        auto kinds = json_strings(d, std::string(stack) + "_kind");
        auto layers = json_nums(d, std::string(stack) + "_layer");
        for (size_t a = 0; a < flags.size() && !f.fired; ++a)
          for (size_t h = 0; h < flags[a].size(); ++h) {
            if (flags[a][h] < 1) continue;
            size_t s = a < subl.size() ? static_cast<size_t>(subl[a]) : 0;
            f.fired = true;
            std::string when;
            if (diverged >= 0)
              when = update_of(d) <= diverged
                         ? fmt::format(", {} updates before the loss rose (update {})",
                                       diverged - update_of(d), diverged)
                         : fmt::format(", {} updates after the divergence at update {}",
                                       update_of(d) - diverged, diverged);
            f.summary = fmt::format(
                "attention of {} layer {} ({}) collapsed at update {}: head {} has entropy "
                "{:.3f} nats and {:.0f} % of its queries on one key{}",
                stack, s < layers.size() ? static_cast<int64_t>(layers[s]) + 1 : 0,
                s < kinds.size() ? kinds[s] : "attention", update_of(d), h,
                a < ent.size() && h < ent[a].size() ? ent[a][h] : NAN,
                100 * (a < same.size() && h < same[a].size() ? same[a][h] : NAN), when);
            f.cure = stale ? "zero the gradients before each backward first (see "
                             "stale_gradient): the carried gradient pushes the attention "
                             "logits the same way every update; then Pre-LN or Admin "
                             "(model.residual), a longer warmup, a lower peak lr"
                           : "Pre-LN or Admin (model.residual), a longer warmup "
                             "(schedule.warmup_updates), a lower peak lr (optim.lr)";
            break;
          }
        if (f.fired) break;
      }
      if (f.fired) break;
    }
    if (!f.fired)
      f.checked = r.diag.empty() ? "attention collapse: no diag records"
                                 : "attention collapse: no head had its queries on one key in "
                                   "any diag record";
    out.push_back(f);
  }

  {  // Loss spikes and Adam's eps.
    Finding f;
    f.rule = "loss_spikes";
    int64_t n_abs = 0;
    double max_jump = 0;
    std::vector<double> eps_before;
    for (const auto& s : r.spikes) {
      if (json_num(s, "jump") > max_jump) max_jump = json_num(s, "jump");
      if (s.value("rule", "").find("abs") == std::string::npos) continue;
      ++n_abs;
      const nlohmann::json* d = diag_before(r, update_of(s) - 1);
      if (d && std::isfinite(json_num(*d, "adam_eps_dominated")))
        eps_before.push_back(json_num(*d, "adam_eps_dominated"));
    }
    int64_t n_robust = static_cast<int64_t>(r.spikes.size()) - n_abs;
    if (!r.spikes.empty()) {
      f.fired = true;
      std::string eps;
      if (!eps_before.empty()) {
        double lo = *std::min_element(eps_before.begin(), eps_before.end());
        double hi = *std::max_element(eps_before.begin(), eps_before.end());
        eps = fmt::format("; before them Adam's sqrt(v) was below eps for {:.0f}-{:.0f} % of "
                          "entries",
                          100 * lo, 100 * hi);
      }
      f.summary = fmt::format("{} loss spikes (jump >= the absolute threshold: {}; robust rule "
                              "only: {}), the largest +{:.1f} bits{}{}",
                              r.spikes.size(), n_abs, n_robust, max_jump, eps,
                              margin_text(diag_before(r, update_of(r.spikes.front()) - 1)));
      f.cure = stale_at_zero
                   ? "zero the gradients before each backward (see stale_gradient): the "
                     "carried gradient keeps Adam's steps full-size at a loss of 0, the weights "
                     "and logits grow, and a dropout mask turns them into a spike"
               : stale ? "zero the gradients before each backward (see stale_gradient): every "
                         "update steps on the sum of the earlier gradients"
               : !eps_before.empty() && *std::max_element(eps_before.begin(), eps_before.end()) >=
                                          t.eps_dominated
                   ? "tiny gradients divided by a tiny second moment: raise optim.eps (e.g. "
                     "1e-6), lower the peak lr (optim.lr)" + smoothing_cure(r)
                   : "lower the peak lr (optim.lr), clip gradients (train.clip_norm), or a "
                     "longer warmup";
    } else {
      f.checked = "loss spikes: none by either rule" + margin_text(diag_before(r, -1));
    }
    out.push_back(f);
  }

  {  // Adam's eps dominating without spikes (a warning sign).
    Finding f;
    f.rule = "eps_dominated";
    const nlohmann::json* d = diag_before(r, -1);
    double share = d ? json_num(*d, "adam_eps_dominated") : NAN;
    if (std::isfinite(share) && share >= t.eps_dominated) {
      f.fired = true;
      f.summary = fmt::format("at update {}, Adam's sqrt(v) is below eps = {} for {:.0f} % of "
                              "entries: updates there are m / eps, sensitive to any sudden "
                              "gradient{}",
                              update_of(*d), json_num(*d, "adam_eps"), 100 * share,
                              margin_text(d));
      f.cure = "raise optim.eps" + smoothing_cure(r);
    } else {
      f.checked = std::isfinite(share)
                      ? fmt::format("Adam eps: sqrt(v) below eps for {:.1f} % of entries "
                                    "(threshold {:.0f} %)",
                                    100 * share, 100 * t.eps_dominated)
                      : "Adam eps: no optimizer second moments recorded";
    }
    out.push_back(f);
  }

  {  // First non-finite value.
    Finding f;
    f.rule = "nonfinite";
    if (!r.nonfinite.empty()) {
      f.fired = true;
      f.summary = fmt::format("{} non-finite updates; the first at update {}: first non-finite "
                              "value at {}",
                              r.nonfinite.size(), update_of(r.nonfinite.front()),
                              r.nonfinite.front().value("where", "?"));
      f.cure = "bf16 instead of fp16 (train.precision), a lower lr, or gradient clipping";
    } else {
      f.checked = "non-finite values: none";
    }
    out.push_back(f);
  }

  {  // fp16 loss scale.
    Finding f;
    f.rule = "loss_scale";
    double lowest = INFINITY;
    int64_t skipped = 0;
    for (const auto& p : r.train) {
      lowest = std::min(lowest, json_num(p, "loss_scale"));
      skipped += static_cast<int64_t>(std::max(0.0, json_num(p, "skipped")));
    }
    if (skipped > 0 && lowest < 1) {
      f.fired = true;
      f.summary = fmt::format("{} updates skipped for overflow; the loss scale fell to {}",
                              skipped, lowest);
      f.cure = "train.precision: bf16 (no scaler), or train.threshold_loss_scale";
    } else {
      f.checked = fmt::format("loss scale: {} skipped updates, lowest scale {}", skipped,
                              std::isfinite(lowest) ? sci(lowest) : std::string("-"));
    }
    out.push_back(f);
  }
  std::stable_partition(out.begin(), out.end(), [](const Finding& f) { return f.fired; });
  return out;
}

}  // namespace clinic
