// clinic train RECIPE [--set ...] [--run-dir DIR] | clinic vocab RECIPE
#include <filesystem>
#include <iostream>

#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/logging.h"
#include "framework/train/average.h"
#include "framework/train/run_dir.h"
#include "framework/train/trainer.h"
#include "tools/command.h"

namespace clinic::cli {

namespace {
std::string default_run_dir(const std::string& recipe) {
  std::string name = std::filesystem::path(recipe).replace_extension().string();
  for (auto& c : name)
    if (c == '/') c = '-';
  return "runs/" + name;
}
}  // namespace

void add_train_commands(CLI::App& app, Action& action) {
  static std::string recipe, run_dir;
  static std::vector<std::string> overrides;
  auto* train = app.add_subcommand("train", "train a model from a recipe (resumes a run dir)");
  train->add_option("recipe", recipe, "recipe name or path")->required();
  train->add_option("--run-dir", run_dir, "output directory (default runs/<recipe>)");
  add_overrides(train, &overrides);
  train->callback([&action] {
    action = [] {
      RunConfig cfg = recipe_from_cli(recipe, overrides);
      install_stop_signal_handlers();
      Trainer t(cfg, run_dir.empty() ? default_run_dir(recipe) : run_dir);
      t.fit();
    };
  });

  auto* vocab = app.add_subcommand("vocab", "build the recipe's vocabulary into a run dir");
  vocab->add_option("recipe", recipe, "recipe name or path")->required();
  vocab->add_option("--run-dir", run_dir, "output directory (default runs/<recipe>)");
  add_overrides(vocab, &overrides);
  vocab->callback([&action] {
    action = [] {
      RunConfig cfg = recipe_from_cli(recipe, overrides);
      std::string dir = run_dir.empty() ? default_run_dir(recipe) : run_dir;
      std::filesystem::create_directories(dir);
      RunDirLock lock(dir);
      init_logging(dir);
      prepare_vocab(cfg.data, dir);
    };
  });

  static int64_t last = 0;
  static std::string epochs, out;
  auto* avg = app.add_subcommand("average", "average checkpoints of a run (fairseq semantics)");
  avg->add_option("--run-dir", run_dir, "run directory")->required();
  avg->add_option("--last", last,
                  "average the last N update checkpoints (checkpoint_uN.pt; the last N epoch "
                  "checkpoints when the run kept none)");
  avg->add_option("--epochs", epochs, "epoch range A-B of checkpoint_epochN.pt files");
  avg->add_option("--out", out, "output file (default RUN_DIR/checkpoint_avg.pt)");
  avg->callback([&action] {
    action = [] {
      auto files = select_checkpoints(run_dir, last, epochs);
      std::string dst = out.empty() ? run_dir + "/checkpoint_avg.pt" : out;
      average_checkpoints(files, dst);
      std::cout << "averaged " << files.size() << " checkpoints ("
                << std::filesystem::path(files.front()).filename().string() << " .. "
                << std::filesystem::path(files.back()).filename().string() << ") into " << dst
                << "\n";
    };
  });
}

}  // namespace clinic::cli
