// clinic diagnose RUN_DIR... | clinic analyze RECIPE --depths --variants
#include <filesystem>
#include <iostream>

#include "framework/errors.h"
#include "framework/report/report.h"
#include "tools/command.h"

namespace clinic::cli {

void add_diagnose_commands(CLI::App& app, Action& action) {
  static std::vector<std::string> run_dirs;
  static std::string out;
  auto* d = app.add_subcommand("diagnose",
                               "report why a run is (un)stable: plots, diagnosis, cures");
  d->add_option("run_dirs", run_dirs, "run directories (several are overlaid)")->required();
  d->add_option("--out", out, "report directory (default FIRST_RUN_DIR/report)");
  d->callback([&action] {
    action = [] {
      std::vector<RunData> runs;
      for (const auto& dir : run_dirs) {
        if (!std::filesystem::is_directory(dir))
          throw DataError(dir + ": not a directory (give clinic run dirs)");
        runs.push_back(read_run(dir));
        // Each unreadable line once on stderr (the report lists them all).
        const auto& problems = runs.back().data_problems;
        for (size_t i = 0; i < problems.size() && i < 10; ++i)
          std::cerr << "clinic: warning: " << problems[i] << "\n";
        if (problems.size() > 10)
          std::cerr << "clinic: warning: " << problems.size() - 10
                    << " more unreadable lines in " << dir << "/metrics.jsonl (listed in the report)\n";
      }
      std::string dir = out.empty() ? run_dirs.front() + "/report" : out;
      if (!out.empty() && std::filesystem::exists(out) && !std::filesystem::is_directory(out))
        throw DataError("--out " + out + ": exists and is not a directory; give a directory for "
                        "the report (the file is left as it is)");
      std::cout << write_diagnose_report(runs, dir) << "report: " << dir << "/report.md, " << dir
                << "/report.html\n";
    };
  });
  add_analyze_command(app, action);
}

}  // namespace clinic::cli
