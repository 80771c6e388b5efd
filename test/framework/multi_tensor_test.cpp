// The multi-tensor optimizer steps (framework/optim/multi_tensor.h) against
// the per-tensor classes they replace, which are themselves checked against
// PyTorch's and the reference repositories' trajectories (optim_test.cpp,
// tools/golden/optim_golden.py). On CPU ATen's foreach ops run the same
// kernels tensor by tensor, so the oracle here is bitwise equality.
#include <sstream>

#include "framework/optim/multi_tensor.h"
#include "framework/optim/optimizers.h"
#include "test/support.h"

namespace clinic {
namespace {

// Several shapes, one tensor that has no gradient on every third update
// (its step count falls behind: a second bucket), a float and a double.
std::vector<torch::Tensor> mt_params() {
  torch::manual_seed(7);
  std::vector<torch::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{5, 3}, {7}, {2, 2, 4}, {1}, {6, 5}})
    ps.push_back(torch::randn(shape).requires_grad_(true));
  ps.push_back(torch::randn({4}, torch::kDouble).requires_grad_(true));
  return ps;
}

// A deterministic gradient of a smooth loss, the same for both optimizers.
void mt_set_grads(std::vector<torch::Tensor>& ps, int update) {
  for (size_t i = 0; i < ps.size(); ++i) {
    if (i == 3 && update % 3 == 2) {
      ps[i].mutable_grad() = torch::Tensor();
      continue;
    }
    auto x = ps[i].detach();
    ps[i].mutable_grad() = 0.3 * x + 0.1 * x.pow(3) - 0.05 * std::sin(0.7 * update) * torch::ones_like(x);
  }
}

struct Named {
  std::string name;
  OptimConfig cfg;
};

std::vector<Named> mt_configs() {
  std::vector<Named> out;
  auto add = [&](std::string name, std::string opt, double wd, std::string flavour = "clinic",
                 bool sgd = false, bool decoupled = false) {
    OptimConfig c;
    c.name = opt;
    c.lr = 0.03;
    c.betas = {0.9, 0.98};
    c.eps = 1e-6;
    c.weight_decay = wd;
    c.flavour = flavour;
    c.degenerate_to_sgd = sgd;
    c.decoupled_weight_decay = decoupled;
    out.push_back({name, c});
  };
  add("adam", "adam", 0);
  add("adam_l2", "adam", 0.1);
  add("adamw", "adamw", 0.1);
  add("radam_clinic", "radam", 0.1, "clinic");
  add("radam_reference", "radam", 0.1, "reference");
  add("radam_reference_sgd", "radam", 0.1, "reference", true);
  add("radam_torch", "radam", 0.1, "torch");
  add("radam_torch_decoupled", "radam", 0.1, "torch", false, true);
  return out;
}

std::vector<ParamPlacement> mt_placed(const std::vector<torch::Tensor>& ps) {
  std::vector<ParamPlacement> placed;
  for (size_t i = 0; i < ps.size(); ++i) {
    ParamPlacement pp;
    pp.name = "p" + std::to_string(i);
    pp.param = ps[i];
    pp.group = -1;
    pp.decay = true;
    placed.push_back(pp);
  }
  return placed;
}

std::unique_ptr<torch::optim::Optimizer> mt_build(OptimConfig c, bool foreach,
                                                  const std::vector<torch::Tensor>& ps) {
  c.foreach = foreach ? "true" : "false";
  return build_optimizer(mt_placed(ps), c);
}

TEST(MultiTensor, RecipeBuildsTheMultiTensorClassesUnlessForeachIsOff) {
  auto ps = mt_params();
  for (const auto& [name, cfg] : mt_configs()) {
    auto on = mt_build(cfg, true, ps);
    auto off = mt_build(cfg, false, ps);
    const bool on_mt = dynamic_cast<MultiTensorAdam*>(on.get()) ||
                       dynamic_cast<MultiTensorAdamW*>(on.get()) ||
                       dynamic_cast<MultiTensorRAdam*>(on.get());
    const bool off_mt = dynamic_cast<MultiTensorAdam*>(off.get()) ||
                        dynamic_cast<MultiTensorAdamW*>(off.get()) ||
                        dynamic_cast<MultiTensorRAdam*>(off.get());
    EXPECT_TRUE(on_mt) << name;
    EXPECT_FALSE(off_mt) << name;
    // auto: per-tensor for CPU parameters (the faster step there), the
    // multi-tensor class where the caller decides on the device.
    OptimConfig a = cfg;
    a.foreach = "auto";
    auto cpu = build_optimizer(mt_placed(ps), a);
    auto dev = build_optimizer(mt_placed(ps), resolve_foreach(a, true));
    EXPECT_EQ(typeid(*cpu), typeid(*off)) << name;
    EXPECT_EQ(typeid(*dev), typeid(*on)) << name;
    EXPECT_EQ(resolve_foreach(a, false).foreach, "auto");
  }
}

TEST(MultiTensor, EveryOptimizerStepsBitIdenticallyToItsPerTensorClass) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto per_tensor = mt_build(cfg, false, a);
    auto multi = mt_build(cfg, true, b);
    for (int u = 0; u < 30; ++u) {  // past RAdam's rho_t threshold (step 6 at beta2 0.98)
      mt_set_grads(a, u);
      mt_set_grads(b, u);
      per_tensor->step();
      multi->step();
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_TRUE(torch::equal(a[i].detach(), b[i].detach()))
            << name << " update " << u << " tensor " << i << " max diff "
            << (a[i] - b[i]).abs().max().item<double>();
    }
    // The parameters moved (the comparison above compares real steps).
    auto start = mt_params();
    EXPECT_GT((a[0] - start[0]).abs().max().item<double>(), 1e-3) << name;
  }
}

TEST(MultiTensor, CheckpointsAreInterchangeableWithThePerTensorClass) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params();
    auto ref = mt_build(cfg, false, a);
    for (int u = 0; u < 14; ++u) {
      mt_set_grads(a, u);
      ref->step();
    }
    // 7 multi-tensor updates, saved, loaded into the per-tensor class, 7 more.
    auto b = mt_params();
    auto multi = mt_build(cfg, true, b);
    for (int u = 0; u < 7; ++u) {
      mt_set_grads(b, u);
      multi->step();
    }
    std::stringstream buf;
    torch::serialize::OutputArchive out;
    multi->save(out);
    out.save_to(buf);
    auto per_tensor = mt_build(cfg, false, b);
    torch::serialize::InputArchive in;
    in.load_from(buf);
    per_tensor->load(in);
    for (int u = 7; u < 14; ++u) {
      mt_set_grads(b, u);
      per_tensor->step();
    }
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::equal(a[i].detach(), b[i].detach())) << name << " tensor " << i;
  }
}

// One skipped step (a NaN in tensor 2's gradient, guard false) then the
// retraction: every parameter and the serialized state are bit for bit
// what they were.
void mt_expect_skip_changes_nothing(torch::optim::Optimizer& opt, std::vector<torch::Tensor>& b,
                                    int u, const std::string& name) {
  auto& guarded = dynamic_cast<GuardedStep&>(opt);
  mt_set_grads(b, u);
  b[2].mutable_grad().view(-1)[1] = std::numeric_limits<float>::quiet_NaN();
  std::vector<torch::Tensor> before;
  for (auto& p : b) before.push_back(p.detach().clone());
  std::stringstream s0, s1;
  torch::serialize::OutputArchive o0, o1;
  opt.save(o0);
  o0.save_to(s0);
  guarded.guard_next_step(torch::tensor(false));
  opt.step();
  guarded.retract_steps(1);
  opt.save(o1);
  o1.save_to(s1);
  for (size_t i = 0; i < b.size(); ++i)
    ASSERT_TRUE(torch::equal(b[i].detach(), before[i])) << name << " update " << u << " tensor " << i;
  EXPECT_EQ(s0.str(), s1.str()) << name << " update " << u << ": the optimizer state changed";
}

// train.host_reads: log_interval (device_step.h) guards each step with a
// device flag. A skipped step (a NaN gradient, ok = false) leaves every
// parameter and moment bit for bit, and once its step count is taken back
// the guarded optimizer goes on as the unguarded one that never saw it.
// Kept steps: bitwise for Adam without decay (the masked operands are exact
// 1s); the masked decay terms (p + c * p / 1 against p + c * p) may round
// differently in the last bit, so those flavours are compared within 1e-5.
TEST(MultiTensor, GuardedStepsSkipExactlyAndOtherwiseStepAsTheUnguarded) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto plain = mt_build(cfg, true, a);
    auto guarded_opt = mt_build(cfg, true, b);
    auto* guarded = dynamic_cast<GuardedStep*>(guarded_opt.get());
    ASSERT_NE(guarded, nullptr) << name;
    ASSERT_TRUE(guarded->can_guard()) << name;
    const bool exact = name == "adam";
    int skips = 0;
    for (int u = 0; u < 30; ++u) {
      if (u == 3 || u == 10 || u == 22) {  // every tensor has a gradient on these
        mt_expect_skip_changes_nothing(*guarded_opt, b, u, name);
        ++skips;
        continue;
      }
      mt_set_grads(a, u);
      mt_set_grads(b, u);
      plain->step();
      guarded->guard_next_step(torch::tensor(true));
      guarded_opt->step();
      for (size_t i = 0; i < a.size(); ++i) {
        if (exact)
          ASSERT_TRUE(torch::equal(a[i].detach(), b[i].detach())) << name << " update " << u << " tensor " << i;
        else
          test::expect_close(b[i].detach(), a[i].detach(), 1e-5, 1e-6);
      }
    }
    EXPECT_EQ(skips, 3);
    // Without the retraction the step counts (bias corrections, RAdam's
    // rectification) would be 3 ahead: far outside the tolerance above.
    auto start = mt_params();
    EXPECT_GT((a[0] - start[0]).abs().max().item<double>(), 1e-3) << name;
  }
}

TEST(MultiTensor, AmsgradCannotBeGuarded) {
  auto ps = mt_params();
  MultiTensorAdam plain(ps, torch::optim::AdamOptions(1e-3));
  MultiTensorAdam ams(ps, torch::optim::AdamOptions(1e-3).amsgrad(true));
  EXPECT_TRUE(plain.can_guard());
  EXPECT_FALSE(ams.can_guard());  // its step is the per-tensor class's
}

// CapturableStep (issue 33 item 3, CUDA graphs): the steps whose kernels read
// lr and step counts from device tensors, against the per-tensor classes
// (host coefficients; golden-tested in optim_test.cpp). The lr changes on
// every update, as a warmup schedule's does, and tensor 3 lacks a gradient
// on every third update (its step count falls behind the others' in the
// same bucket, and the bucket's tensors change: both device paths run).
// Coefficients are computed in another order than the host's, so within
// the guarded test's tolerance.
double mt_lr(int u) { return 0.03 * (1.0 + 0.5 * std::sin(0.9 * u)); }

void mt_set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

TEST(MultiTensor, CapturableStepsFollowThePerTensorClassUnderAChangingLr) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto per_tensor = mt_build(cfg, false, a);
    auto cap_opt = mt_build(cfg, true, b);
    auto* cap = dynamic_cast<CapturableStep*>(cap_opt.get());
    ASSERT_NE(cap, nullptr) << name;
    cap->set_capturable(true);
    ASSERT_TRUE(cap->capturable());
    for (int u = 0; u < 30; ++u) {  // past RAdam's rho_t threshold
      mt_set_grads(a, u);
      mt_set_grads(b, u);
      mt_set_lr(*per_tensor, mt_lr(u));
      mt_set_lr(*cap_opt, mt_lr(u));
      per_tensor->step();
      cap_opt->step();
      for (size_t i = 0; i < a.size(); ++i) test::expect_close(b[i].detach(), a[i].detach(), 1e-5, 1e-6);
    }
    auto start = mt_params();
    EXPECT_GT((a[0] - start[0]).abs().max().item<double>(), 1e-3) << name;
  }
}

// launch() must use only what stage() wrote: a graph replays launch()'s
// kernels without running any host code. After stage(), the host lr is set
// to nonsense; the step is still the one with the staged lr.
TEST(MultiTensor, CapturableLaunchUsesTheLrStageWrote) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto oa = mt_build(cfg, true, a), ob = mt_build(cfg, true, b);
    auto* ca = dynamic_cast<CapturableStep*>(oa.get());
    auto* cb = dynamic_cast<CapturableStep*>(ob.get());
    ca->set_capturable(true);
    cb->set_capturable(true);
    for (int u = 0; u < 12; ++u) {
      mt_set_grads(a, u);
      mt_set_grads(b, u);
      mt_set_lr(*oa, mt_lr(u));
      mt_set_lr(*ob, mt_lr(u));
      oa->step();
      cb->stage();
      mt_set_lr(*ob, 1e3);
      cb->launch();
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_TRUE(torch::equal(a[i].detach(), b[i].detach())) << name << " update " << u << " tensor " << i;
    }
  }
}

// A guarded skip in capturable mode leaves parameters and state bit for bit
// (after retract_steps); a checkpoint loaded into a fresh capturable
// optimizer, or into the same one after steps it then forgets, goes on with
// the loaded step counts (the device copies are rebuilt from them: were
// they not, the bias corrections would be off by 10 or by 3 steps, far
// outside the tolerance).
TEST(MultiTensor, CapturableStepsSkipExactlyAndResumeFromCheckpoints) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto per_tensor = mt_build(cfg, false, a);
    auto cap_opt = mt_build(cfg, true, b);
    dynamic_cast<CapturableStep&>(*cap_opt).set_capturable(true);
    for (int u = 0; u < 24; ++u) {
      if (u == 4 || u == 16) {
        mt_expect_skip_changes_nothing(*cap_opt, b, u, name);
        continue;
      }
      if (u == 10 || u == 20) {  // checkpoint; resume from it
        std::stringstream buf;
        torch::serialize::OutputArchive out;
        cap_opt->save(out);
        out.save_to(buf);
        torch::serialize::InputArchive in;
        in.load_from(buf);
        if (u == 10) {  // in a fresh capturable optimizer
          cap_opt = mt_build(cfg, true, b);
          dynamic_cast<CapturableStep&>(*cap_opt).set_capturable(true);
        } else {  // in the same one, after 3 steps it then forgets
          std::vector<torch::Tensor> saved;
          for (auto& p : b) saved.push_back(p.detach().clone());
          for (int k = 0; k < 3; ++k) {
            mt_set_grads(b, 100 + k);
            cap_opt->step();
          }
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < b.size(); ++i) b[i].copy_(saved[i]);
        }
        cap_opt->load(in);
      }
      mt_set_grads(a, u);
      mt_set_grads(b, u);
      mt_set_lr(*per_tensor, mt_lr(u));
      mt_set_lr(*cap_opt, mt_lr(u));
      per_tensor->step();
      dynamic_cast<GuardedStep&>(*cap_opt).guard_next_step(torch::tensor(true));
      cap_opt->step();
      for (size_t i = 0; i < a.size(); ++i) test::expect_close(b[i].detach(), a[i].detach(), 1e-5, 1e-6);
    }
  }
}

// What a captured graph of launch() relies on: with gradients written in
// place, stage() keeps every tensor launch() reads, the device step counts
// included (a retraction copies the host's counts into them), and says so by
// an unchanged layout(); load() replaces the moments, and layout() changes.
TEST(MultiTensor, CapturableLayoutKeepsItsMemoryUntilALoadReplacesIt) {
  for (const auto& [name, cfg] : mt_configs()) {
    auto a = mt_params(), b = mt_params();
    auto host = mt_build(cfg, true, a);  // host coefficients: the oracle
    auto opt = mt_build(cfg, true, b);
    auto& cap = dynamic_cast<CapturableStep&>(*opt);
    cap.set_capturable(true);
    auto in_place = [](std::vector<torch::Tensor>& ps, int u) {
      torch::NoGradGuard g;
      for (auto& p : ps) {
        auto x = p.detach();
        auto v = 0.3 * x + 0.1 * x.pow(3) - 0.05 * std::sin(0.7 * u) * torch::ones_like(x);
        if (p.grad().defined()) p.mutable_grad().copy_(v);
        else p.mutable_grad() = v;
      }
    };
    uint64_t layout = 0;
    std::vector<const void*> moments;
    for (int u = 0; u < 8; ++u) {
      in_place(a, u);
      in_place(b, u);
      host->step();
      cap.stage();
      if (u == 0) layout = cap.layout();
      EXPECT_EQ(cap.layout(), layout) << name << " update " << u;
      cap.launch();
      if (u == 4) {  // a skip taken back: the host's counts into the same device tensors
        dynamic_cast<GuardedStep&>(*opt).retract_steps(1);
        dynamic_cast<GuardedStep&>(*host).retract_steps(1);
      }
      for (size_t i = 0; i < a.size(); ++i) test::expect_close(b[i].detach(), a[i].detach(), 1e-5, 1e-6);
    }
    std::stringstream buf;
    torch::serialize::OutputArchive out;
    opt->save(out);
    out.save_to(buf);
    torch::serialize::InputArchive in;
    in.load_from(buf);
    opt->load(in);
    in_place(b, 8);
    cap.stage();
    EXPECT_NE(cap.layout(), layout) << name << ": load() replaced the moments";
  }
}

TEST(MultiTensor, AmsgradHasNoCapturableStep) {
  auto ps = mt_params();
  MultiTensorAdam ams(ps, torch::optim::AdamOptions(1e-3).amsgrad(true));
  EXPECT_THROW(ams.set_capturable(true), c10::Error);
  EXPECT_FALSE(ams.capturable());
}

TEST(MultiTensor, NormIsTheL2NormOfAllElements) {
  auto ps = mt_params();
  std::vector<torch::Tensor> ts;
  double sq = 0;  // plain re-computation in double, element by element
  for (auto& p : ps) {
    ts.push_back(p.detach());
    auto flat = p.detach().to(torch::kDouble).flatten();
    for (int64_t i = 0; i < flat.numel(); ++i) sq += flat[i].item<double>() * flat[i].item<double>();
  }
  EXPECT_NEAR(multi_tensor_norm(ts).item<double>(), std::sqrt(sq), 1e-5 * std::sqrt(sq));
  EXPECT_EQ(multi_tensor_norm({}).item<double>(), 0.0);
  ts[2] = ts[2].clone();
  ts[2].view(-1)[1] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(std::isfinite(multi_tensor_norm(ts).item<double>()));
}

}  // namespace
}  // namespace clinic
