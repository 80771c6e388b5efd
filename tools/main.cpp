// clinic: one binary, one subcommand per tools/cmd_*.cpp file.
#include <iostream>

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

int main(int argc, char** argv) {
  using namespace clinic;
  CLI::App app{"clinic: train Transformers that do not diverge (Post-LN, Pre-LN, Admin)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "clinic 0.1.0");
  cli::Action action;
  try {
    register_builtins();
    cli::add_config_commands(app, action);
    cli::add_train_commands(app, action);
    cli::add_translate_commands(app, action);
    cli::add_bench_command(app, action);
    app.parse(argc, argv);
    action();
    return 0;
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const ConfigError& e) {
    std::cerr << "clinic: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // c10::Error appends a C++ backtrace after the first line; users need the message.
    auto cut = msg.find("\nException raised from");
    if (cut != std::string::npos) msg.resize(cut);
    std::cerr << "clinic: error: " << msg << "\n";
    return 1;
  }
}
