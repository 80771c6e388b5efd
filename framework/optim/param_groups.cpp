#include "framework/optim/param_groups.h"

#include <fnmatch.h>
#include <fmt/format.h>

#include "framework/errors.h"
#include "framework/optim/name_pattern.h"

namespace clinic {
namespace {
// "recipe.yaml:7: " before an error about a group read from a recipe.
std::string at(const OptimGroupConfig& g) { return g.where.empty() ? "" : g.where + ": "; }
}  // namespace

std::vector<ParamPlacement> place_parameters(
    const std::vector<std::pair<std::string, torch::Tensor>>& named, const OptimConfig& cfg,
    const std::function<bool(const std::string&)>& no_decay) {
  const auto& groups = cfg.groups;
  std::vector<NamePattern> patterns;
  for (const auto& g : groups) patterns.emplace_back(g.match.empty() ? std::string(".*") : g.match);
  auto matches = [&](size_t i, const std::string& name) {
    return groups[i].match.empty()
               ? ::fnmatch(groups[i].glob.c_str(), name.c_str(), 0) == 0
               : patterns[i].matches(name);
  };
  std::vector<ParamPlacement> out;
  std::vector<int64_t> hits(groups.size(), 0);
  for (const auto& [name, p] : named) {
    if (!p.requires_grad()) continue;
    ParamPlacement pl{name, p, -1, !(cfg.no_decay_bias_norm && no_decay && no_decay(name))};
    for (size_t i = 0; i < groups.size(); ++i) {
      if (!matches(i, name)) continue;
      if (pl.group >= 0)
        throw ConfigError(fmt::format(
            "{}optim.groups: parameter {} is matched by group '{}' and by group '{}'{}; a "
            "parameter belongs to one group (`clinic params RECIPE` lists where each lands)",
            at(groups[i]), name, groups[pl.group].name, groups[i].name,
            groups[pl.group].where.empty() ? "" : " (" + groups[pl.group].where + ")"));
      pl.group = static_cast<int>(i);
      ++hits[i];
    }
    out.push_back(std::move(pl));
  }
  for (size_t i = 0; i < groups.size(); ++i)
    if (hits[i] == 0)
      throw ConfigError(fmt::format(
          "{}optim.groups[{}] '{}' ({} '{}') matches no trainable parameter (`clinic params "
          "RECIPE` lists the names)",
          at(groups[i]), i, groups[i].name, groups[i].match.empty() ? "glob" : "match",
          groups[i].match.empty() ? groups[i].glob : groups[i].match));
  return out;
}

OptimConfig group_optim_config(const OptimConfig& cfg, int g, bool decay) {
  OptimConfig c = cfg;
  c.groups.clear();
  if (g >= 0) {
    const auto& o = cfg.groups.at(static_cast<size_t>(g));
    if (o.lr) c.lr = *o.lr;
    if (o.betas) c.betas = *o.betas;
    if (o.eps) c.eps = *o.eps;
    if (o.weight_decay) c.weight_decay = *o.weight_decay;
  }
  if (!decay) c.weight_decay = 0;
  return c;
}

std::string group_name(const OptimConfig& cfg, int g) {
  return g < 0 ? std::string() : cfg.groups.at(static_cast<size_t>(g)).name;
}

}  // namespace clinic
