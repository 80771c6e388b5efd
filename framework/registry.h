#pragma once
// One generic name -> builder registry, used for models, residual variants,
// optimizers, LR schedules and losses. Built-ins are added by an explicit
// register_builtins() under std::call_once (no self-registering statics, so
// static-library linking can never drop an entry).
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "framework/errors.h"

namespace clinic {

template <class Builder>
class Registry {
 public:
  /// `kind` names the registry in messages ("residual variant").
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Adds a builder; a second entry under the same name is an error.
  void add(const std::string& name, Builder builder) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!entries_.emplace(name, std::move(builder)).second)
      throw std::logic_error(kind_ + " '" + name + "' is already registered");
  }

  bool contains(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.count(name) > 0;
  }

  /// The builder for `name`; unknown names list what is known.
  const Builder& get(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string known;
      for (const auto& kv : entries_) known += (known.empty() ? "" : ", ") + kv.first;
      throw ConfigError("unknown " + kind_ + " '" + name + "'; known: " + known);
    }
    return it->second;
  }

  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }

  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  mutable std::mutex mu_;
  std::map<std::string, Builder> entries_;
};

/// Registers every built-in model, residual variant, optimizer, schedule and
/// loss exactly once. Safe to call from anywhere, any number of times.
void register_builtins();

struct RunConfig;
/// Every registry name a recipe gives (model.arch, model.residual,
/// optim.name, schedule.name, train.criterion) is registered; else a
/// ConfigError naming the recipe line, the key, what is known and the closest
/// name. Commands call it right after loading a recipe, so `clinic config`
/// rejects what `clinic train` would, and before any vocabulary is built.
void check_registered_names(const RunConfig& cfg);

}  // namespace clinic
