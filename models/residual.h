#pragma once
// One residual seam for every variant (Liu et al. 2020, eq. 1 and §4):
//   sublayer(x) = N_post( omega * x + alpha * drop(f(N_pre(x))) )
// where the norm placement enum decides which of N_pre / N_post is a
// LayerNorm. Post-LN, Pre-LN, Admin, DeepNorm and ReZero differ only in the
// placement, in omega / alpha, and in the init gain of the branch weights.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "framework/config.h"
#include "framework/registry.h"

namespace clinic {

/// Where the LayerNorm of a sublayer sits.
enum class NormPosition { kPost, kPre, kNone };

/// Position of one sublayer in the model, given to a variant when it builds
/// that sublayer's residual.
struct SublayerSite {
  bool decoder = false;       // encoder or decoder stack
  int64_t layer = 0;          // 0-based layer
  int64_t index = 0;          // 0-based sublayer index within the stack
  int64_t encoder_layers = 0; // N
  int64_t decoder_layers = 0; // M
  int64_t d_model = 0;
  double norm_eps = 1e-5;     // model.layer_norm_eps
};

/// y = omega * x + alpha * fx. Undefined omega / alpha mean 1, so Post-LN and
/// Pre-LN pay nothing for the seam.
class ResidualImpl : public torch::nn::Module {
 public:
  ResidualImpl() = default;
  /// x, fx: [B, T, d].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& fx);
  /// Register omega (scalar [1] or vector [d]) as parameter or buffer.
  void set_omega(torch::Tensor value, bool trainable);
  /// Register alpha as a trainable scalar parameter (ReZero).
  void set_alpha(torch::Tensor value);
  torch::Tensor omega, alpha;
};
TORCH_MODULE(Residual);

/// A residual variant: one small class per `model.residual` name.
class ResidualVariant {
 public:
  virtual ~ResidualVariant() = default;
  virtual NormPosition norm_position() const = 0;
  /// Pre-LN stacks end in a LayerNorm (Xiong et al. 2020); part of the
  /// variant, not a separate knob.
  virtual bool final_norm() const {
    return norm_position() == NormPosition::kPre;
  }
  /// The residual module of one sublayer. Default: plain addition.
  virtual Residual make(const SublayerSite&) const { return Residual(); }
  /// Xavier gain for value, output and FFN weights (DeepNorm's beta).
  virtual double branch_init_gain(const SublayerSite&) const { return 1.0; }
  /// Admin: omega must be profiled on a batch before training.
  virtual bool needs_profiling() const { return false; }
};

using ResidualBuilder =
    std::function<std::shared_ptr<ResidualVariant>(const ModelConfig&)>;
Registry<ResidualBuilder>& residual_registry();
void register_builtin_residuals();

/// admin-torch's closed form (admin_torch/admin.py, calculate_init):
/// omega = sqrt((n+1)/ln(n+1) - 1) for O(log n), sqrt(n) for O(1); n is the
/// number of residual sublayers of the stack (2N encoder, 3M decoder).
double admin_closed_form_omega(int64_t n, const std::string& scale);
/// DeepNet (Wang et al. 2022) encoder-decoder constants.
double deepnorm_alpha(bool decoder, int64_t N, int64_t M);
double deepnorm_beta(bool decoder, int64_t N, int64_t M);

}  // namespace clinic
