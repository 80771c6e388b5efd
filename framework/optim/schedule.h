#pragma once
// Learning-rate schedules: pure functions of the update number, registered
// by name; the trainer applies the value to every parameter group.
#include <cstdint>
#include <functional>
#include <vector>

#include "framework/config.h"
#include "framework/registry.h"

namespace clinic {

/// lr at update `t` (1-based: the lr used by the t-th optimizer step).
using Schedule = std::function<double(int64_t t)>;
/// peak_lr = optim.lr; total = schedule.total_updates or train.max_updates.
using ScheduleBuilder = std::function<Schedule(
    const ScheduleConfig&, double peak_lr, int64_t total_updates)>;
Registry<ScheduleBuilder>& schedule_registry();
void register_builtin_schedules();

Schedule build_schedule(const RunConfig& cfg);
/// [0]: the recipe's schedule (build_schedule); [i + 1]: optim.groups[i]'s,
/// its own `schedule:` or the recipe's, with the group's lr as the peak.
std::vector<Schedule> build_group_schedules(const RunConfig& cfg);

}  // namespace clinic
