#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

#include "framework/config.h"
#include "framework/errors.h"
#include "framework/model.h"
#include "models/residual.h"
#include "test/support.h"

namespace clinic {
namespace {

using test::TempDir;
using test::write_text;

std::string error_of(const std::function<void()>& fn) { return test::error_of<ConfigError>(fn); }

TEST(Config, RoundTripThroughYaml) {
  RunConfig a = load_recipe("multi30k/admin", {"optim.lr=0.0003", "optim.betas=[0.9, 0.99]"});
  std::string y = to_yaml(a);
  RunConfig b = parse_recipe_text(y, "roundtrip");
  EXPECT_EQ(to_yaml(b), y);
  EXPECT_EQ(b.model.residual, "admin");
  EXPECT_DOUBLE_EQ(b.optim.lr, 3e-4);
  EXPECT_DOUBLE_EQ(b.optim.betas[1], 0.99);
}

TEST(Config, InheritanceChainAndPrecedence) {
  TempDir d;
  write_text(d.file("c.yaml"), "model:\n  d_model: 64\n  heads: 2\noptim:\n  lr: 0.1\n");
  write_text(d.file("b.yaml"), "base: c.yaml\noptim:\n  lr: 0.2\n  eps: 1.0e-6\n");
  write_text(d.file("a.yaml"), "base: b.yaml\noptim:\n  lr: 0.3\n");
  RunConfig cfg = load_recipe(d.file("a.yaml"), {"optim.eps=1e-5"});
  EXPECT_EQ(cfg.model.d_model, 64);         // from c
  EXPECT_DOUBLE_EQ(cfg.optim.lr, 0.3);      // a overrides b, c
  EXPECT_DOUBLE_EQ(cfg.optim.eps, 1e-5);    // --set overrides b
  EXPECT_EQ(cfg.model.ffn_dim, 1024);       // default
  EXPECT_NE(cfg.origin["optim.lr"].find("a.yaml:3"), std::string::npos);
  EXPECT_EQ(cfg.origin["optim.eps"], "--set optim.eps=1e-5");
}

TEST(Config, InheritanceCycleIsDetected) {
  TempDir d;
  write_text(d.file("a.yaml"), "base: b.yaml\n");
  write_text(d.file("b.yaml"), "base: a.yaml\n");
  std::string e = error_of([&] { load_recipe(d.file("a.yaml")); });
  EXPECT_NE(e.find("inheritance cycle"), std::string::npos) << e;
  EXPECT_NE(e.find("a.yaml -> "), std::string::npos) << e;
}

TEST(Config, UnknownKeyNamesFileLineAndSuggestion) {
  TempDir d;
  write_text(d.file("r.yaml"), "model:\n  d_model: 64\nschedule:\n  warmup_update: 10\n");
  std::string e = error_of([&] { load_recipe(d.file("r.yaml")); });
  EXPECT_NE(e.find("r.yaml:4"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'schedule.warmup_update'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'warmup_updates'?"), std::string::npos) << e;
}

TEST(Config, UnknownSectionIsAnError) {
  std::string e = error_of([] { parse_recipe_text("optimizer:\n  lr: 1\n", "x.yaml"); });
  EXPECT_NE(e.find("x.yaml:1"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'optim'"), std::string::npos) << e;
}

TEST(Config, WrongTypeNamesFileLineKey) {
  std::string e = error_of([] { parse_recipe_text("data:\n  dir: x\nmodel:\n  d_model: abc\n", "t.yaml"); });
  EXPECT_NE(e.find("t.yaml:4"), std::string::npos) << e;
  EXPECT_NE(e.find("model.d_model"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer, got 'abc'"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("optim:\n  betas: 0.9\n", "t.yaml"); });
  EXPECT_NE(e.find("expected a list of numbers"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("train:\n  eval_bleu: maybe\n", "t.yaml"); });
  EXPECT_NE(e.find("expected true or false"), std::string::npos) << e;
}

TEST(Config, OutOfRangeAndChoicesNameAllowedValues) {
  std::string e = error_of([] { parse_recipe_text("optim:\n  lr: -1\n", "t.yaml"); });
  EXPECT_NE(e.find("t.yaml:2: optim.lr = -1: must be > 0"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("model:\n  activation: relux\n", "t.yaml"); });
  EXPECT_NE(e.find("must be one of relu gelu"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'relu'"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("optim:\n  betas: [0.9, 1.0]\n", "t.yaml"); });
  EXPECT_NE(e.find("optim.betas must be two numbers in [0, 1)"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("model:\n  d_model: 10\n  heads: 4\n", "t.yaml"); });
  EXPECT_NE(e.find("model.heads = 4 must divide model.d_model = 10"), std::string::npos) << e;
  e = error_of([] { parse_recipe_text("train:\n  precision: fp8\n", "t.yaml"); });
  EXPECT_NE(e.find("one of fp32 bf16 fp16"), std::string::npos) << e;
}

TEST(Config, OverrideErrors) {
  RunConfig cfg;
  EXPECT_NE(error_of([&] { apply_override(cfg, "model.layers=3"); }).find("unknown key 'model.layers'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { apply_override(cfg, "lr=3"); }).find("expected section.key=value"),
            std::string::npos);
  apply_override(cfg, "model.encoder_layers=18");
  EXPECT_EQ(cfg.model.encoder_layers, 18);
}

TEST(Config, RecipeByNameAndPathAndMissing) {
  RunConfig by_name = load_recipe("multi30k/pre_ln");
  RunConfig by_path = load_recipe(std::string(kSourceDir) + "/recipes/multi30k/pre_ln.yaml");
  EXPECT_EQ(to_yaml(by_name), to_yaml(by_path));
  EXPECT_EQ(by_name.model.residual, "pre_ln");
  std::string e = error_of([] { load_recipe("multi30k/admn"); });
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'multi30k/admin'"), std::string::npos) << e;
  // Every .yaml under recipes/ (found here by walking the tree), by name.
  std::vector<std::string> files;
  const std::filesystem::path root = std::string(kSourceDir) + "/recipes";
  for (const auto& f : std::filesystem::recursive_directory_iterator(root))
    if (f.path().extension() == ".yaml")
      files.push_back(f.path().lexically_relative(root).replace_extension().string());
  std::sort(files.begin(), files.end());
  auto names = list_recipes();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, files);
  EXPECT_GE(names.size(), 14u);  // multi30k, iwslt14, cases, examples
}

TEST(Config, EveryKeyIsDocumentedInRecipesReadme) {
  std::ifstream in(std::string(kSourceDir) + "/recipes/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string readme = ss.str();
  std::istringstream table(describe_keys());
  int rows = 0;
  for (std::string line; std::getline(table, line);) {
    auto a = line.find("`"), b = line.find("`", a + 1);
    if (a == std::string::npos || line.rfind("| key", 0) == 0) continue;
    std::string key = line.substr(a, b - a + 1);
    EXPECT_NE(readme.find(key), std::string::npos) << key << " missing from recipes/README.md";
    ++rows;
  }
  EXPECT_GT(rows, 60);
}

// yaml-cpp keeps both pairs of a repeated key and reads the first: `lr: 0.1`
// then `lr: 0.2` silently trained with 0.1.
TEST(Config, DuplicateKeysNameBothLines) {
  TempDir d;
  write_text(d.file("r.yaml"), "optim:\n  lr: 0.1\n  eps: 1.0e-6\n  lr: 0.2\n");
  std::string e = error_of([&] { load_recipe(d.file("r.yaml")); });
  EXPECT_NE(e.find("r.yaml:4: duplicate key 'optim.lr' (first given at line 2)"), std::string::npos)
      << e;
  e = error_of([] { parse_recipe_text("optim:\n  lr: 0.1\nmodel: {}\noptim:\n  eps: 0.2\n", "t.yaml"); });
  EXPECT_NE(e.find("t.yaml:4: duplicate key 'optim' (first given at line 1)"), std::string::npos)
      << e;
}

// 100k nested '[' said "bad file" (yaml-cpp's recursion guard).
TEST(Config, DeepNestingIsRefusedWithItsLine) {
  std::string deep = "description: x\nmodel: " + std::string(100000, '[') + "\n";
  std::string e = error_of([&] { parse_recipe_text(deep, "deep.yaml"); });
  EXPECT_EQ(e, "deep.yaml:2: YAML nested deeper than 32 levels");
  // Brackets inside quotes and comments do not count; a real recipe nests 2.
  RunConfig cfg = parse_recipe_text(
      "description: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"  # {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\n"
      "optim: {betas: [0.9, 0.99]}\n",
      "ok.yaml");
  EXPECT_DOUBLE_EQ(cfg.optim.betas[1], 0.99);
}

TEST(Config, NbestMayNotExceedBeam) {
  std::string e = error_of([] { parse_recipe_text("eval:\n  beam: 5\n  nbest: 10\n", "t.yaml"); });
  EXPECT_NE(e.find("t.yaml:3: eval.nbest = 10 exceeds eval.beam = 5"), std::string::npos) << e;
  // A command-line flag is named as typed.
  RunConfig cfg;
  e = error_of([&] {
    apply_override(cfg, "eval.beam=0", "--beam 0");
    validate(cfg);
  });
  EXPECT_EQ(e, "--beam 0: eval.beam = 0: must be in [1, 1024]");
}

TEST(Config, DifferencesListEveryChangedKey) {
  RunConfig a = load_recipe("multi30k/admin");
  RunConfig b = load_recipe("multi30k/admin", {"optim.lr=0.123", "model.d_model=64",
                                               "model.heads=4"});
  auto diffs = config_differences(a, b);
  std::vector<std::string> keys;
  for (const auto& d : diffs) keys.push_back(d.key);
  // model.heads is 4 in multi30k/base already: unchanged, not listed.
  EXPECT_EQ(keys, (std::vector<std::string>{"model.d_model", "optim.lr"}));
  EXPECT_EQ(diffs[0].a, "256");
  EXPECT_EQ(diffs[0].b, "64");
  EXPECT_TRUE(config_differences(a, a).empty());
}

TEST(Config, OptimGroupsAreTypedAndTypoSafe) {
  auto parse = [](const std::string& groups) {
    return parse_recipe_text("optim:\n  lr: 0.001\n  groups:\n" + groups, "g.yaml");
  };
  RunConfig c = parse(
      "    - name: enc\n      match: 'encoder.*'\n      lr: 0.002\n"
      "      schedule: {name: noam, warmup_updates: 20000, noam_dim: 1}\n"
      "    - {name: dec, glob: 'decoder*', betas: [0.9, 0.999], eps: 1.0e-6, weight_decay: 0}\n");
  ASSERT_EQ(c.optim.groups.size(), 2u);
  EXPECT_EQ(c.optim.groups[0].match, "encoder.*");
  EXPECT_EQ(*c.optim.groups[0].lr, 0.002);
  EXPECT_EQ(c.optim.groups[0].schedule->warmup_updates, 20000);
  EXPECT_FALSE(c.optim.groups[0].eps.has_value());
  EXPECT_EQ(*c.optim.groups[1].betas, (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(*c.optim.groups[1].weight_decay, 0.0);
  EXPECT_FALSE(c.optim.groups[1].schedule.has_value());
  // The resolved recipe (recipe.yaml, checkpoints) reads back to the same groups.
  RunConfig back = parse_recipe_text(to_yaml(c), "back.yaml");
  EXPECT_TRUE(config_differences(c, back).empty()) << to_yaml(back);
  // --set replaces the list.
  RunConfig o = parse_recipe_text("", "x", {"optim.groups=[{name: all, match: '.*', lr: 0.01}]"});
  ASSERT_EQ(o.optim.groups.size(), 1u);
  EXPECT_EQ(*o.optim.groups[0].lr, 0.01);
  // Each mistake: one line naming file:line and the key.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"    - {name: a, match: 'x', lrr: 0.1}\n",
       "g.yaml:4: unknown key 'optim.groups[0].lrr' (did you mean 'lr'?)"},
      {"    - {name: a, match: 'x'}\n    - {name: b, match: 'y', lr: fast}\n",
       "g.yaml:5: optim.groups[1].lr: expected a number, got 'fast'"},
      {"    - {name: a, match: 'x', schedule: {name: noam, warmup_update: 5}}\n",
       "g.yaml:4: unknown key 'optim.groups[0].schedule.warmup_update' (did you mean "
       "'warmup_updates'?)"},
      {"    - {match: 'x'}\n", "optim.groups[0].name = '': a group needs a name"},
      {"    - {name: a, match: 'x'}\n    - {name: a, glob: 'y'}\n",
       "g.yaml:5: optim.groups[1].name = 'a': an earlier group has this name"},
      {"    - {name: a, match: 'x', glob: 'y'}\n", "give exactly one of match"},
      {"    - {name: a, match: 'enc(oder'}\n", "optim.groups[0].match = 'enc(oder': not a regular"},
      {"    - {name: a, match: 'x', eps: 0}\n", "g.yaml:4: optim.groups[0].eps = 0: must be > 0"},
      {"    - {name: a, match: 'x', lr: -0.1}\n", "g.yaml:4: optim.groups[0].lr = -0.1: must be >= 0"},
      {"    - {name: a, match: 'x', betas: [0.9]}\n", "optim.groups[0].betas must be two numbers"},
      {"    - {name: a, match: 'x', schedule: {warmup_updates: -1}}\n",
       "optim.groups[0].schedule.warmup_updates = -1: must be >= 0"},
      {"    - just-a-string\n", "g.yaml:4: optim.groups[0]: a group is a mapping"},
  };
  for (const auto& [groups, want] : bad) {
    std::string e = error_of([&] { parse(groups); });
    EXPECT_NE(e.find(want), std::string::npos) << "got: " << e << "\nwant: " << want;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(error_of([] { parse_recipe_text("optim:\n  groups: 3\n", "g.yaml"); })
                .find("g.yaml:2: optim.groups: expected a list of groups"),
            std::string::npos);
  register_builtins();
  RunConfig sched = parse("    - {name: a, match: 'x', schedule: {name: cosin}}\n");
  EXPECT_NE(error_of([&] { check_registered_names(sched); })
                .find("optim.groups[0].schedule.name = 'cosin': unknown lr schedule"),
            std::string::npos);
}

TEST(Registry, RecipeNamesAreCheckedBeforeAnyWork) {
  register_builtins();
  RunConfig cfg = load_recipe("multi30k/admin", {"optim.name=adamx"});
  std::string e = error_of([&] { check_registered_names(cfg); });
  EXPECT_EQ(e, "--set optim.name=adamx: optim.name = 'adamx': unknown optimizer; known: adam, "
               "adamw, radam (did you mean 'adam'?)");
  for (const char* o : {"model.arch=transformr", "model.residual=admn", "schedule.name=cosin",
                        "train.criterion=xent"}) {
    RunConfig c = load_recipe("multi30k/admin", {o});
    EXPECT_NE(error_of([&] { check_registered_names(c); }), "<no exception>") << o;
  }
  check_registered_names(load_recipe("multi30k/admin"));
}

TEST(Registry, DuplicateAndUnknownNames) {
  Registry<int> r("widget");
  r.add("a", 1);
  r.add("b", 2);
  EXPECT_THROW(r.add("a", 3), std::logic_error);
  try {
    r.get("c");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown widget 'c'; known: a, b"), std::string::npos);
  }
  EXPECT_EQ(r.get("b"), 2);
}

TEST(Registry, BuiltinsArePresentAndUnknownResidualListsThem) {
  register_builtins();  // idempotent
  for (const char* n : {"post_ln", "pre_ln", "admin", "admin_closed_form", "deepnorm", "rezero"})
    EXPECT_TRUE(residual_registry().contains(n)) << n;
  RunConfig cfg = parse_recipe_text("model:\n  residual: postln\n", "t");
  try {
    build_model(cfg.model, VocabInfo{10, 10, true});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown residual variant 'postln'; known: admin"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace clinic
