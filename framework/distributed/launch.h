#pragma once
// How a data-parallel job starts: from torchrun's environment (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or `clinic train
// --nproc N`, which spawns N local workers with that environment itself.
#include <string>
#include <vector>

namespace clinic {

struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT
  /// (TORCHELASTIC_USE_AGENT_STORE): every rank joins it as a client.
  bool agent_store = false;
  int restart = 0;  // TORCHELASTIC_RESTART_COUNT: keys of a restarted job are fresh
  bool distributed() const { return world_size > 1; }
};

/// The torchrun variables of this process; world size 1 when WORLD_SIZE is
/// unset. A malformed or inconsistent value is a ConfigError naming it.
DistEnv dist_env_from_environment();

/// A TCP port that is free now on 127.0.0.1 (the kernel picks it).
int free_local_port();

/// Runs `argv` (this program and its arguments) as `nproc` workers with
/// RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set (a free port on
/// 127.0.0.1), forwarding SIGINT/SIGTERM. When one worker fails, the others
/// are stopped (SIGTERM, then SIGKILL after `grace_s`) and the failure is
/// returned: the first failing worker's exit status (128 + signal when killed).
int run_local_workers(int nproc, const std::vector<std::string>& argv, double grace_s = 10);

}  // namespace clinic
