// clinic train RECIPE [--set ...] [--run-dir DIR] | clinic vocab RECIPE
#include <filesystem>
#include <iostream>
#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/distributed/c10d_world.h"
#include "framework/distributed/launch.h"
#include "framework/errors.h"
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
// The command line without --nproc (its value too): what each worker runs.
std::vector<std::string> worker_args(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}
}  // namespace

std::vector<std::string>& program_args() {
  static std::vector<std::string> args;
  return args;
}

void add_train_commands(CLI::App& app, Action& action) {
  static std::string recipe, run_dir;
  static std::vector<std::string> overrides;
  auto* train = app.add_subcommand("train", "train a model from a recipe (resumes a run dir)");
  train->add_option("recipe", recipe, "recipe name or path")->required();
  train->add_option("--run-dir", run_dir, "output directory (default runs/<recipe>)");
  static int nproc = 1;
  train->add_option("--nproc", nproc,
                    "data-parallel workers on this machine (c10d: Gloo on CPU, NCCL on CUDA); under torchrun "
                    "(WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT) leave it out")
      ->check(CLI::Range(1, 1024));
  add_overrides(train, &overrides);
  train->callback([&action] {
    action = [] {
      RunConfig cfg = recipe_from_cli(recipe, overrides);
      DistEnv env = dist_env_from_environment();
      if (nproc > 1 && env.distributed())
        throw ConfigError(fmt::format("--nproc {} inside a job that already has WORLD_SIZE={}: "
                                      "use one launcher",
                                      nproc, env.world_size));
      if (nproc > 1 && pick_device(cfg.train.device).is_cpu()) {
        // CPU ranks past the cores only contend (99 ranks on 2 cores made no
        // update in a minute); a GPU job is bounded by the GPUs instead.
        const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        if (nproc > cores)
          throw ConfigError(fmt::format("--nproc {}: this machine has {} CPU core{}; CPU ranks "
                                        "beyond the cores only contend: use --nproc {} or fewer",
                                        nproc, cores, cores == 1 ? "" : "s", cores));
      }
      if (nproc > 1) {
        // Refused before any worker starts when this build lacks the backend.
        const std::string backend = resolve_backend(cfg.train.dist_backend, cfg.train.device);
        if (!backend_available(backend)) make_c10d_world(DistEnv{0, nproc}, backend, {}, 0);
        int code = run_local_workers(nproc, worker_args(program_args()));
        if (code != 0) std::exit(code > 255 ? 1 : code);
        return;
      }
      install_stop_signal_handlers();
      std::shared_ptr<World> world;
      if (env.distributed())
        world = make_c10d_world(env, resolve_backend(cfg.train.dist_backend, cfg.train.device),
                                std::chrono::seconds(cfg.train.dist_timeout_s));
      Trainer t(cfg, run_dir.empty() ? default_run_dir(recipe) : run_dir, world);
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
