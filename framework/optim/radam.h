#pragma once
// RAdam (Liu et al., ICLR 2020) as a torch::optim::Optimizer, in the pattern
// of LibTorch's optim/adam.h. Three published flavours differ only in the
// first ~5 steps (rho_t below the threshold) and in weight decay:
//   kClinic    Transformer-Clinic radam_fairseq: skip while rho_t < 5; decay
//              p -= lr*wd*p every step, before the update.
//   kReference LiyuanLucasLiu/RAdam: rho_t >= 5; optional momentum-SGD step
//              below it (degenerate_to_sgd); decay only when a step happens.
//   kTorch     torch.optim.RAdam: rho_t > 5, momentum-SGD below it; coupled
//              L2 (g += wd*p) unless decoupled_weight_decay.
#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>

#include <tuple>
#include <vector>

namespace clinic {

enum class RAdamFlavour : int64_t { kClinic = 0, kReference = 1, kTorch = 2 };

struct RAdamOptions
    : public torch::optim::OptimizerCloneableOptions<RAdamOptions> {
  RAdamOptions(double lr = 1e-3) : lr_(lr) {}
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(RAdamFlavour, flavour) = RAdamFlavour::kClinic;
  TORCH_ARG(bool, degenerate_to_sgd) = false;
  TORCH_ARG(bool, decoupled_weight_decay) = false;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override { return lr(); }
  void set_lr(const double lr) override { this->lr(lr); }
};

struct RAdamParamState
    : public torch::optim::OptimizerCloneableParamState<RAdamParamState> {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(torch::Tensor, exp_avg);
  TORCH_ARG(torch::Tensor, exp_avg_sq);

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

class RAdam : public torch::optim::Optimizer {
 public:
  explicit RAdam(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                 RAdamOptions defaults = {});
  explicit RAdam(std::vector<torch::Tensor> params, RAdamOptions defaults = {})
      : RAdam({torch::optim::OptimizerParamGroup(std::move(params))},
              defaults) {}

  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  /// rho_t of the variance rectification for step t (1-based).
  static double rho(double beta2, int64_t t);
  /// The rectification term r_t (valid when rho_t > 4).
  static double rectifier(double beta2, int64_t t);

 private:
  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(RAdam);
  }
};

}  // namespace clinic
