#include "models/residual.h"

#include <cmath>
#include <mutex>

namespace clinic {

torch::Tensor ResidualImpl::forward(const torch::Tensor& x,
                                    const torch::Tensor& fx) {
  torch::Tensor branch = alpha.defined() ? fx * alpha : fx;
  if (!omega.defined()) return x + branch;
  // addcmul keeps one temporary instead of two: branch + x * omega.
  return torch::addcmul(branch, x, omega.to(x.dtype()));
}

void ResidualImpl::set_omega(torch::Tensor value, bool trainable) {
  omega = trainable ? register_parameter("omega", value)
                    : register_buffer("omega", value);
}

void ResidualImpl::set_alpha(torch::Tensor value) {
  alpha = register_parameter("alpha", value);
}

Registry<ResidualBuilder>& residual_registry() {
  static Registry<ResidualBuilder> r("residual variant");
  return r;
}

double admin_closed_form_omega(int64_t n, const std::string& scale) {
  TORCH_CHECK(n > 0, "admin_closed_form needs at least one sublayer, got ", n);
  if (scale == "O(1)") return std::sqrt(static_cast<double>(n));
  double v = (n + 1.0) / std::log(n + 1.0) - 1.0;
  return std::sqrt(v);
}

double deepnorm_alpha(bool decoder, int64_t N, int64_t M) {
  if (decoder) return std::pow(3.0 * M, 0.25);
  return 0.81 * std::pow(std::pow(N, 4.0) * M, 1.0 / 16);
}

double deepnorm_beta(bool decoder, int64_t N, int64_t M) {
  if (decoder) return std::pow(12.0 * M, -0.25);
  return 0.87 * std::pow(std::pow(N, 4.0) * M, -1.0 / 16);
}

namespace {

class PostLn : public ResidualVariant {
 public:
  NormPosition norm_position() const override { return NormPosition::kPost; }
};

class PreLn : public ResidualVariant {
 public:
  NormPosition norm_position() const override { return NormPosition::kPre; }
};

// Admin (Liu et al. 2020, §4.3): LN(omega ⊙ x + f(x)), omega profiled by
// admin_initialize(); starts at 1 so an unprofiled model is Post-LN.
class Admin : public ResidualVariant {
 public:
  explicit Admin(const ModelConfig& c) : cfg_(c) {}
  NormPosition norm_position() const override { return NormPosition::kPost; }
  Residual make(const SublayerSite& s) const override {
    Residual r;
    int64_t n = cfg_.omega_shape == "vector" ? s.d_model : 1;
    r->set_omega(torch::ones({n}), cfg_.omega_trainable);
    return r;
  }
  bool needs_profiling() const override { return true; }

 private:
  ModelConfig cfg_;
};

class AdminClosedForm : public ResidualVariant {
 public:
  explicit AdminClosedForm(const ModelConfig& c) : cfg_(c) {}
  NormPosition norm_position() const override { return NormPosition::kPost; }
  Residual make(const SublayerSite& s) const override {
    int64_t n = s.decoder ? 3 * s.decoder_layers : 2 * s.encoder_layers;
    double w = admin_closed_form_omega(n, cfg_.omega_scale);
    Residual r;
    if (cfg_.omega_shape == "vector")
      r->set_omega(torch::full({s.d_model}, w), cfg_.omega_trainable);
    else
      r->set_omega(torch::full({1}, w), /*trainable=*/false);
    return r;
  }

 private:
  ModelConfig cfg_;
};

// DeepNet (Wang et al. 2022): LN(alpha x + f(x)) plus beta-scaled init.
class DeepNorm : public ResidualVariant {
 public:
  NormPosition norm_position() const override { return NormPosition::kPost; }
  Residual make(const SublayerSite& s) const override {
    Residual r;
    r->set_omega(torch::full({1}, deepnorm_alpha(s.decoder, s.encoder_layers,
                                                  s.decoder_layers)),
                 /*trainable=*/false);
    return r;
  }
  double branch_init_gain(const SublayerSite& s) const override {
    return deepnorm_beta(s.decoder, s.encoder_layers, s.decoder_layers);
  }
};

// ReZero (Bachlechner et al. 2020): x + alpha f(x), no LayerNorm, alpha = 0.
// One alpha per sublayer (the paper's form; the Clinic shares one per layer).
class ReZero : public ResidualVariant {
 public:
  NormPosition norm_position() const override { return NormPosition::kNone; }
  bool final_norm() const override { return false; }
  Residual make(const SublayerSite&) const override {
    Residual r;
    r->set_alpha(torch::zeros({1}));
    return r;
  }
};

}  // namespace

void register_builtin_residuals() {
  auto& r = residual_registry();
  r.add("post_ln", [](const ModelConfig&) { return std::make_shared<PostLn>(); });
  r.add("pre_ln", [](const ModelConfig&) { return std::make_shared<PreLn>(); });
  r.add("admin", [](const ModelConfig& c) { return std::make_shared<Admin>(c); });
  r.add("admin_closed_form",
        [](const ModelConfig& c) { return std::make_shared<AdminClosedForm>(c); });
  r.add("deepnorm", [](const ModelConfig&) { return std::make_shared<DeepNorm>(); });
  r.add("rezero", [](const ModelConfig&) { return std::make_shared<ReZero>(); });
}

}  // namespace clinic
