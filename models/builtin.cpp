#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include <mutex>

#include "framework/config.h"

#include "framework/optim/optimizers.h"
#include "framework/optim/schedule.h"
#include "framework/train/loss.h"
#include "models/cases.h"
#include "models/residual.h"
#include "models/transformer.h"

namespace clinic {

void register_builtin_models() {
  model_registry().add("transformer",
                       [](const ModelConfig& c, const VocabInfo& v) {
                         return std::make_shared<TransformerImpl>(c, v);
                       });
}

// Defined here, in the library that sees both framework/ and models/, so one
// call registers everything a recipe can name.
void register_builtins() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_builtin_optimizers();
    register_builtin_schedules();
    register_builtin_losses();
    register_builtin_residuals();
    register_builtin_models();
    register_case_models();
  });
}

void check_registered_names(const RunConfig& cfg) {
  auto check = [&](const std::string& key, const std::string& value, const auto& registry) {
    if (registry.contains(value)) return;
    auto names = registry.names();
    auto it = cfg.origin.find(key);
    std::string hint = closest_match(value, names);
    throw ConfigError(fmt::format("{}: {} = '{}': unknown {}; known: {}{}",
                                  it == cfg.origin.end() ? "default" : it->second, key, value,
                                  registry.kind(), fmt::join(names, ", "),
                                  hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
  };
  check("model.arch", cfg.model.arch, model_registry());
  check("model.residual", cfg.model.residual, residual_registry());
  if (!cfg.model.encoder_residual.empty())
    check("model.encoder_residual", cfg.model.encoder_residual, residual_registry());
  if (!cfg.model.decoder_residual.empty())
    check("model.decoder_residual", cfg.model.decoder_residual, residual_registry());
  check("optim.name", cfg.optim.name, optimizer_registry());
  check("schedule.name", cfg.schedule.name, schedule_registry());
  for (size_t i = 0; i < cfg.optim.groups.size(); ++i)
    if (cfg.optim.groups[i].schedule)
      check(fmt::format("optim.groups[{}].schedule.name", i), cfg.optim.groups[i].schedule->name,
            schedule_registry());
  check("train.criterion", cfg.train.criterion, loss_registry());
}

}  // namespace clinic
