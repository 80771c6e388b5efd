#include "framework/optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace clinic {

Registry<ScheduleBuilder>& schedule_registry() {
  static Registry<ScheduleBuilder> r("lr schedule");
  return r;
}

namespace {
// Linear warmup from warmup_init_lr to peak over W updates (fairseq:
// lr = init + t (peak - init) / W for t < W).
double warmup_lr(const ScheduleConfig& c, double peak, int64_t t) {
  return c.warmup_init_lr + t * (peak - c.warmup_init_lr) / c.warmup_updates;
}
}  // namespace

void register_builtin_schedules() {
  auto& r = schedule_registry();
  // fairseq inverse_square_root_schedule.py: peak * sqrt(W) / sqrt(t) after
  // warmup.
  r.add("inverse_sqrt", [](const ScheduleConfig& c, double peak, int64_t) {
    return Schedule([c, peak](int64_t t) {
      if (t < c.warmup_updates) return warmup_lr(c, peak, t);
      double w = static_cast<double>(std::max<int64_t>(c.warmup_updates, 1));
      return peak * std::sqrt(w) / std::sqrt(static_cast<double>(t));
    });
  });
  // Vaswani et al. 2017 (the "Noam" schedule): factor * d^-0.5 *
  // min(k^-0.5, k * W^-1.5) with the step k counted from 1 (peak = factor =
  // optim.lr). Under fairseq's timing update k runs with schedule(k - 1), so
  // schedule(t) is the formula at k = t + 1: update 1 gets step 1.
  r.add("noam", [](const ScheduleConfig& c, double peak, int64_t) {
    return Schedule([c, peak](int64_t t) {
      double k = static_cast<double>(t + 1), w = static_cast<double>(std::max<int64_t>(c.warmup_updates, 1));
      return peak * std::pow(static_cast<double>(c.noam_dim), -0.5) *
             std::min(std::pow(k, -0.5), k * std::pow(w, -1.5));
    });
  });
  r.add("constant", [](const ScheduleConfig& c, double peak, int64_t) {
    return Schedule([c, peak](int64_t t) {
      return t < c.warmup_updates ? warmup_lr(c, peak, t) : peak;
    });
  });
  r.add("linear", [](const ScheduleConfig& c, double peak, int64_t total) {
    return Schedule([c, peak, total](int64_t t) {
      if (t < c.warmup_updates) return warmup_lr(c, peak, t);
      double span = std::max<int64_t>(total - c.warmup_updates, 1);
      double frac = std::min(1.0, (t - c.warmup_updates) / span);
      return peak + frac * (c.end_lr - peak);
    });
  });
  r.add("cosine", [](const ScheduleConfig& c, double peak, int64_t total) {
    return Schedule([c, peak, total](int64_t t) {
      if (t < c.warmup_updates) return warmup_lr(c, peak, t);
      double span = std::max<int64_t>(total - c.warmup_updates, 1);
      double frac = std::min(1.0, (t - c.warmup_updates) / span);
      return c.end_lr + 0.5 * (peak - c.end_lr) * (1 + std::cos(M_PI * frac));
    });
  });
}

namespace {
Schedule make_schedule(const RunConfig& cfg, ScheduleConfig sc, double peak) {
  int64_t total = sc.total_updates > 0 ? sc.total_updates : cfg.train.max_updates;
  if (sc.noam_dim == 0) sc.noam_dim = cfg.model.d_model;
  return schedule_registry().get(sc.name)(sc, peak, total);
}
}  // namespace

Schedule build_schedule(const RunConfig& cfg) {
  return make_schedule(cfg, cfg.schedule, cfg.optim.lr);
}

std::vector<Schedule> build_group_schedules(const RunConfig& cfg) {
  std::vector<Schedule> out = {build_schedule(cfg)};
  for (const auto& g : cfg.optim.groups)
    out.push_back(make_schedule(cfg, g.schedule.value_or(cfg.schedule), g.lr.value_or(cfg.optim.lr)));
  return out;
}

}  // namespace clinic
