// clinic config RECIPE [--set ...] | clinic recipes | clinic keys
#include <iostream>

#include "framework/config.h"
#include "framework/registry.h"
#include "tools/command.h"

namespace clinic::cli {

void add_overrides(CLI::App* app, std::vector<std::string>* overrides) {
  app->add_option("--set", *overrides,
                  "override a recipe key: --set optim.lr=5e-4 (repeatable)");
}

RunConfig recipe_from_cli(const std::string& recipe, const std::vector<std::string>& overrides) {
  RunConfig cfg = load_recipe(recipe, overrides);
  check_registered_names(cfg);
  return cfg;
}

void add_config_commands(CLI::App& app, Action& action) {
  auto* cfg = app.add_subcommand("config", "print the fully resolved recipe as YAML");
  static std::string recipe;
  static std::vector<std::string> overrides;
  cfg->add_option("recipe", recipe, "recipe name (multi30k/admin) or path")->required();
  add_overrides(cfg, &overrides);
  cfg->callback([&action] {
    action = [] { std::cout << to_yaml(recipe_from_cli(recipe, overrides)); };
  });

  auto* list = app.add_subcommand("recipes", "list the recipes under recipes/");
  list->callback([&action] {
    action = [] {
      for (const auto& r : list_recipes()) std::cout << r << "\n";
    };
  });

  auto* keys = app.add_subcommand("keys", "print every recipe key as a Markdown table");
  keys->callback([&action] { action = [] { std::cout << describe_keys(); }; });
}

}  // namespace clinic::cli
