// The clinic binary: exit codes and messages, run as a user would.
#include "framework/data/text.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::run_shell;

std::string clinic() { return test::clinic_bin(); }

TEST(Cli, HelpOnEverySubcommand) {
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " --help", &out), 0);
  for (const char* sub : {"config", "recipes", "keys", "train", "vocab", "average", "translate",
                          "eval", "bleu", "export", "bench"}) {
    EXPECT_EQ(run_shell(clinic() + " " + sub + " --help", &out), 0) << sub;
    EXPECT_NE(out.find("Usage"), std::string::npos) << sub;
  }
}

TEST(Cli, ConfigPrintsResolvedRecipe) {
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " config multi30k/admin --set model.encoder_layers=18", &out), 0);
  EXPECT_NE(out.find("residual: \"admin\""), std::string::npos) << out;
  EXPECT_NE(out.find("encoder_layers: 18"), std::string::npos) << out;
  ASSERT_EQ(run_shell(clinic() + " recipes", &out), 0);
  EXPECT_NE(out.find("iwslt14/admin"), std::string::npos);
}

TEST(Cli, ConfigErrorsExitTwoWithOneLine) {
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " config multi30k/admin --set optim.lrr=1", &out), 2);
  EXPECT_EQ(out, "clinic: error: --set optim.lrr=1: unknown key 'optim.lrr' (did you mean 'lr'?)\n");
  EXPECT_EQ(run_shell(clinic() + " train no/such_recipe", &out), 2);
  EXPECT_NE(out.find("recipe 'no/such_recipe' not found"), std::string::npos) << out;
  EXPECT_EQ(run_shell(clinic() + " config", &out), 2);  // missing argument
  EXPECT_EQ(run_shell(clinic() + " frobnicate", &out), 2);
}

TEST(Cli, RuntimeErrorsExitOneWithoutBacktrace) {
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " translate --checkpoint /nonexistent.pt < /dev/null", &out), 1);
  EXPECT_EQ(out, "clinic: error: /nonexistent.pt: cannot read checkpoint\n");
  test::TempDir d;
  test::write_text(d.file("h"), "a b\n");
  test::write_text(d.file("r"), "a b\nc\n");
  EXPECT_EQ(run_shell(clinic() + " bleu --hyp " + d.file("h") + " --ref " + d.file("r"), &out), 1);
  EXPECT_NE(out.find("has 1 lines but"), std::string::npos) << out;
}

TEST(Cli, BleuCommandPrintsScoreAndSignature) {
  test::TempDir d;
  test::write_text(d.file("h"), "The dog bit the man.\n");
  test::write_text(d.file("r"), "The dog bit the man.\n");
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " bleu --hyp " + d.file("h") + " --ref " + d.file("r"), &out), 0);
  EXPECT_NE(out.find("BLEU = 100.00"), std::string::npos) << out;
  EXPECT_NE(out.find("signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp"), std::string::npos);
}

TEST(Cli, TrainTranslateEvalEndToEnd) {
  test::TempDir d;
  test::write_copy_corpus(d.file("c"), 400, 30);
  test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("c"), "admin"));
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " train " + d.file("r.yaml") + " --run-dir " + d.file("run") +
                          " --set train.max_updates=400 --set schedule.name=constant",
                      &out),
            0)
      << out;
  EXPECT_NE(out.find("[init] admin omega per sublayer"), std::string::npos) << out;
  test::write_text(d.file("in"), "w1 w2 w3\n\nw4 w5\n");
  ASSERT_EQ(run_shell(clinic() + " translate --checkpoint " + d.file("run/checkpoint_last.pt") +
                          " --input " + d.file("in") + " --beam 3",
                      &out),
            0)
      << out;
  EXPECT_EQ(out, "w1 w2 w3\n\nw4 w5\n");
  ASSERT_EQ(run_shell(clinic() + " eval --checkpoint " + d.file("run/checkpoint_last.pt") +
                          " --split valid --output " + d.file("hyp"),
                      &out),
            0)
      << out;
  EXPECT_NE(out.find("BLEU = "), std::string::npos) << out;
  EXPECT_EQ(read_lines(d.file("hyp")).size(), 30u);
  // Export to TorchScript and translate with it: same output as the checkpoint.
  ASSERT_EQ(run_shell(clinic() + " export --checkpoint " + d.file("run/checkpoint_last.pt") +
                          " --out " + d.file("m.pt"),
                      &out),
            0)
      << out;
  ASSERT_EQ(run_shell(clinic() + " translate --torchscript " + d.file("m.pt") + " --input " +
                          d.file("in") + " --beam 3",
                      &out),
            0)
      << out;
  EXPECT_EQ(out, "w1 w2 w3\n\nw4 w5\n");
  // Re-running on a finished run dir resumes and stops at once.
  ASSERT_EQ(run_shell(clinic() + " train " + d.file("r.yaml") + " --run-dir " + d.file("run") +
                          " --set train.max_updates=400 --set schedule.name=constant",
                      &out),
            0);
  EXPECT_NE(out.find("resumed"), std::string::npos) << out;
}

TEST(Cli, BenchPrintsDocumentedJsonFields) {
  test::TempDir d;
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " bench multi30k/post_ln --steps 2 --warmup 0 --json "
                                 "--set model.d_model=32 --set model.ffn_dim=64 "
                                 "--set data.max_tokens=256 --set train.threads=1 --profile " +
                          d.file("trace.json"),
                      &out),
            0)
      << out;
  for (const char* f : {"\"tokens_per_s\"", "\"tgt_tokens_per_s\"", "\"achieved_gflops\"",
                        "\"gemm_peak_gflops\"", "\"mfu\"", "\"peak_rss_mb\"", "\"forward_s\"",
                        "\"backward_s\"", "\"optimizer_s\""})
    EXPECT_NE(out.find(f), std::string::npos) << f << " in " << out;
  // --profile: a Chrome trace of one more update, forward and backward ops.
  std::ifstream in(d.file("trace.json"));
  std::string trace((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(trace.find("\"aten::mm\""), std::string::npos);
  EXPECT_NE(trace.find("MmBackward0"), std::string::npos);
  // An unwritable --profile path fails before the run, naming the path.
  EXPECT_NE(run_shell(clinic() + " bench multi30k/post_ln --steps 1 --warmup 0 "
                                 "--set model.d_model=32 --set model.ffn_dim=64 "
                                 "--set data.max_tokens=256 --profile " +
                          d.file("missing/trace.json"),
                      &out),
            0);
  EXPECT_NE(out.find("missing/trace.json"), std::string::npos) << out;
  EXPECT_EQ(out.find("train:"), std::string::npos) << out;
}

TEST(Cli, BenchPythonReferenceAgreesOnTheLoss) {
  std::string out;
  if (run_shell("/usr/bin/python3 -c 'import torch'", &out) != 0)
    GTEST_SKIP() << "python3-torch not installed";
  for (const char* variant : {"post_ln", "pre_ln"}) {
    ASSERT_EQ(run_shell(clinic() + " bench multi30k/" + variant +
                            " --steps 2 --warmup 0 --json --compare-python "
                            "--set model.d_model=32 --set model.ffn_dim=64 "
                            "--set data.max_tokens=256 --set train.threads=1",
                        &out),
              0)
        << out;
    auto num = [&](const std::string& key) {
      auto p = out.find("\"" + key + "\": ");
      EXPECT_NE(p, std::string::npos) << key << " in " << out;
      return p == std::string::npos ? NAN : std::stod(out.substr(p + key.size() + 4));
    };
    double a = num("loss_eval"), b = num("python_loss_eval");
    EXPECT_NEAR(a, b, 1e-5 * std::abs(a)) << variant;
    EXPECT_GT(num("python_ratio"), 0) << variant;
  }
}

}  // namespace
}  // namespace clinic
