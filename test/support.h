#pragma once
// Shared test helpers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "framework/config.h"
#include "test_paths.h"

namespace clinic::test {

/// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "clinic-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline void expect_close(const torch::Tensor& a, const torch::Tensor& b,
                         double rtol = 1e-5, double atol = 1e-6) {
  ASSERT_EQ(a.sizes(), b.sizes());
  auto diff = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(a.to(torch::kDouble), b.to(torch::kDouble), rtol, atol))
      << "max |a - b| = " << diff;
}

/// Tiny model config for fast tests.
inline ModelConfig tiny_model(const std::string& residual, int64_t layers = 2,
                              int64_t d = 16) {
  ModelConfig m;
  m.residual = residual;
  m.encoder_layers = layers;
  m.decoder_layers = layers;
  m.d_model = d;
  m.ffn_dim = 2 * d;
  m.heads = 2;
  m.dropout = 0;
  m.attention_dropout = 0;
  m.activation_dropout = 0;
  m.max_source_positions = 64;
  m.max_target_positions = 64;
  return m;
}

/// Run a shell command; return its exit code and combined output.
inline int run_shell(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string clinic_bin() { return std::string(kBinDir) + "/clinic"; }

}  // namespace clinic::test
