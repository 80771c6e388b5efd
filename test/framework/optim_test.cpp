#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "framework/errors.h"
#include "framework/optim/name_pattern.h"
#include "framework/optim/optimizers.h"
#include "framework/optim/param_groups.h"
#include "framework/optim/radam.h"
#include "framework/optim/schedule.h"
#include "test/support.h"

namespace clinic {
namespace {

// Same problem as tools/golden/optim_golden.py.
torch::Tensor grad_of(const torch::Tensor& p) {
  auto opts = torch::dtype(torch::kDouble);
  auto t = torch::tensor({1.0, 0.5, -0.5, 0.2, 0.0, -1.5}, opts);
  auto w = torch::tensor({1.0, 0.3, 2.0, 5.0, 0.7, 1.5}, opts);
  return 2 * w * (p - t) + 0.2 * p.pow(3);
}
torch::Tensor p0() {
  return torch::tensor({0.5, -1.2, 2.0, 0.03, -0.7, 1.1}, torch::dtype(torch::kDouble));
}

std::map<std::string, std::vector<std::vector<double>>> golden() {
  std::ifstream in(std::string(kTestDataDir) + "/optim_golden.txt");
  std::map<std::string, std::vector<std::vector<double>>> g;
  std::string name;
  int step;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    ls >> name >> step;
    std::vector<double> v;
    for (double x; ls >> x;) v.push_back(x);
    g[name].push_back(v);
  }
  return g;
}

constexpr double kLr = 0.05, kWd = 0.1;

std::unique_ptr<torch::optim::Optimizer> make(const std::string& name, torch::Tensor p) {
  auto betas = std::make_tuple(0.9, 0.98);
  if (name == "adam")
    return std::make_unique<torch::optim::Adam>(
        std::vector<torch::Tensor>{p},
        torch::optim::AdamOptions(kLr).betas(betas).eps(1e-8).weight_decay(kWd));
  RAdamOptions o(kLr);
  o.betas(betas).eps(1e-8).weight_decay(kWd);
  if (name == "radam_torch") o.flavour(RAdamFlavour::kTorch);
  if (name == "radam_torch_decoupled") o.flavour(RAdamFlavour::kTorch).decoupled_weight_decay(true);
  if (name == "radam_clinic") o.flavour(RAdamFlavour::kClinic);
  if (name == "radam_reference") o.flavour(RAdamFlavour::kReference);
  if (name == "radam_reference_sgd") o.flavour(RAdamFlavour::kReference).degenerate_to_sgd(true);
  return std::make_unique<RAdam>(std::vector<torch::Tensor>{p}, o);
}

void step(torch::optim::Optimizer& opt, torch::Tensor& p) {
  p.mutable_grad() = grad_of(p.detach());
  opt.step();
}

TEST(Optim, MatchesPyTorchAndReferenceTrajectories) {
  auto g = golden();
  ASSERT_EQ(g.size(), 12u);
  for (const auto& [name, traj] : g) {
    if (name.rfind("groups_", 0) == 0) continue;  // OptimGroups below
    ASSERT_EQ(traj.size(), 20u) << name;
    auto p = p0().requires_grad_(true);
    auto opt = make(name, p);
    for (size_t t = 0; t < traj.size(); ++t) {
      step(*opt, p);
      for (size_t i = 0; i < traj[t].size(); ++i) {
        double got = p[i].item<double>(), want = traj[t][i];
        EXPECT_NEAR(got, want, 1e-6 * std::abs(want) + 1e-12)
            << name << " step " << t + 1 << " param " << i;
      }
    }
  }
}

// optim.groups end to end below the trainer: the recipe's groups, placement
// by name, one optimizer from the registry, each group's schedule with
// fairseq's timing (update t uses schedule(t - 1)) -- against torch.optim
// with two param groups and the RAdam transcriptions (optim_golden.py).
TEST(OptimGroups, TwoGroupsMatchTorchOptimWithOwnLrEpsDecayAndSchedule) {
  auto g = golden();
  const std::map<std::string, std::string> optimizers = {
      {"groups_adam", "name: adam"},
      {"groups_adamw", "name: adamw"},
      {"groups_radam_torch", "name: radam\n  flavour: torch"},
      {"groups_radam_torch_decoupled", "name: radam\n  flavour: torch\n  decoupled_weight_decay: true"},
      {"groups_radam_clinic", "name: radam\n  flavour: clinic"},
      {"groups_radam_reference", "name: radam\n  flavour: reference"}};
  for (const auto& [golden_name, optim] : optimizers) {
    const auto& traj = g[golden_name];
    ASSERT_EQ(traj.size(), 20u) << golden_name;
    RunConfig cfg = parse_recipe_text(
        "optim:\n  " + optim +
            "\n  lr: 0.05\n  betas: [0.9, 0.98]\n  eps: 1.0e-8\n  weight_decay: 0.1\n"
            "  groups:\n"
            "    - {name: a, match: 'a', schedule: {name: noam, warmup_updates: 4, noam_dim: 1}}\n"
            "    - name: b\n      glob: 'b'\n      lr: 0.01\n      betas: [0.8, 0.99]\n"
            "      eps: 0.01\n      weight_decay: 0\n"
            "      schedule: {name: inverse_sqrt, warmup_updates: 3}\n"
            "train:\n  max_updates: 20\n",
        "groups.yaml");
    auto all = p0();
    auto a = all.slice(0, 0, 3).clone().requires_grad_(true);
    auto b = all.slice(0, 3, 6).clone().requires_grad_(true);
    auto placed = place_parameters({{"a", a}, {"b", b}}, cfg.optim, nullptr);
    std::vector<int> group_of;
    auto opt = build_optimizer(placed, cfg.optim, &group_of);
    ASSERT_EQ(group_of, (std::vector<int>{0, 1})) << golden_name;
    auto schedules = build_group_schedules(cfg);
    ASSERT_EQ(schedules.size(), 3u);
    for (int64_t t = 1; t <= 20; ++t) {
      auto& groups = opt->param_groups();
      for (size_t k = 0; k < groups.size(); ++k)
        groups[k].options().set_lr(schedules[group_of[k] + 1](t - 1));
      auto grad = grad_of(torch::cat({a.detach(), b.detach()}));
      a.mutable_grad() = grad.slice(0, 0, 3).clone();
      b.mutable_grad() = grad.slice(0, 3, 6).clone();
      opt->step();
      auto got = torch::cat({a.detach(), b.detach()});
      for (int64_t i = 0; i < 6; ++i) {
        double want = traj[t - 1][i];
        EXPECT_NEAR(got[i].item<double>(), want, 1e-6 * std::abs(want) + 1e-12)
            << golden_name << " step " << t << " param " << i;
      }
    }
  }
}

TEST(OptimGroups, PlacementErrorsNameGroupsAndParameters) {
  auto t = torch::zeros({2}, torch::requires_grad());
  std::vector<std::pair<std::string, torch::Tensor>> named = {
      {"encoder.w", t}, {"encoder.b", t}, {"decoder.w", t}};
  auto cfg_of = [](const std::string& groups) {
    return parse_recipe_text("optim:\n  groups: " + groups + "\n", "g.yaml").optim;
  };
  // Two groups matching one parameter: both named, and the parameter.
  auto e = test::error_of<ConfigError>([&] {
    place_parameters(named, cfg_of("[{name: enc, match: 'encoder.*'}, {name: w, glob: '*.w'}]"),
                     nullptr);
  });
  EXPECT_NE(e.find("encoder.w"), std::string::npos) << e;
  EXPECT_EQ(e.rfind("g.yaml:2: optim.groups: parameter encoder.w", 0), 0u) << e;  // recipe line
  EXPECT_NE(e.find("'enc'"), std::string::npos) << e;
  EXPECT_NE(e.find("'w'"), std::string::npos) << e;
  // A group matching nothing is named with its pattern.
  e = test::error_of<ConfigError>(
      [&] { place_parameters(named, cfg_of("[{name: ghost, match: 'embed.*'}]"), nullptr); });
  EXPECT_NE(e.find("ghost"), std::string::npos) << e;
  EXPECT_EQ(e.rfind("g.yaml:2: optim.groups[0] 'ghost'", 0), 0u) << e;
  EXPECT_NE(e.find("embed.*"), std::string::npos) << e;
  // Unmatched parameters keep the top-level settings; no_decay splits a group.
  OptimConfig c = cfg_of("[{name: enc, match: 'encoder\\..*', weight_decay: 0.5}]");
  c.no_decay_bias_norm = true;
  auto placed = place_parameters(named, c, [](const std::string& n) { return n.back() == 'b'; });
  ASSERT_EQ(placed.size(), 3u);
  EXPECT_EQ(placed[0].group, 0);
  EXPECT_TRUE(placed[0].decay);
  EXPECT_EQ(placed[1].group, 0);
  EXPECT_FALSE(placed[1].decay);
  EXPECT_EQ(placed[2].group, -1);
  std::vector<int> group_of;
  auto opt = build_optimizer(placed, c, &group_of);
  ASSERT_EQ(group_of, (std::vector<int>{-1, 0, 0}));
  const auto& pg = opt->param_groups();
  auto wd = [&](size_t k) {
    return static_cast<const torch::optim::AdamOptions&>(pg[k].options()).weight_decay();
  };
  EXPECT_EQ(wd(0), 0.0);  // top-level optim.weight_decay default
  EXPECT_EQ(wd(1), 0.5);
  EXPECT_EQ(wd(2), 0.0);  // the group's no-decay half
}

// optim.groups[].match on the C library's automaton: the same answers as
// std::regex_match (the oracle, on names short enough for it) and, for the
// nested repetitions that make std::regex backtrack exponentially (outside
// testing hung `clinic train` on `(.+)+x$`), answers in linear time.
TEST(OptimGroups, NamePatternsMatchLikeStdRegexWithoutBacktracking) {
  const std::vector<std::string> names = {"encoder.layers.0.self_attn.in_proj_weight",
                                          "encoder.layers.0.norm1.weight", "decoder.fc.bias",
                                          "decoder.layer_norm.weight", "embed_tokens.weight",
                                          "ax", "a|b", ""};
  for (const std::string pat : {"encoder.*", "encoder\\..*", ".*(bias|norm\\.weight)", "a|b",
                                "a\\|b", "[a-z_.]+weight", "(de|en)coder\\.layers?\\..*", "x?",
                                "embed_tokens\\.weight|decoder\\.fc\\.bias", ".*[0-9].*"}) {
    NamePattern mine(pat);
    const std::regex oracle(pat);
    for (const auto& n : names)
      EXPECT_EQ(mine.matches(n), std::regex_match(n, oracle)) << "'" << pat << "' on '" << n << "'";
  }
  // 2^60 backtracking paths for std::regex; here each is one pass.
  const std::string as(60, 'a');
  EXPECT_TRUE(NamePattern("(a+)+$").matches(as));
  EXPECT_FALSE(NamePattern("(a+)+$").matches(as + "!"));
  EXPECT_FALSE(NamePattern("(.+)+x$").matches(as + "y"));
  EXPECT_TRUE(NamePattern("(.+)+x$").matches(as + "x"));
  EXPECT_FALSE(NamePattern("(a|aa)+").matches(as + "b"));
  // Through placement, as `clinic train` meets it.
  auto t = torch::zeros({2}, torch::requires_grad());
  auto placed = place_parameters(
      {{as + "y", t}, {as + "x", t}},
      parse_recipe_text("optim:\n  groups: [{name: evil, match: '(.+)+x$'}]\n", "g.yaml").optim,
      nullptr);
  EXPECT_EQ(placed[0].group, -1);
  EXPECT_EQ(placed[1].group, 0);
  // Perl's \d would be a plain 'd' in POSIX syntax: refused, with the spelling that works.
  auto e = test::error_of<ConfigError>(
      [] { parse_recipe_text("optim:\n  groups: [{name: a, match: 'layers\\.\\d+'}]\n", "g.yaml"); });
  EXPECT_NE(e.find("g.yaml:2: optim.groups[0].match = 'layers\\.\\d+': not a regular expression "
                   "(\\d is not POSIX extended syntax: write [0-9])"),
            std::string::npos)
      << e;
  EXPECT_THROW(NamePattern("(?!bias).*"), ConfigError);
  // An escaped '(' followed by '?' is an optional literal '(', not a (?...) group.
  EXPECT_TRUE(NamePattern("a\\(?b").matches("a(b"));
  EXPECT_TRUE(NamePattern("a\\(?b").matches("ab"));
  EXPECT_THROW(NamePattern("enc(oder"), ConfigError);
}

TEST(Optim, ClinicFlavourSkipsFirstFiveStepsButDecays) {
  auto p = p0().requires_grad_(true);
  auto opt = make("radam_clinic", p);
  auto before = p.detach().clone();
  step(*opt, p);
  // rho_1 < 5: no adaptive step, only p <- p - lr*wd*p.
  test::expect_close(p.detach(), before * (1 - kLr * kWd), 0, 1e-15);
  EXPECT_LT(RAdam::rho(0.98, 5), 5.0);
  EXPECT_GE(RAdam::rho(0.98, 6), 5.0);
  EXPECT_NEAR(RAdam::rectifier(0.98, 6), 0.115, 0.005);  // design notes §1.4
}

TEST(Optim, SaveLoadContinuesIdentically) {
  for (std::string name : {"adam", "radam_clinic", "radam_torch"}) {
    auto a = p0().requires_grad_(true);
    auto opt_a = make(name, a);
    for (int i = 0; i < 12; ++i) step(*opt_a, a);

    auto b = p0().requires_grad_(true);
    auto opt_b = make(name, b);
    for (int i = 0; i < 7; ++i) step(*opt_b, b);
    std::stringstream buf;
    torch::serialize::OutputArchive out;
    opt_b->save(out);
    out.save_to(buf);
    auto c = b.detach().clone().requires_grad_(true);
    auto opt_c = make(name, c);
    torch::serialize::InputArchive in;
    in.load_from(buf);
    opt_c->load(in);
    for (int i = 7; i < 12; ++i) step(*opt_c, c);
    EXPECT_TRUE(torch::equal(a.detach(), c.detach())) << name;
  }
}

TEST(Optim, ConstructorRejectsBadHyperparameters) {
  auto p = p0().requires_grad_(true);
  EXPECT_THROW(RAdam({p}, RAdamOptions(-1.0)), c10::Error);
  EXPECT_THROW(RAdam({p}, RAdamOptions(1e-3).betas({0.9, 1.0})), c10::Error);
  EXPECT_THROW(RAdam({p}, RAdamOptions(1e-3).weight_decay(-1)), c10::Error);
}

Schedule sched(const std::string& name, int64_t warmup, double init, double end, int64_t total) {
  ScheduleConfig c;
  c.name = name;
  c.warmup_updates = warmup;
  c.warmup_init_lr = init;
  c.end_lr = end;
  return schedule_registry().get(name)(c, 5e-4, total);
}

TEST(Schedule, InverseSqrtHasFairseqSemantics) {
  auto s = sched("inverse_sqrt", 4000, 1e-7, 0, 0);
  EXPECT_DOUBLE_EQ(s(0), 1e-7);
  EXPECT_DOUBLE_EQ(s(2000), 1e-7 + 2000 * (5e-4 - 1e-7) / 4000);
  EXPECT_DOUBLE_EQ(s(4000), 5e-4);
  EXPECT_DOUBLE_EQ(s(16000), 2.5e-4);  // 5e-4 * sqrt(4000 / 16000)
}

TEST(Schedule, LinearCosineConstant) {
  auto lin = sched("linear", 10, 0, 1e-4, 110);
  EXPECT_DOUBLE_EQ(lin(10), 5e-4);
  EXPECT_NEAR(lin(60), 0.5 * (5e-4 + 1e-4), 1e-15);
  EXPECT_DOUBLE_EQ(lin(500), 1e-4);
  auto cos = sched("cosine", 0, 0, 0, 100);
  EXPECT_NEAR(cos(50), 2.5e-4, 1e-15);
  EXPECT_NEAR(cos(100), 0, 1e-15);
  auto c = sched("constant", 4, 0, 0, 0);
  EXPECT_DOUBLE_EQ(c(2), 2.5e-4);
  EXPECT_DOUBLE_EQ(c(1000), 5e-4);
}

TEST(Schedule, DecayingSchedulesNeedALength) {
  try {
    parse_recipe_text("schedule:\n  name: linear\n", "t.yaml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.max_updates"), std::string::npos);
  }
}

}  // namespace
}  // namespace clinic
