// scripts/lib/runs.sh's progress line (the loop behind reproduce.sh, cases.sh,
// table1.sh). A resumed run's metrics.jsonl still holds the old session's
// updates past its checkpoint; the line must follow this session's log, not
// those records (it printed "0.00 s/update, ETA 0h00m" after every resume).
#include <filesystem>
#include <fstream>
#include <regex>

#include "test/support.h"

namespace clinic {
namespace {

namespace fs = std::filesystem;

std::string runs_sh() { return std::string(kSourceDir) + "/scripts/lib/runs.sh"; }

// `bash -c 'set -euo pipefail; source runs.sh; BODY'`, BODY single-quote free.
int with_runs_sh(const std::string& env, const std::string& body, std::string* out) {
  return test::run_shell(env + " bash -c 'set -euo pipefail; source " + runs_sh() + "; " + body +
                             "'",
                         out);
}

TEST(Runs, ProgressLineIsTheRateSinceTheSessionsFirstSample) {
  // 120 - 100 = 20 updates in 40 s: 2 s/update; 280 left: 560 s = 0h09m.
  std::string out;
  ASSERT_EQ(with_runs_sh("", "runs_progress_line r 120 100 400 40", &out), 0) << out;
  EXPECT_EQ(out, "r: update 120/400, 2.00 s/update, ETA 0h09m\n");
  // 3,000 updates left at 2.5 s: 7,500 s = 2h05m.
  ASSERT_EQ(with_runs_sh("", "runs_progress_line r 500 400 3500 250", &out), 0) << out;
  EXPECT_EQ(out, "r: update 500/3500, 2.50 s/update, ETA 2h05m\n");
  // Not yet past the origin: no rate to give.
  ASSERT_EQ(with_runs_sh("", "runs_progress_line r 100 100 400 30", &out), 0) << out;
  EXPECT_EQ(out, "r: update 100/400, ETA pending\n");
}

TEST(Runs, LogUpdateReadsOnlyThisSessionsLines) {
  test::TempDir d;
  const std::string log = d.file("r.log");
  std::string old_session =
      "2026-12-07 12:00:00 | info | [train] epoch 1 update 150 | loss 8.1 | nll 7.3\n"
      "2026-12-07 12:01:00 | info | [train] epoch 1 update 160 | loss 8.0 | nll 7.2\n";
  {
    std::ofstream f(log);
    f << old_session
      << "2026-12-07 15:31:07 | info | [train] resumed /x/checkpoint_last.pt at update 100 "
         "(epoch 1, batch 100)\n";
  }
  const std::string offset = std::to_string(old_session.size());
  std::string out;
  ASSERT_EQ(with_runs_sh("", "_runs_log_update " + log + " " + offset, &out), 0) << out;
  EXPECT_EQ(out, "100\n");
  { std::ofstream(log, std::ios::app) << "2026-12-07 15:31:59 | info | [valid] update 110 | loss 7.9\n"
                                       << "2026-12-07 15:31:59 | info | [train] epoch 1 update 110 "
                                          "| loss 8.095 | nll 7.295\n"; }
  ASSERT_EQ(with_runs_sh("", "_runs_log_update " + log + " " + offset, &out), 0) << out;
  EXPECT_EQ(out, "110\n");
  // Before this session logs a line, the old session's 160 must not be taken
  // for it (it is, read from the file's start).
  { std::ofstream f(log); f << old_session; }
  ASSERT_EQ(with_runs_sh("", "_runs_log_update " + log + " " + offset, &out), 0) << out;
  EXPECT_EQ(out, "");
  ASSERT_EQ(with_runs_sh("", "_runs_log_update " + log + " 0", &out), 0) << out;
  EXPECT_EQ(out, "160\n");
}

// The real loop with a stand-in `clinic` that resumes at update 100 of a run
// whose metrics.jsonl and log already reach 160, then logs 110..140 a second
// apart. Every progress line is this session's (100..140), none is 0 s/update.
TEST(Runs, AResumedRunsProgressFollowsItsOwnSession) {
  test::TempDir d;
  const std::string run = d.file("out/r"), fake = d.file("clinic");
  fs::create_directories(run);
  std::ofstream(run + "/metrics.jsonl") << "{\"kind\": \"train\", \"update\": 150}\n"
                                        << "{\"kind\": \"train\", \"update\": 160}\n";
  std::ofstream(run + ".log") << "x | info | [train] epoch 1 update 160 | loss 8.0\n";
  {
    std::ofstream f(fake);
    f << "#!/bin/bash\n"
         "echo \"x | info | [train] resumed $5/checkpoint_last.pt at update 100 (epoch 1)\"\n"
         "for u in 110 120 130 140; do sleep 1.1; "
         "echo \"x | info | [train] epoch 1 update $u | loss 8.0\"; done\n";
  }
  fs::permissions(fake, fs::perms::owner_all);
  std::string out;
  ASSERT_EQ(with_runs_sh("CLINIC=" + fake + " PROGRESS_EVERY=1 JOBS=1",
                         "runs_train " + run + " 400 --recipe x; runs_wait",
                         &out),
            0)
      << out;
  std::regex line(R"(r: update (\d+)/400, (ETA pending|([0-9.]+) s/update, ETA \dh\d\dm))");
  int lines = 0, rated = 0;
  for (auto it = std::sregex_iterator(out.begin(), out.end(), line); it != std::sregex_iterator();
       ++it, ++lines) {
    int u = std::stoi((*it)[1]);
    EXPECT_GE(u, 100) << out;
    EXPECT_LE(u, 140) << out;
    if ((*it)[3].matched) {
      ++rated;
      EXPECT_GT(std::stod((*it)[3]), 0.0) << out;
    }
  }
  EXPECT_GE(lines, 2) << out;
  EXPECT_GE(rated, 1) << out;
  EXPECT_NE(out.find("r: finished in"), std::string::npos) << out;
}

}  // namespace
}  // namespace clinic
