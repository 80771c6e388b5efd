// Data-parallel training on c10d Gloo (framework/distributed): the oracle of
// a 2-rank job is one process with train.update_freq = 2 on the same data
// and seed (dropout 0: ranks draw their own masks), which sums the same two
// batches' gradients in one .grad.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "framework/distributed/c10d_world.h"
#include "framework/distributed/launch.h"
#include "framework/errors.h"
#include "framework/model.h"
#include "framework/train/checkpoint.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

struct Job {
  TempDir dir;
  std::string recipe;
  Job() {
    test::write_copy_corpus(dir.file("corpus"), 400, 40);
    recipe = dir.file("r.yaml");
    test::write_text(recipe, test::copy_recipe(dir.file("corpus"), "pre_ln"));
  }
  std::string train(const std::string& run, const std::string& extra) const {
    return test::clinic_bin() + " train " + recipe + " --run-dir " + dir.file(run) +
           " --set model.dropout=0 --set train.threads=1 --set data.max_tokens=64"
           " --set train.log_interval=1 " + extra;
  }
  std::map<std::string, torch::Tensor> params(const std::string& run, int64_t* update) const {
    RunConfig cfg = parse_recipe_text(test::copy_recipe(dir.file("corpus"), "pre_ln"), "r");
    CheckpointMeta meta;
    auto params = test::checkpoint_params(cfg.model, dir.file(run + "/checkpoint_last.pt"), &meta);
    if (update) *update = meta.state.update;
    return params;
  }
};

void expect_same_params(const std::map<std::string, torch::Tensor>& a,
                        const std::map<std::string, torch::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a)
    EXPECT_TRUE(torch::allclose(v, b.at(k), 1e-5, 1e-7))
        << what << ": " << k << " max |diff| " << (v - b.at(k)).abs().max().item<double>();
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!backend_available("gloo")) GTEST_SKIP() << "this LibTorch build has no c10d Gloo headers";
  }
};

TEST_F(Distributed, TwoGlooRanksMatchOneProcessWithUpdateFreqTwo) {
  Job job;
  std::string out;
  ASSERT_EQ(test::run_shell(job.train("single", "--set train.max_updates=12 --set train.update_freq=2"), &out), 0) << out;
  ASSERT_EQ(test::run_shell(job.train("ranks", "--set train.max_updates=12 --nproc 2"), &out), 0) << out;
  int64_t ua = 0, ub = 0;
  auto a = job.params("single", &ua), b = job.params("ranks", &ub);
  EXPECT_EQ(ua, 12);
  EXPECT_EQ(ub, 12);
  expect_same_params(a, b, "2 ranks vs update_freq 2");
  // Summed token counts normalise the loss as the single process does.
  auto la = test::logged_losses(job.dir.file("single/metrics.jsonl"));
  auto lb = test::logged_losses(job.dir.file("ranks/metrics.jsonl"));
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb.size(), 12u);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(lb[i], la[i], 1e-4 * la[i]) << "update " << i + 1;
  // Rank 0 alone writes, and says what the job is.
  std::string log = read_file(job.dir.file("ranks/train.log"));
  EXPECT_NE(log.find("world size 2, backend gloo"), std::string::npos) << log;
  EXPECT_EQ(log.find("rank 1,"), std::string::npos) << log;
}

// torchrun (Debian's python3-torch, the LibTorch clinic links here) launches
// the job clinic's own --nproc launches: same parameters. test/tools/torchrun.py
// runs torchrun's main() with one fix for Python 3.11 (see there).
TEST_F(Distributed, TorchrunLaunchesTheSameJob) {
  std::string out;
  if (test::run_shell("/usr/bin/python3 -c 'import torch.distributed.run'", &out) != 0)
    GTEST_SKIP() << "no torchrun here (Debian's python3-torch)";
  Job job;
  ASSERT_EQ(test::run_shell(job.train("launcher", "--set train.max_updates=6 --nproc 2"), &out), 0) << out;
  std::string cmd = "/usr/bin/python3 " + std::string(kSourceDir) +
                    "/test/tools/torchrun.py --standalone --nproc_per_node 2 --no_python " +
                    job.train("torchrun", "--set train.max_updates=6");
  ASSERT_EQ(test::run_shell(cmd, &out), 0) << out;
  expect_same_params(job.params("launcher", nullptr), job.params("torchrun", nullptr),
                     "torchrun vs --nproc");
}

// SIGKILL of one rank mid-run: the job exits non-zero within seconds (no
// hang), the last checkpoint loads, and a resume (same world size) ends where
// an uninterrupted job ends -- with dropout, so each rank's generator state
// must come back from the checkpoint.
TEST_F(Distributed, AKilledRankStopsTheJobAndItsCheckpointResumes) {
  Job job;
  std::string out;
  ASSERT_EQ(test::run_shell(job.train("straight", "--set train.max_updates=30 --set model.dropout=0.1 "
                                                  "--nproc 2"),
                            &out),
            0)
      << out;
  const std::string args =
      "--set train.max_updates=30 --set model.dropout=0.1 --set train.save_interval=1 --nproc 2";
  pid_t launcher = ::fork();
  if (launcher == 0) {
    std::string cmd = "exec " + job.train("killed", args) + " >" + job.dir.file("killed.out") + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    ::_exit(127);
  }
  const std::string marker = job.dir.file("killed/checkpoint_u4.pt");
  for (int i = 0; i < 6000 && !std::filesystem::exists(marker); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(std::filesystem::exists(marker));
  std::string children;
  std::getline(std::ifstream(fmt::format("/proc/{}/task/{}/children", launcher, launcher)), children);
  std::istringstream ids(children);
  std::vector<pid_t> workers;
  for (pid_t p; ids >> p;) workers.push_back(p);
  ASSERT_EQ(workers.size(), 2u) << children;
  auto rank_of = [](pid_t p) {  // from the worker's RANK variable
    std::ifstream env(fmt::format("/proc/{}/environ", p));
    for (std::string v; std::getline(env, v, '\0');)
      if (v.rfind("RANK=", 0) == 0) return std::stoi(v.substr(5));
    return -1;
  };
  ::kill(rank_of(workers[0]) == 1 ? workers[0] : workers[1], SIGKILL);
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  ::waitpid(launcher, &status, 0);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_LT(waited, 30.0);
  std::string said = read_file(job.dir.file("killed.out"));
  EXPECT_NE(said.find("clinic: error: rank 1 of 2 failed (killed by signal 9)"), std::string::npos)
      << said;
  int64_t at = 0;
  job.params("killed", &at);  // intact: loads and verifies its checksum
  EXPECT_GE(at, 4);
  EXPECT_LT(at, 30) << "the job finished before a rank could be killed";
  ASSERT_EQ(test::run_shell(job.train("killed", args), &out), 0) << out;
  int64_t end = 0;
  auto resumed = job.params("killed", &end);
  EXPECT_EQ(end, 30);
  expect_same_params(job.params("straight", nullptr), resumed, "killed and resumed vs straight");
}

TEST(DistEnv, TorchrunVariablesAreCheckedAndNamed) {
  auto set = [](const char* rank, const char* world) {
    ::setenv("RANK", rank, 1);
    ::setenv("WORLD_SIZE", world, 1);
  };
  set("3", "2");
  EXPECT_EQ(test::error_of<ConfigError>([] { dist_env_from_environment(); }),
            "environment: RANK=3 but WORLD_SIZE=2 (ranks are 0..1)");
  set("0", "two");
  EXPECT_EQ(test::error_of<ConfigError>([] { dist_env_from_environment(); }),
            "environment: WORLD_SIZE=two: expected an integer in [1, 65535]");
  set("0", "2");
  for (const char* port : {"99999", "0", "-1", "80x", "99999999999999999999"}) {
    ::setenv("MASTER_PORT", port, 1);
    EXPECT_EQ(test::error_of<ConfigError>([] { dist_env_from_environment(); }),
              std::string("environment: MASTER_PORT=") + port + ": expected an integer in [1, 65535]");
  }
  set("abc", "2");
  EXPECT_EQ(test::error_of<ConfigError>([] { dist_env_from_environment(); }),
            "environment: RANK=abc: expected an integer in [0, 65535]");
  set("1", "2");
  ::setenv("MASTER_PORT", "2345", 1);
  DistEnv e = dist_env_from_environment();
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.master_port, 2345);
  EXPECT_TRUE(e.distributed());
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_PORT"}) ::unsetenv(v);
  EXPECT_FALSE(dist_env_from_environment().distributed());
}

}  // namespace
}  // namespace clinic
