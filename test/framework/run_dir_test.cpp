// Run-dir ownership: one training process per run dir, and the temporaries a
// killed process leaves behind.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "framework/data/text.h"
#include "framework/errors.h"
#include "framework/train/run_dir.h"
#include "framework/train/trainer.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;

// A PID that certainly does not run: a child that exited and was reaped.
pid_t dead_pid() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

TEST(RunDir, SecondOwnerIsRefusedNamingTheHolder) {
  TempDir d;
  std::string e;
  {
    RunDirLock first(d.path());
    e = test::error_of<DataError>([&] { RunDirLock second(d.path()); });
    EXPECT_NE(e.find("run dir is in use by clinic process " + std::to_string(::getpid())),
              std::string::npos)
        << e;
    // Another process sees the same lock (flock is per open file description
    // and the kernel's, not this process's).
    pid_t child = ::fork();
    if (child == 0) {
      try {
        RunDirLock third(d.path());
      } catch (const DataError&) {
        ::_exit(7);
      }
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_EQ(WEXITSTATUS(status), 7);
  }
  RunDirLock again(d.path());  // released with its holder
}

// Two `clinic train` on one run dir both ran and interleaved checkpoints.
TEST(RunDir, TwoTrainersOnOneRunDir) {
  TempDir d;
  test::write_copy_corpus(d.file("corpus"), 100, 10);
  RunConfig cfg = parse_recipe_text(test::copy_recipe(d.file("corpus")), "copy.yaml");
  Trainer a(cfg, d.file("run"));
  a.setup();
  std::string e = test::error_of<DataError>([&] { Trainer(cfg, d.file("run")).setup(); });
  EXPECT_NE(e.find("in use by clinic process"), std::string::npos) << e;
  EXPECT_NE(e.find("use another --run-dir"), std::string::npos) << e;
}

TEST(RunDir, StaleTemporariesOfDeadProcessesAreRemoved) {
  TempDir d;
  std::string dead = d.file("checkpoint_last.pt.tmp." + std::to_string(dead_pid()));
  std::string live = d.file("checkpoint_last.pt.tmp." + std::to_string(::getppid()));
  std::string mine = d.file("x.tmp." + std::to_string(::getpid()));
  std::string other = d.file("notes.tmp.txt");
  for (const auto& f : {dead, live, mine, other}) test::write_text(f, "x");
  auto removed = remove_stale_temporaries(d.path());
  EXPECT_EQ(removed, std::vector<std::string>{dead});
  EXPECT_FALSE(std::filesystem::exists(dead));
  for (const auto& f : {live, mine, other}) EXPECT_TRUE(std::filesystem::exists(f)) << f;
  // The trainer cleans its run dir and cache at start.
  test::write_copy_corpus(d.file("corpus"), 50, 5);
  std::filesystem::create_directories(d.file("run/cache"));
  std::string stale_cache = d.file("run/cache/train.src.bin.tmp." + std::to_string(dead_pid()));
  test::write_text(stale_cache, "partial");
  Trainer t(parse_recipe_text(test::copy_recipe(d.file("corpus")), "copy.yaml"), d.file("run"));
  t.setup();
  EXPECT_FALSE(std::filesystem::exists(stale_cache));
  EXPECT_NE(read_file(d.file("run/train.log")).find("no longer runs"), std::string::npos);
}

}  // namespace
}  // namespace clinic
