// clinic bench RECIPE [--set ...] [--steps N] [--json]
#include <iostream>

#include "framework/bench.h"
#include "framework/config.h"
#include "tools/command.h"

namespace clinic::cli {

void add_bench_command(CLI::App& app, Action& action) {
  static std::string recipe;
  static std::vector<std::string> overrides;
  static BenchOptions opts;
  auto* b = app.add_subcommand("bench", "measure training/translation throughput and MFU");
  b->add_option("recipe", recipe, "recipe name or path")->required();
  add_overrides(b, &overrides);
  b->add_option("--steps", opts.steps, "timed training updates")->check(CLI::Range(1, 1000000));
  b->add_option("--warmup", opts.warmup, "untimed updates first")->check(CLI::Range(0, 1000000));
  b->add_flag("--json", opts.json, "print one JSON object");
  b->add_flag("--translate", opts.translate, "also time beam 5 and beam 1 decoding");
  b->add_flag("--compare-python", opts.compare_python,
              "also time tools/bench/reference_train.py (plain PyTorch), A/B alternating");
  b->add_option("--profile", opts.profile, "write a Chrome trace of one extra, untimed update");
  b->add_flag("--diag", opts.diag,
              "also time the stability instruments (a measurement around every timed update, "
              "timed apart) and print their cost at the recipe's diag.interval");
  b->add_option("--task", opts.task,
                "synthetic batches: random (throughput) or copy (target = source, a loss "
                "curve that falls)")
      ->check(CLI::IsMember({"random", "copy"}));
  b->add_flag("--throughput", opts.throughput,
              "time updates back to back, decided on the device (train.host_reads: log_interval): "
              "no per-phase synchronisation, no host read per update");
  b->add_option("--save-init", opts.save_init,
                "write the freshly initialised model as TorchScript here (for "
                "tools/bench/reference_train.py)");
  b->add_option("--curve-points", opts.curve_points, "points of the --json loss_curve")
      ->check(CLI::Range(1, 100000));
  b->callback([&action] {
    action = [] { run_bench(recipe_from_cli(recipe, overrides), opts, std::cout); };
  });
}

}  // namespace clinic::cli
