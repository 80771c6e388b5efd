// The clinic binary: exit codes and messages, run as a user would.
#include <algorithm>
#include <filesystem>
#include <thread>

#include <fmt/format.h>
#include <sstream>

#include "framework/data/text.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::run_shell;

std::vector<std::string> read_lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string clinic() { return test::clinic_bin(); }

TEST(Cli, HelpOnEverySubcommand) {
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " --help", &out), 0);
  for (const char* sub : {"config", "recipes", "keys", "train", "vocab", "average", "translate",
                          "eval", "bleu", "export", "bench", "params", "bpe"}) {
    EXPECT_EQ(run_shell(clinic() + " " + sub + " --help", &out), 0) << sub;
    EXPECT_NE(out.find("Usage"), std::string::npos) << sub;
  }
}

// clinic bpe: files and pipes, and its output never replaces an input.
TEST(Cli, BpeAppliesTheCodesAndNeverOverwritesAnInput) {
  test::TempDir d;
  const std::string fx = std::string(kSourceDir) + "/test/data/iwslt14";
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " bpe --codes " + fx + "/bpe10k/code --input " + fx +
                          "/valid.de --output " + d.file("valid.de"),
                      &out),
            0)
      << out;
  EXPECT_EQ(read_file(d.file("valid.de")), read_file(fx + "/bpe10k/valid.de"));
  ASSERT_EQ(run_shell("head -n 3 " + fx + "/valid.en | " + clinic() + " bpe --codes " + fx +
                          "/bpe10k/code",
                      &out),
            0);
  std::string want;
  run_shell("head -n 3 " + fx + "/bpe10k/valid.en", &want);
  EXPECT_EQ(out, want);
  test::write_text(d.file("in"), "schon\n");
  EXPECT_EQ(run_shell(clinic() + " bpe --codes " + fx + "/bpe10k/code --input " + d.file("in") +
                          " --output " + d.file("in"),
                      &out),
            2);
  EXPECT_NE(out.find("clinic: error: --output " + d.file("in") + ": is the same file as --input"),
            std::string::npos)
      << out;
  EXPECT_EQ(read_file(d.file("in")), "schon\n");
  EXPECT_EQ(run_shell(clinic() + " bpe --codes " + d.file("nope") + " --input " + d.file("in"), &out), 1);
  EXPECT_NE(out.find("clinic: error: " + d.file("nope")), std::string::npos) << out;
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

bool one_error_line(const std::string& out) {
  return out.rfind("clinic: error: ", 0) == 0 && out.find('\n') == out.size() - 1;
}

// `clinic params`: each parameter's group as optim.groups places it (the
// regexes here are the recipe's: encoder_.* and decoder_.*).
TEST(Cli, ParamsListsEveryParameterWithItsGroup) {
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " params examples/bertsum_multi30k 2>/dev/null", &out), 0) << out;
  int rows = 0;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream f(line);
    std::string name, shape, group;
    f >> name;
    if (name.rfind("encoder_", 0) != 0 && name.rfind("decoder_", 0) != 0) continue;
    // shape is "[a, b]": skip to the numel, then the group
    std::string tok;
    while (f >> tok && tok.back() != ']') {}
    f >> tok >> group;
    EXPECT_EQ(group, name.substr(0, 7)) << line;
    ++rows;
  }
  EXPECT_GT(rows, 80);
  EXPECT_NE(out.find("group encoder"), std::string::npos) << out;
  EXPECT_NE(out.find("schedule noam (warmup 10000)"), std::string::npos) << out;
  EXPECT_EQ(run_shell(clinic() + " params multi30k/base --set 'optim.groups=[{name: a, match: "
                                  "\"encoder.*\"}, {name: b, match: \".*bias\"}]'",
                      &out),
            2);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find("encoder_layers.0.self_attn.in_proj_bias is matched by group 'a' and by "
                     "group 'b'"),
            std::string::npos)
      << out;
}

// A fixed-batch recipe's model is as small as its vocabulary: the toy's
// embedding and head hold its 2 tokens (the trainer's sizes, not
// data.vocab_size's 8000 rows).
TEST(Cli, ParamsOfAFixedBatchRecipeUseItsVocabulary) {
  std::string out;
  ASSERT_EQ(run_shell(clinic() + " params cases/toy_loss_spikes 2>/dev/null", &out), 0) << out;
  EXPECT_NE(out.find("tokens.weight"), std::string::npos) << out;
  EXPECT_NE(out.find("[2, 32]"), std::string::npos) << out;
  EXPECT_EQ(out.find("7996"), std::string::npos) << out;
  EXPECT_NE(out.find("data.fixed_vocab = 2 tokens after 4 special ids"), std::string::npos) << out;
}

// CLI11's own messages lacked the prefix ("A subcommand is required" for
// `clinic frobnicate`).
TEST(Cli, ParseErrorsAreOneLineWithThePrefix) {
  std::string out;
  EXPECT_EQ(run_shell(clinic(), &out), 2);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find("a command is required: config, recipes"), std::string::npos) << out;
  EXPECT_EQ(run_shell(clinic() + " frobnicate", &out), 2);
  EXPECT_EQ(out.rfind("clinic: error: unknown command 'frobnicate'; commands: config", 0), 0u) << out;
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_EQ(run_shell(clinic() + " translate --frob", &out), 2);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find("translate: The following argument was not expected: --frob"),
            std::string::npos)
      << out;
  EXPECT_EQ(run_shell(clinic() + " bleu --hyp x", &out), 2);
  EXPECT_EQ(out, "clinic: error: bleu: --ref is required (clinic bleu --help)\n");
  EXPECT_EQ(run_shell(clinic() + " bench multi30k/admin --steps 0", &out), 2);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find("--steps"), std::string::npos) << out;
  // --nproc out of range or past the CPU cores: refused before any run dir.
  for (const char* n : {"0", "-1", "abc"}) {
    EXPECT_EQ(run_shell(clinic() + " train multi30k/admin --run-dir /nonexistent/r --nproc " + n, &out), 2);
    EXPECT_EQ(out, std::string("clinic: error: train: --nproc: Value ") + n +
                       " not in range 1 to 1024 (clinic train --help)\n");
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  EXPECT_EQ(run_shell(clinic() + " train multi30k/admin --run-dir /nonexistent/r --nproc " +
                          std::to_string(cores + 1),
                      &out),
            2);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find(fmt::format("--nproc {}: this machine has {} CPU core", cores + 1, cores)),
            std::string::npos)
      << out;
  EXPECT_EQ(run_shell(clinic() + " --version", &out), 0);
  EXPECT_EQ(out, "clinic 0.1.0\n");
}

// Recipe-level checks run in every command (config used to accept what only
// train rejected, after building the vocabulary).
TEST(Cli, RecipeProblemsAreRejectedByEveryCommand) {
  test::TempDir d;
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " config multi30k/admin --set optim.name=sgdx", &out), 2);
  EXPECT_EQ(out, "clinic: error: --set optim.name=sgdx: optim.name = 'sgdx': unknown optimizer; "
                 "known: adam, adamw, radam\n");
  EXPECT_EQ(run_shell(clinic() + " train multi30k/admin --set optim.name=sgdx --run-dir " +
                          d.file("run"),
                      &out),
            2);
  EXPECT_FALSE(std::filesystem::exists(d.file("run/spm.model")));
  test::write_text(d.file("dup.yaml"), "base: multi30k/admin\ntrain:\n  seed: 1\n  seed: 2\n");
  EXPECT_EQ(run_shell(clinic() + " config " + d.file("dup.yaml"), &out), 2);
  EXPECT_NE(out.find("dup.yaml:4: duplicate key 'train.seed' (first given at line 3)"),
            std::string::npos)
      << out;
  test::write_text(d.file("deep.yaml"), "model: " + std::string(100000, '[') + "\n");
  EXPECT_EQ(run_shell(clinic() + " config " + d.file("deep.yaml"), &out), 2);
  EXPECT_EQ(out, "clinic: error: " + d.file("deep.yaml") + ":1: YAML nested deeper than 32 levels\n");
  std::filesystem::create_directories(d.file("hypdir"));
  test::write_text(d.file("r"), "a\n");
  EXPECT_EQ(run_shell(clinic() + " bleu --hyp " + d.file("hypdir") + " --ref " + d.file("r"), &out), 1);
  EXPECT_EQ(out, "clinic: error: " + d.file("hypdir") +
                     ": is a directory; clinic reads regular files only\n");
}

// A tiny trained run for the commands that need a checkpoint.
struct TrainedRun {
  test::TempDir d;
  std::string ckpt;
  TrainedRun() {
    test::write_copy_corpus(d.file("c"), 200, 10);
    test::write_text(d.file("r.yaml"), test::copy_recipe(d.file("c")));
    std::string out;
    EXPECT_EQ(run_shell(clinic() + " train " + d.file("r.yaml") + " --run-dir " + d.file("run") +
                            " --set train.max_updates=20",
                        &out),
              0)
        << out;
    ckpt = d.file("run/checkpoint_last.pt");
    test::write_text(d.file("in"), "w1 w2 w3\nw4 w5\n");
  }
  std::string translate(const std::string& args) const {
    return clinic() + " translate --checkpoint " + ckpt + " --input " + d.file("in") + " " + args;
  }
};

// --output truncated its file before decoding: a failed run, --output equal to
// --input or to the checkpoint left 0 bytes; /dev/full exited 0.
TEST(Cli, TranslateOutputIsAtomicAndNeverAnInput) {
  TrainedRun r;
  std::string out, ck = read_file(r.ckpt);
  test::write_text(r.d.file("prev"), "previous results\n");
  // A failed run (unreadable checkpoint) leaves the old output.
  EXPECT_EQ(run_shell(clinic() + " translate --checkpoint " + r.d.file("nope.pt") + " --input " +
                          r.d.file("in") + " --output " + r.d.file("prev"),
                      &out),
            1);
  EXPECT_EQ(read_file(r.d.file("prev")), "previous results\n");
  // Output = input, output = checkpoint: refused, both intact.
  EXPECT_EQ(run_shell(r.translate("--output " + r.d.file("in")), &out), 2);
  EXPECT_EQ(out, "clinic: error: --output " + r.d.file("in") +
                     ": is the same file as --input; choose another output\n");
  EXPECT_EQ(read_file(r.d.file("in")), "w1 w2 w3\nw4 w5\n");
  EXPECT_EQ(run_shell(r.translate("--output " + r.ckpt), &out), 2);
  EXPECT_TRUE(one_error_line(out)) << out;
  std::filesystem::copy_file(r.ckpt, r.d.file("other.pt"));
  EXPECT_EQ(run_shell(r.translate("--output " + r.d.file("other.pt")), &out), 2);
  EXPECT_NE(out.find("is a clinic checkpoint; refusing to overwrite it"), std::string::npos) << out;
  EXPECT_EQ(read_file(r.ckpt), ck);
  // Unwritable and full destinations fail with one line and exit 1.
  EXPECT_EQ(run_shell(r.translate("--output " + r.d.file("no/dir/out")), &out), 1);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_EQ(run_shell(r.translate("--output /dev/full"), &out), 1);
  EXPECT_EQ(out, "clinic: error: /dev/full: write failed (No space left on device)\n");
  // Success replaces the old file whole; stdout still works.
  EXPECT_EQ(run_shell(r.translate("--output " + r.d.file("prev")), &out), 0) << out;
  EXPECT_EQ(read_lines(r.d.file("prev")).size(), 2u);
  EXPECT_EQ(run_shell(r.translate("> " + r.d.file("stdout")), &out), 0) << out;
  EXPECT_EQ(read_file(r.d.file("stdout")), read_file(r.d.file("prev")));
  for (const auto& e : std::filesystem::directory_iterator(r.d.path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

// --beam 0/-1, --nbest 0, --lenpen -1/nan were replaced by defaults;
// --nbest 10 --beam 5 printed 5 unlabelled lines; --beam 100000 ran out of
// memory. Flags are checked like the recipe's eval.* keys.
TEST(Cli, DecodeFlagsAreValidatedLikeTheRecipe) {
  TrainedRun r;
  std::string out;
  for (auto [flags, msg] : std::vector<std::pair<std::string, std::string>>{
           {"--beam 0", "--beam 0: eval.beam = 0: must be in [1, 1024]"},
           {"--beam -1", "--beam -1: eval.beam = -1: must be in [1, 1024]"},
           {"--beam 100000", "--beam 100000: eval.beam = 100000: must be in [1, 1024]"},
           {"--nbest 0", "--nbest 0: eval.nbest = 0: must be in [1, 1024]"},
           {"--lenpen -1", "--lenpen -1: eval.lenpen = -1: must be >= 0"},
           {"--lenpen nan", "--lenpen nan: eval.lenpen: expected a number, got 'nan'"},
           {"--nbest 10 --beam 5", "--nbest 10: eval.nbest = 10 exceeds eval.beam = 5"}}) {
    EXPECT_EQ(run_shell(r.translate(flags), &out), 2) << flags;
    EXPECT_EQ(out.rfind("clinic: error: " + msg, 0), 0u) << flags << ": " << out;
    EXPECT_TRUE(one_error_line(out)) << out;
  }
  // n-best lists say which input line each hypothesis belongs to.
  ASSERT_EQ(run_shell(r.translate("--beam 3 --nbest 3 2>/dev/null"), &out), 0) << out;
  auto lines = read_lines_of(out);
  ASSERT_EQ(lines.size(), 6u) << out;
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].rfind(std::to_string(i / 3) + " ||| ", 0), 0u) << lines[i];
    auto last = lines[i].rfind(" ||| ");
    EXPECT_LE(std::stod(lines[i].substr(last + 5)), 0.0) << lines[i];
  }
  // --cuda-graph (eval.cuda_graph): the static cache (no capture on the
  // CPU) gives the same n-best lists, scores to the printed digits.
  std::string graphed;
  ASSERT_EQ(run_shell(r.translate("--beam 3 --nbest 3 --cuda-graph 2>/dev/null"), &graphed), 0)
      << graphed;
  EXPECT_EQ(graphed, out);
}

// Resuming another model printed ~90 lines (the whole recipe); c10 memory
// errors printed backtraces; --torchscript on an over-long line printed a
// 48-line TorchScript traceback.
TEST(Cli, ErrorsAreOneLine) {
  TrainedRun r;
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " train " + r.d.file("r.yaml") + " --run-dir " +
                          r.d.file("run") + " --set model.d_model=64",
                      &out),
            1);
  EXPECT_TRUE(one_error_line(out.substr(out.find("clinic: error:")))) << out;
  EXPECT_NE(out.find("model.d_model is 32 there, 64 now"), std::string::npos) << out;
  EXPECT_EQ(run_shell(clinic() + " train " + r.d.file("r.yaml") + " --run-dir " +
                          r.d.file("big") + " --set model.d_model=65536 --set model.heads=2",
                      &out),
            1);
  EXPECT_NE(out.find("clinic: error: training this model"), std::string::npos) << out;
  EXPECT_TRUE(one_error_line(out.substr(out.find("clinic: error:")))) << out;
  // An over-long line is cut to the model's positions, with one warning.
  ASSERT_EQ(run_shell(clinic() + " export --checkpoint " + r.ckpt + " --out " + r.d.file("m.pt"),
                      &out),
            0)
      << out;
  std::string longline;
  for (int i = 0; i < 100; ++i) longline += "w1 ";
  test::write_text(r.d.file("long"), longline + "\nw2 w3\n");
  EXPECT_EQ(run_shell(clinic() + " translate --torchscript " + r.d.file("m.pt") + " --input " +
                          r.d.file("long") + " --output " + r.d.file("long.out"),
                      &out),
            0)
      << out;
  const std::string said =
      "clinic: warning: 1 input line of 64 tokens or more was cut to the first 63 "
      "(model.max_source_positions = 64; the first is line 1, 100 tokens); --strict refuses such "
      "input\n";
  EXPECT_EQ(out, said);
  EXPECT_EQ(read_lines(r.d.file("long.out")).size(), 2u);
  // The checkpoint path says the same, once; --strict refuses before writing.
  test::write_text(r.d.file("long2"), longline + "\nw2 w3\n" + longline + "\n");
  EXPECT_EQ(run_shell(clinic() + " translate --checkpoint " + r.ckpt + " --input " +
                          r.d.file("long2") + " --output " + r.d.file("long2.out"),
                      &out),
            0)
      << out;
  EXPECT_EQ(out, "clinic: warning: 2 input lines of 64 tokens or more were cut to the first 63 "
                 "(model.max_source_positions = 64; the first is line 1, 100 tokens); --strict "
                 "refuses such input\n");
  test::write_text(r.d.file("long2.out"), "kept\n");
  for (const std::string& how : {" --checkpoint " + r.ckpt, " --torchscript " + r.d.file("m.pt")}) {
    EXPECT_EQ(run_shell(clinic() + " translate" + how + " --strict --input " + r.d.file("long2") +
                            " --output " + r.d.file("long2.out"),
                        &out),
              1)
        << how;
    EXPECT_EQ(out, "clinic: error: " + r.d.file("long2") + ":1: 100 tokens, over "
                   "model.max_source_positions = 64 (room for EOS: at most 63); --strict refuses it\n")
        << how;
    EXPECT_EQ(read_file(r.d.file("long2.out")), "kept\n") << how;
  }
  // What the exported model cannot do is refused by name (exit 2, a usage
  // error), before anything is written.
  test::write_text(r.d.file("short"), "w2 w3\n");
  for (const auto& [flag, said] : std::vector<std::pair<std::string, std::string>>{
           {"--nbest 2", "--nbest: the exported model's translate() returns one hypothesis; use "
                         "--checkpoint for n-best lists"},
           {"--cuda-graph", "--cuda-graph: the exported model searches in TorchScript; use "
                            "--checkpoint"}}) {
    EXPECT_EQ(run_shell(clinic() + " translate --torchscript " + r.d.file("m.pt") + " " + flag +
                            " --input " + r.d.file("short") + " --output " + r.d.file("long2.out"),
                        &out),
              2)
        << flag;
    EXPECT_EQ(out, "clinic: error: " + said + "\n") << flag;
    EXPECT_EQ(read_file(r.d.file("long2.out")), "kept\n") << flag;
  }
}

// export to /dev/full aborted with a c10 backtrace (exit 134) and a full disk
// left a partial file.
TEST(Cli, ExportIsAtomic) {
  TrainedRun r;
  std::string out;
  EXPECT_EQ(run_shell(clinic() + " export --checkpoint " + r.ckpt + " --out /dev/full", &out), 1);
  EXPECT_EQ(out, "clinic: error: /dev/full: is a character device; clinic writes regular files "
                 "only\n");
  test::write_text(r.d.file("m.pt"), "an older export\n");
  // A full disk: the file-size limit makes write() fail with EFBIG.
  EXPECT_EQ(run_shell("trap '' XFSZ; ulimit -f 64; " + clinic() + " export --checkpoint " + r.ckpt +
                          " --out " + r.d.file("m.pt"),
                      &out),
            1);
  EXPECT_TRUE(one_error_line(out)) << out;
  EXPECT_NE(out.find("write failed (File too large); " + r.d.file("m.pt") + " is unchanged"),
            std::string::npos)
      << out;
  EXPECT_EQ(read_file(r.d.file("m.pt")), "an older export\n");
  for (const auto& e : std::filesystem::directory_iterator(r.d.path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  EXPECT_EQ(run_shell(clinic() + " export --checkpoint " + r.ckpt + " --out " + r.ckpt, &out), 2);
  EXPECT_TRUE(one_error_line(out)) << out;
}

// A full disk while SentencePiece saved its model left a 0-byte spm.model
// that kept the run dir failing after space was freed.
TEST(Cli, VocabularyOnAFullDiskLeavesNothingBroken) {
  test::TempDir d;
  std::string out;
  std::string recipe = " vocab multi30k/admin --set data.vocab_size=1000 --run-dir " + d.file("run");
  EXPECT_EQ(run_shell("trap '' XFSZ; ulimit -f 16; " + clinic() + recipe, &out), 1) << out;
  EXPECT_NE(out.find("clinic: error: "), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(d.file("run/spm.model")));
  ASSERT_EQ(run_shell(clinic() + recipe, &out), 0) << out;
  EXPECT_GT(std::filesystem::file_size(d.file("run/spm.model")), 16u * 1024);
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

// bench --throughput: the updates back to back, decided on the device. On
// the CPU it draws the same batches as the phase-timed bench (one
// generator), so its loss curve is the phase-timed one: fp32 RAdam with
// decay, dropout on; within 1e-4 (the masked decay and the 1 / tokens
// applied to the gradient instead of the loss may round differently).
TEST(Cli, BenchThroughputTrainsAsThePhaseTimedBench) {
  auto curve = [&](const std::string& extra) {
    std::string out;
    EXPECT_EQ(run_shell(clinic() + " bench multi30k/admin --steps 30 --warmup 1 --json --task copy "
                                   "--curve-points 30 --set data.vocab_size=64 --set model.d_model=32 --set model.ffn_dim=64 "
                                   "--set model.encoder_layers=2 --set model.decoder_layers=2 "
                                   "--set data.max_tokens=256 --set train.threads=1 "
                                   "--set train.precision=fp32 --set train.clip_norm=0.5" +
                                   extra,
                        &out),
              0)
        << out;
    std::vector<double> c;
    auto p = out.find("\"loss_curve\": [");
    EXPECT_NE(p, std::string::npos) << out;
    if (p == std::string::npos) return std::make_pair(c, out);
    std::string body = out.substr(p + 15, out.find("]]", p) - p - 15);
    for (size_t q = body.find(", "); q != std::string::npos; q = body.find(", ", q + 1)) {
      if (body[q - 1] == ']') continue;  // between points
      c.push_back(std::stod(body.substr(q + 2)));
    }
    return std::make_pair(c, out);
  };
  auto [phases, po] = curve("");
  auto [fast, fo] = curve(" --throughput");
  ASSERT_EQ(phases.size(), 30u) << po;
  ASSERT_EQ(fast.size(), phases.size()) << fo;
  for (size_t i = 0; i < phases.size(); ++i)
    EXPECT_NEAR(fast[i], phases[i], 1e-4 * phases[i]) << "point " << i;
  EXPECT_LT(phases.back(), phases.front());
  EXPECT_NE(fo.find("\"mode\": \"throughput\""), std::string::npos) << fo;
  EXPECT_NE(po.find("\"mode\": \"phases\""), std::string::npos) << po;
  // train.cuda_graph: the trainer's graphed update (on the CPU the body runs
  // on the static buffers, the lr and step counts read from device tensors):
  // the same curve, within 1e-3 (the capturable step's coefficients are
  // computed in tensors, not host doubles).
  auto [graphed, go] = curve(" --throughput --set train.cuda_graph=true");
  ASSERT_EQ(graphed.size(), phases.size()) << go;
  for (size_t i = 0; i < phases.size(); ++i)
    EXPECT_NEAR(graphed[i], phases[i], 1e-3 * phases[i]) << "point " << i;
  EXPECT_NE(go.find("\"mode\": \"throughput_graph\""), std::string::npos) << go;
  // What it cannot do is one error.
  {
    std::string o2;
    EXPECT_NE(run_shell(clinic() + " bench multi30k/admin --steps 1 --set train.cuda_graph=true", &o2), 0);
    EXPECT_NE(o2.find("clinic: error: bench: train.cuda_graph times captured updates"),
              std::string::npos) << o2;
  }
  std::string out;
  EXPECT_NE(run_shell(clinic() + " bench multi30k/admin --steps 1 --throughput --diag", &out), 0);
  EXPECT_NE(out.find("clinic: error: bench --throughput"), std::string::npos) << out;
  EXPECT_NE(run_shell(clinic() + " bench multi30k/admin --steps 1 --throughput "
                                 "--set optim.foreach=false", &out), 0);
  EXPECT_NE(out.find("needs optim.foreach: true"), std::string::npos) << out;
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
