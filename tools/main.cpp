// clinic: one binary, one subcommand per tools/cmd_*.cpp file.
#include <iostream>

#include "framework/errors.h"
#include "framework/registry.h"
#include "tools/command.h"

#ifdef CLINIC_WITH_JEMALLOC
// Read by jemalloc at start-up: never return freed pages to the kernel, so a
// training step reuses the previous step's memory instead of re-faulting it.
extern "C" {
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
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
