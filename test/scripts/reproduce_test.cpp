// scripts/reproduce.sh iwslt14 end to end at toy scale (issue 35): the
// fixture's 500 BPE'd valid lines stand in for the train split, a 1+1-layer
// d=32 model trains 12 updates per run, 2 variants x 2 seeds. Every stage runs;
// re-running skips finished work; the table's numbers are what an independent
// `clinic eval` of each averaged checkpoint prints; bad data is one error.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "test/support.h"

namespace clinic {
namespace {

namespace fs = std::filesystem;

// Lines [from, to) of a fixture file.
void copy_lines(const fs::path& src, const fs::path& dst, size_t from, size_t to) {
  std::ifstream in(src);
  std::ofstream out(dst);
  size_t i = 0;
  for (std::string line; std::getline(in, line); ++i)
    if (i >= from && i < to) out << line << "\n";
}

// The toy DATA_DIR: train = all 500 lines, valid = 0-59, test = 100-139.
void write_toy_iwslt(const std::string& dir) {
  fs::create_directories(dir);
  fs::path fx = fs::path(kSourceDir) / "test/data/iwslt14/bpe10k";
  for (std::string lang : {"de", "en"}) {
    copy_lines(fx / ("valid." + lang), dir + "/train." + lang, 0, 500);
    copy_lines(fx / ("valid." + lang), dir + "/valid." + lang, 0, 60);
    copy_lines(fx / ("valid." + lang), dir + "/test." + lang, 100, 140);
  }
}

std::string reproduce_cmd(const std::string& data, const std::string& out) {
  return "CLINIC=" + test::clinic_bin() + " PROGRESS_EVERY=0 " + std::string(kSourceDir) +
         "/scripts/reproduce.sh iwslt14 " + data +
         " --seeds 1,2 --variants post_ln,admin --max-updates 12 --average-last 2 --device cpu"
         " --out " + out +
         " --set model.encoder_layers=1 --set model.decoder_layers=1 --set model.d_model=32"
         " --set model.ffn_dim=64 --set model.heads=2 --set train.precision=fp32"
         " --set train.threads=1 --set eval.max_len_b=10";
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(Reproduce, Iwslt14RunsEveryStageResumesAndTablesWhatEvalScores) {
  test::TempDir d;
  const std::string data = d.file("data"), out = d.file("out");
  write_toy_iwslt(data);
  std::string log;
  ASSERT_EQ(test::run_shell(reproduce_cmd(data, out), &log), 0) << log;
  // Stage 1 named the copy by its blob ids, computed without git: they must
  // equal git's own (when git is there to ask).
  EXPECT_NE(log.find("data: a different copy: train: 500 lines (the paper's copy: 160239)"),
            std::string::npos)
      << log;
  std::string git_id;
  if (test::run_shell("git hash-object " + data + "/train.de", &git_id) == 0) {
    git_id = git_id.substr(0, 40);
    EXPECT_NE(log.find("train.de: 500 lines, blob " + git_id), std::string::npos) << log;
  }
  for (const char* stage : {"== 2. vocab", "== 3. train", "cost: ", "== 4. average", "== 6. table"})
    EXPECT_NE(log.find(stage), std::string::npos) << stage << "\n" << log;
  EXPECT_EQ(occurrences(log, ": training (log: "), 4u) << log;

  auto table = nlohmann::json::parse(read_file(out + "/table.json"));
  EXPECT_EQ(table["max_updates"], 12);
  EXPECT_DOUBLE_EQ(table["variants"]["post_ln"]["paper"]["mean"].get<double>(), 35.64);
  EXPECT_DOUBLE_EQ(table["variants"]["admin"]["paper"]["std"].get<double>(), 0.15);
  const std::regex bleu_line(R"(BLEU = ([0-9.]+))");
  for (std::string v : {"post_ln", "admin"}) {
    std::vector<double> per;
    for (std::string s : {"1", "2"}) {
      const std::string run = out + "/" + v + "-seed" + s;
      // Every run used the one joined dictionary of stage 2.
      EXPECT_EQ(read_file(run + "/dict.txt"), read_file(out + "/vocab/dict.txt")) << run;
      // The average is of the last 2 epoch checkpoints, and an independent
      // eval of it prints the table's number.
      ASSERT_TRUE(fs::exists(run + "/checkpoint_epoch2.pt")) << run;
      std::string eval;
      ASSERT_EQ(test::run_shell(test::clinic_bin() + " eval --checkpoint " + run +
                                    "/average_last2.pt --split test --beam 5 --output " +
                                    d.file("hyp." + v + s),
                                &eval),
                0)
          << eval;
      std::smatch m;
      ASSERT_TRUE(std::regex_search(eval, m, bleu_line)) << eval;
      double expect = std::stod(m[1]);
      EXPECT_DOUBLE_EQ(table["variants"][v]["per_seed"][s].get<double>(), expect) << v << s;
      per.push_back(expect);
    }
    double mean = (per[0] + per[1]) / 2, sd = std::abs(per[0] - per[1]) / std::sqrt(2.0);
    EXPECT_NEAR(table["variants"][v]["mean"].get<double>(), mean, 0.0051) << v;
    EXPECT_NEAR(table["variants"][v]["std"].get<double>(), sd, 0.0051) << v;
  }
  std::string md = read_file(out + "/table.md");
  EXPECT_NE(md.find("| Post-LN | "), std::string::npos) << md;
  EXPECT_NE(md.find("35.64 ± 0.23"), std::string::npos) << md;

  // Re-running trains, averages and decodes nothing, and writes the same table.
  const std::string json_before = read_file(out + "/table.json");
  ASSERT_EQ(test::run_shell(reproduce_cmd(data, out), &log), 0) << log;
  EXPECT_EQ(occurrences(log, "finished earlier (skipped"), 4u) << log;
  EXPECT_EQ(occurrences(log, ": training (log: "), 0u) << log;
  EXPECT_EQ(occurrences(log, "decoding"), 0u) << log;
  EXPECT_NE(log.find("cost: none"), std::string::npos) << log;
  EXPECT_EQ(read_file(out + "/table.json"), json_before);

  // More updates: the runs are resumed, not skipped.
  std::string more = std::regex_replace(reproduce_cmd(data, out), std::regex("--max-updates 12"),
                                        "--max-updates 14");
  ASSERT_EQ(test::run_shell(more + " --seeds 1 --variants post_ln", &log), 0) << log;
  EXPECT_EQ(occurrences(log, ": training (log: "), 1u) << log;
  EXPECT_NE(read_file(out + "/post_ln-seed1/.runs-done").find("train.max_updates=14"),
            std::string::npos);
  EXPECT_EQ(table["variants"].size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(read_file(out + "/table.json"))["variants"].size(), 1u);
}

// The tokenized text without BPE (prepare-iwslt14.sh's tmp/, the codes one
// level up): clinic bpe applies the codes first, and what it wrote is what
// fairseq's preparation wrote (the fixture's bpe10k files).
TEST(Reproduce, Iwslt14AppliesTheCodesToTokenizedText) {
  test::TempDir d;
  fs::path fx = fs::path(kSourceDir) / "test/data/iwslt14";
  const std::string tmp = d.file("prep/tmp");
  fs::create_directories(tmp);
  fs::copy_file(fx / "bpe10k/code", d.file("prep/code"));
  for (std::string lang : {"de", "en"}) {
    copy_lines(fx / ("valid." + lang), tmp + "/train." + lang, 0, 500);
    copy_lines(fx / ("valid." + lang), tmp + "/valid." + lang, 0, 60);
    copy_lines(fx / ("valid." + lang), tmp + "/test." + lang, 100, 140);
  }
  const std::string out = d.file("out");
  std::string cmd = std::regex_replace(reproduce_cmd(tmp, out), std::regex("--max-updates 12"),
                                       "--max-updates 8");
  std::string log;
  ASSERT_EQ(test::run_shell(cmd + " --seeds 1 --variants post_ln --average-last 1", &log), 0) << log;
  EXPECT_NE(log.find("code: " + d.file("prep/code") + ", blob 26d4677a78841a6db18863978286b291c768ea56 = the paper's BPE codes"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("applying the BPE codes (clinic bpe) into " + out + "/data"), std::string::npos)
      << log;
  for (std::string lang : {"de", "en"})
    EXPECT_EQ(read_file(out + "/data/train." + lang), read_file((fx / ("bpe10k/valid." + lang)).string())) << lang;
  auto table = nlohmann::json::parse(read_file(out + "/table.json"));
  EXPECT_EQ(table["data_dir"], out + "/data");
  EXPECT_EQ(table["variants"]["post_ln"]["n"], 1);
}

TEST(Reproduce, BadDataIsOneErrorNamingTheFile) {
  test::TempDir d;
  const std::string data = d.file("data");
  auto fails_with = [&](const std::string& what) {
    std::string log;
    int rc = test::run_shell(reproduce_cmd(data, d.file("out")), &log);
    EXPECT_NE(rc, 0) << log;
    EXPECT_EQ(occurrences(log, "clinic: error: "), 1u) << log;
    EXPECT_NE(log.find("clinic: error: " + what), std::string::npos) << log;
    EXPECT_EQ(log.find("== 2. vocab"), std::string::npos) << "went past the check:\n" << log;
  };
  write_toy_iwslt(data);
  fs::remove(data + "/test.en");
  fails_with(data + "/test.en: missing");

  write_toy_iwslt(data);
  copy_lines(fs::path(kSourceDir) / "test/data/iwslt14/bpe10k/valid.en", data + "/train.en", 0,
             499);
  fails_with(data + "/train.en: 499 lines, but train.de has 500: the pair is not aligned");

  write_toy_iwslt(data);  // the tokenized text without BPE
  for (std::string lang : {"de", "en"})
    copy_lines(fs::path(kSourceDir) / ("test/data/iwslt14/valid." + lang), data + "/train." + lang,
               0, 500);
  fails_with(data + "/train.de: no '@@ ' BPE marks");

  write_toy_iwslt(data);
  fs::remove(data + "/valid.de");
  fs::create_directory(data + "/valid.de");
  fails_with(data + "/valid.de: not a regular file");

  std::string log;
  EXPECT_EQ(test::run_shell(reproduce_cmd(data, d.file("out")) + " --seeds 1,1", &log), 2) << log;
  EXPECT_NE(log.find("clinic: error: --seeds: '1' is given twice"),
            std::string::npos)
      << log;
  EXPECT_EQ(test::run_shell(reproduce_cmd(data, d.file("out")) + " --variants post_ln,postln", &log),
            2)
      << log;
  EXPECT_NE(log.find("clinic: error: --variants: "), std::string::npos) << log;
  EXPECT_NE(log.find("postln"), std::string::npos) << log;
}

}  // namespace
}  // namespace clinic

namespace clinic {
namespace {

std::string multi30k_cmd(const std::string& out, const std::string& args) {
  return "CLINIC=" + test::clinic_bin() + " PROGRESS_EVERY=0 " + std::string(kSourceDir) +
         "/scripts/reproduce.sh multi30k --out " + out + " " + args +
         " --set model.d_model=32 --set model.ffn_dim=64 --set model.heads=2"
         " --set data.vocab_size=500 --set eval.max_len_b=5 --set eval.max_len_a=0";
}

// The 6-layer table at toy scale: 3 variants x 2 seeds, each cell what an
// independent clinic eval of the run's last checkpoint prints, and one
// diagnose report overlaying the six runs.
TEST(Reproduce, Multi30kSixLayerTableIsTheMeanOfEvalOverSeeds) {
  test::TempDir d;
  const std::string out = d.file("out");
  std::string log;
  ASSERT_EQ(test::run_shell(multi30k_cmd(out, "--tables 6layer --seeds 1,2 --max-updates 2"), &log), 0)
      << log;
  auto table = nlohmann::json::parse(read_file(out + "/6layer/table.json"));
  const std::regex bleu_line(R"(BLEU = ([0-9.]+))");
  for (std::string v : {"post_ln", "pre_ln", "admin"}) {
    std::vector<double> per;
    for (std::string s : {"1", "2"}) {
      const std::string run = out + "/6layer/" + v + "-seed" + s;
      // Every run used the one vocabulary built first.
      EXPECT_EQ(read_file(run + "/spm.model"), read_file(out + "/vocab/spm.model")) << run;
      std::string eval;
      ASSERT_EQ(test::run_shell(test::clinic_bin() + " eval --checkpoint " + run +
                                    "/checkpoint_last.pt --split test --output " + d.file("h"),
                                &eval),
                0)
          << eval;
      std::smatch m;
      ASSERT_TRUE(std::regex_search(eval, m, bleu_line)) << eval;
      per.push_back(std::stod(m[1]));
      EXPECT_DOUBLE_EQ(table["variants"][v]["per_seed"][s].get<double>(), per.back()) << v << s;
    }
    EXPECT_NEAR(table["variants"][v]["mean"].get<double>(), (per[0] + per[1]) / 2, 0.0051);
    EXPECT_NEAR(table["variants"][v]["std"].get<double>(), std::abs(per[0] - per[1]) / std::sqrt(2.0),
                0.0051);
  }
  const std::string report = read_file(out + "/6layer/diagnose/report.md");
  for (std::string run : {"post_ln-seed1", "post_ln-seed2", "pre_ln-seed1", "pre_ln-seed2",
                          "admin-seed1", "admin-seed2"})
    EXPECT_NE(report.find(run), std::string::npos) << run << " not in the overlaid report";
}

// --records keeps what a finished run showed (command, metrics, BLEU line,
// hypotheses) outside OUT: a later call with an empty OUT restores it instead
// of training, and tables the same numbers, even after a git checkout has
// given every record file one time stamp. A record trained with another
// command is not used, and a run dir that exists is never replaced by one.
TEST(Reproduce, Multi30kRecordsRestoreFinishedRunsInsteadOfTrainingThem) {
  test::TempDir d;
  const std::string rec = d.file("records");
  const std::string args = "--tables 6layer --seeds 1 --records " + rec;
  std::string log;
  ASSERT_EQ(test::run_shell(multi30k_cmd(d.file("a"), args + " --max-updates 2"), &log), 0) << log;
  EXPECT_EQ(occurrences(log, ": training ("), 3u) << log;
  for (std::string v : {"post_ln", "pre_ln", "admin"}) {
    const std::string r = rec + "/6layer/" + v + "-seed1";
    EXPECT_EQ(read_file(r + "/test.bleu"), read_file(d.file("a") + "/6layer/" + v + "-seed1/test.bleu"));
    EXPECT_EQ(read_file(r + "/.runs-done"), read_file(d.file("a") + "/6layer/" + v + "-seed1/.runs-done"));
    EXPECT_FALSE(fs::exists(r + "/checkpoint_last.pt")) << "a record keeps no checkpoint";
  }
  const std::string first = read_file(d.file("a") + "/6layer/table.json");
  // One time stamp on every record file, as a fresh clone has them.
  ASSERT_EQ(test::run_shell("find " + rec + " -type f -exec touch -d '2020-01-01 00:00:00' {} +", &log), 0);

  // b: an empty OUT. Nothing trains and nothing is evaluated (there is no
  // checkpoint to evaluate: an eval would fail the driver); the same table.
  ASSERT_EQ(test::run_shell(multi30k_cmd(d.file("b"), args + " --max-updates 2"), &log), 0) << log;
  EXPECT_EQ(occurrences(log, "restored from its record"), 3u) << log;
  EXPECT_EQ(occurrences(log, ": training ("), 0u) << log;
  EXPECT_EQ(read_file(d.file("b") + "/6layer/table.json"), first);
  EXPECT_NE(read_file(d.file("b") + "/6layer/diagnose/report.md").find("admin-seed1"), std::string::npos);

  // c: pre_ln's dir already holds someone's file: it trains there, keeps the
  // file, and the other two come from their records.
  fs::create_directories(d.file("c") + "/6layer/pre_ln-seed1");
  { std::ofstream(d.file("c") + "/6layer/pre_ln-seed1/keep.txt") << "mine\n"; }
  ASSERT_EQ(test::run_shell(multi30k_cmd(d.file("c"), args + " --max-updates 2"), &log), 0) << log;
  EXPECT_EQ(occurrences(log, "restored from its record"), 2u) << log;
  EXPECT_NE(log.find("pre_ln-seed1: training ("), std::string::npos) << log;
  EXPECT_EQ(read_file(d.file("c") + "/6layer/pre_ln-seed1/keep.txt"), "mine\n");

  // d: another budget is another command: every run trains.
  ASSERT_EQ(test::run_shell(multi30k_cmd(d.file("d"), args + " --max-updates 3"), &log), 0) << log;
  EXPECT_EQ(occurrences(log, "restored from its record"), 0u) << log;
  EXPECT_EQ(occurrences(log, ": training ("), 3u) << log;
  EXPECT_NE(read_file(rec + "/6layer/admin-seed1/.runs-done").find("train.max_updates=3"),
            std::string::npos) << "the record follows the newest finished run";
}

// The deep table's verdict is clinic diagnose's: at lr 5 without warmup, with
// every update logged, losses jump; a run counts as failed exactly when its
// diagnose prints [divergence], is then not scored, and the others are.
TEST(Reproduce, Multi30kDeepTableCountsTheRunsDiagnoseCallsDiverged) {
  test::TempDir d;
  const std::string out = d.file("out");
  std::string log;
  ASSERT_EQ(test::run_shell(multi30k_cmd(out, "--tables deep --seeds 1 --max-updates 30 --lr 5"
                                              " --set schedule.warmup_updates=1"
                                              " --set train.log_interval=1"
                                              " --set model.encoder_layers=2"
                                              " --set model.decoder_layers=2"),
                            &log),
            0)
      << log;
  auto table = nlohmann::json::parse(read_file(out + "/deep/table.json"));
  int failed = 0;
  for (std::string v : {"post_ln", "pre_ln", "admin"}) {
    const std::string run = out + "/deep/" + v + "-seed1";
    std::string verdict;
    ASSERT_EQ(test::run_shell(test::clinic_bin() + " diagnose " + run + " --out " + d.file("r" + v),
                              &verdict),
              0)
        << verdict;
    const bool diverged = verdict.find("[divergence]") != std::string::npos;
    failed += diverged;
    EXPECT_EQ(table["variants"][v]["failed"], diverged ? 1 : 0) << v << "\n" << verdict;
    EXPECT_EQ(table["variants"][v]["n"], diverged ? 0 : 1) << v;
    EXPECT_EQ(fs::exists(run + "/test.bleu"), !diverged) << v;
  }
  EXPECT_GE(failed, 1) << "lr 5 without warmup diverged nowhere:\n" << log;
}

}  // namespace
}  // namespace clinic
