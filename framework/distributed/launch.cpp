#include "framework/distributed/launch.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "framework/errors.h"

#include <cerrno>

namespace clinic {
namespace {

// A torchrun variable: an integer in [lo, hi] (ports: 1..65535; ranks and
// world sizes bounded by the same to keep the value an int).
int env_int(const char* name, int fallback, int lo, int hi = 65535) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v, &end, 10);
  if (*end || errno == ERANGE || x < lo || x > hi)
    throw ConfigError(fmt::format("environment: {}={}: expected an integer in [{}, {}]", name, v,
                                  lo, hi));
  return static_cast<int>(x);
}


std::atomic<int> g_forward_signal{0};
void remember_signal(int sig) { g_forward_signal = sig; }

}  // namespace

int free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t n = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) {
    if (fd >= 0) ::close(fd);
    throw DataError("--nproc: cannot find a free TCP port on 127.0.0.1");
  }
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

DistEnv dist_env_from_environment() {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  e.master_port = env_int("MASTER_PORT", 29500, 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  if (const char* a = std::getenv("TORCHELASTIC_USE_AGENT_STORE"))
    e.agent_store = std::string(a) == "True" || std::string(a) == "1";
  e.restart = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0);
  if (e.rank >= e.world_size)
    throw ConfigError(fmt::format("environment: RANK={} but WORLD_SIZE={} (ranks are 0..{})",
                                  e.rank, e.world_size, e.world_size - 1));
  return e;
}

int run_local_workers(int nproc, const std::vector<std::string>& argv, double grace_s) {
  const int port = free_local_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) throw DataError("--nproc: fork failed");
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv("/proc/self/exe", args.data());
      std::cerr << "clinic: error: --nproc: cannot start a worker\n";
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::signal(SIGINT, remember_signal);
  std::signal(SIGTERM, remember_signal);
  std::vector<bool> done(pids.size(), false);
  int failure = 0, failed_rank = -1, running = nproc;
  double stop_deadline = -1;
  auto now = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  while (running > 0) {
    if (int sig = g_forward_signal.exchange(0)) {  // Ctrl-C / SIGTERM: every worker saves and stops
      for (size_t r = 0; r < pids.size(); ++r)
        if (!done[r]) ::kill(pids[r], sig);
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      size_t r = 0;
      while (r < pids.size() && pids[r] != pid) ++r;
      if (r == pids.size()) continue;
      done[r] = true;
      --running;
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && failure == 0) {
        failure = code;
        failed_rank = static_cast<int>(r);
        for (size_t k = 0; k < pids.size(); ++k)
          if (!done[k]) ::kill(pids[k], SIGTERM);
        stop_deadline = now() + grace_s;
      }
      continue;
    }
    if (stop_deadline > 0 && now() > stop_deadline) {
      for (size_t k = 0; k < pids.size(); ++k)
        if (!done[k]) ::kill(pids[k], SIGKILL);
      stop_deadline = -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (failure != 0)
    std::cerr << fmt::format("clinic: error: rank {} of {} failed ({}); the other workers were "
                             "stopped, the run dir keeps its last checkpoint\n",
                             failed_rank, nproc,
                             failure > 128 ? fmt::format("killed by signal {}", failure - 128)
                                           : fmt::format("exit status {}", failure));
  return failure;
}

}  // namespace clinic
