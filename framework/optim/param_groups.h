#pragma once
// optim.groups: which optimizer settings and schedule each trainable
// parameter gets. Placement is by name, in the order `clinic params` prints.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "framework/config.h"

namespace clinic {

struct ParamPlacement {
  std::string name;
  torch::Tensor param;
  int group = -1;     // index into optim.groups; -1: the top-level optim.* settings
  bool decay = true;  // false when optim.no_decay_bias_norm excludes it
};

/// Places every parameter. Throws ConfigError naming both groups and the
/// parameter when two groups match one parameter, and naming the group
/// when a group matches none.
std::vector<ParamPlacement> place_parameters(
    const std::vector<std::pair<std::string, torch::Tensor>>& named, const OptimConfig& cfg,
    const std::function<bool(const std::string&)>& no_decay);

/// optim.* with group `g`'s overrides (g = -1: optim.* itself); weight
/// decay 0 when `decay` is false.
OptimConfig group_optim_config(const OptimConfig& cfg, int g, bool decay = true);

/// "" for the top-level settings, else the group's name.
std::string group_name(const OptimConfig& cfg, int g);

}  // namespace clinic
