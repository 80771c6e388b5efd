// clinic: one binary, one subcommand per tools/cmd_*.cpp file.
#include <c10/util/Exception.h>

#include <iostream>
#include <new>

#include "framework/errors.h"
#include "framework/registry.h"
#include "tools/command.h"

#ifdef CLINIC_WITH_JEMALLOC
// Read by jemalloc at start-up. Decay off: never return freed pages to the
// kernel, so a training step reuses the previous step's memory instead of
// re-faulting it. lg_extent_max_active_fit: with decay off, freed extents
// coalesce into large dirty runs, and the default (6: reuse only if at most
// 64x the request) refuses to carve a 1-4 MB activation out of them, so each
// step mapped fresh memory: an 18+18-layer model grew ~75 MB per update and
// reached 12 GB in 140 updates. Allowing any ratio keeps RSS flat
// (clinic bench multi30k/deep --steps 2 vs 8: 1359 MB both, was 1553 -> 2721)
// and is faster (0.52 -> 0.72 updates/s).
extern "C" {
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1,lg_extent_max_active_fit:30";
}
#endif

namespace {
// Every failure is one line: the first line of the message, whatever the
// source (c10 appends a C++ backtrace, TorchScript a script traceback).
int report(const std::string& message, int code) {
  std::string line = message.substr(0, message.find('\n'));
  std::cerr << "clinic: error: " << line << "\n";
  return code;
}

std::string command_list(const CLI::App& app) {
  std::string names;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    names += (names.empty() ? "" : ", ") + sub->get_name();
  return names;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace clinic;
  CLI::App app{"clinic: train Transformers that do not diverge (Post-LN, Pre-LN, Admin)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "clinic 0.1.0");
  cli::Action action;
  try {
    register_builtins();
    cli::program_args().assign(argv, argv + argc);
    cli::add_config_commands(app, action);
    cli::add_params_command(app, action);
    cli::add_train_commands(app, action);
    cli::add_translate_commands(app, action);
    cli::add_bench_command(app, action);
    cli::add_diagnose_commands(app, action);
    cli::add_bpe_command(app, action);
    app.parse(argc, argv);
    action();
    return 0;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // CLI11 reports "A subcommand is required" for an unknown command too.
    if (argc > 1 && argv[1][0] != '-' && !app.get_subcommands().size() &&
        std::string(argv[1]) != "help")
      return report(std::string("unknown command '") + argv[1] + "'; commands: " +
                        command_list(app) + " (clinic --help)",
                    2);
    if (argc == 1)
      return report("a command is required: " + command_list(app) + " (clinic --help)", 2);
    std::string where;
    for (const auto* sub : app.get_subcommands()) where = sub->get_name() + ": ";
    return report(where + e.what() + " (clinic " +
                      (where.empty() ? std::string() : where.substr(0, where.size() - 2) + " ") +
                      "--help)",
                  2);
  } catch (const ConfigError& e) {
    return report(e.what(), 2);
  } catch (const c10::Error& e) {
    return report(e.what_without_backtrace(), 1);
  } catch (const std::bad_alloc&) {
    return report("out of memory (a memory allocation failed)", 1);
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  }
}
