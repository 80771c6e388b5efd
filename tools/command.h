#pragma once
// Each tools/cmd_*.cpp adds its subcommands to the CLI and sets the action
// main() runs. Exit codes: 0 success, 2 usage/config error, 1 runtime error.
#include <CLI/CLI.hpp>

#include "framework/config.h"

#include <functional>
#include <string>
#include <vector>

namespace clinic::cli {

using Action = std::function<void()>;

/// load_recipe + check_registered_names: every command that takes a recipe
/// rejects an unknown optimizer/model/... name before doing any work.
RunConfig recipe_from_cli(const std::string& recipe, const std::vector<std::string>& overrides);

/// Registers "--set" on a subcommand.
void add_overrides(CLI::App* app, std::vector<std::string>* overrides);

void add_config_commands(CLI::App& app, Action& action);
void add_train_commands(CLI::App& app, Action& action);
void add_translate_commands(CLI::App& app, Action& action);
void add_bench_command(CLI::App& app, Action& action);
void add_diagnose_commands(CLI::App& app, Action& action);
void add_analyze_command(CLI::App& app, Action& action);
void add_params_command(CLI::App& app, Action& action);
void add_bpe_command(CLI::App& app, Action& action);
/// This process' command line (main sets it; `train --nproc` re-runs it).
std::vector<std::string>& program_args();

}  // namespace clinic::cli
