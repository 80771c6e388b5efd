#pragma once
// Shared test helpers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <unistd.h>

#include "framework/config.h"
#include "framework/data/text.h"
#include "framework/model.h"
#include "framework/train/checkpoint.h"
#include "test_paths.h"

namespace clinic::test {

/// The message of the E that fn() throws, or "<no exception>".
template <class E>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

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

/// A copy of every parameter of m by name (a snapshot that later training
/// does not change).
inline std::map<std::string, torch::Tensor> named_weights(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> w;
  for (const auto& p : m.named_parameters()) w[p.key()] = p.value().detach().clone();
  return w;
}

/// The parameters, by name, of a checkpoint loaded into a fresh model of
/// `model` (the copy-task vocabulary by default); `meta`, when given, gets
/// the checkpoint's metadata (its update, generator state, ...).
inline std::map<std::string, torch::Tensor> checkpoint_params(const ModelConfig& model,
                                                              const std::string& path,
                                                              CheckpointMeta* meta = nullptr,
                                                              VocabInfo vocab = VocabInfo{16, 16, true}) {
  auto m = build_model(model, vocab);
  CheckpointMeta got = load_checkpoint(path, *m, nullptr);
  if (meta) *meta = got;
  return named_weights(*m);
}

/// Each sublayer's input x, branch output f(x) and mean omega, in order, from
/// one no-grad forward of m on b (in m's current train/eval mode): the
/// tensors an Admin profiling test recomputes the omega recursion from.
struct BranchRecord {
  std::vector<torch::Tensor> x, fx;
  std::vector<double> omega;
};
inline BranchRecord record_branches(Seq2SeqModel& m, const Batch& b) {
  struct Recorder : SublayerObserver {
    BranchRecord rec;
    void on_branch(SublayerView& v) override {
      rec.omega.push_back(v.omega.mean().item<double>());
      rec.x.push_back(v.x.clone());
      rec.fx.push_back(v.fx.clone());
    }
  } recorder;
  m.set_observer(&recorder);
  {
    torch::NoGradGuard g;
    m.forward(b.src, b.tgt_in);
  }
  m.set_observer(nullptr);
  return std::move(recorder.rec);
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

/// A toy copy task on disk: <dir>/{train,valid}.{src,tgt}, words w0..w{V-1},
/// target = source. For the pretokenized tokenizer.
inline void write_copy_corpus(const std::string& dir, int n_train, int n_valid,
                              int vocab = 12, uint64_t seed = 5) {
  std::filesystem::create_directories(dir);
  uint64_t x = seed;
  auto next = [&] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % 1000000);
  };
  for (auto [split, n] : {std::pair<const char*, int>{"train", n_train}, {"valid", n_valid}}) {
    std::ofstream s(dir + "/" + split + ".src"), t(dir + "/" + split + ".tgt");
    for (int i = 0; i < n; ++i) {
      int len = 2 + next() % 6;
      std::string line;
      for (int j = 0; j < len; ++j) line += (j ? " w" : "w") + std::to_string(next() % vocab);
      s << line << "\n";
      t << line << "\n";
    }
  }
}

/// A small recipe over write_copy_corpus(dir).
inline std::string copy_recipe(const std::string& dir, const std::string& residual = "post_ln") {
  return "data:\n  dir: " + dir +
         "\n  src_lang: src\n  tgt_lang: tgt\n  valid: valid\n  test: valid\n"
         "  tokenizer: pretokenized\n  max_tokens: 256\n  prefetch: 2\n"
         "model:\n  residual: " + residual +
         "\n  encoder_layers: 2\n  decoder_layers: 2\n  d_model: 32\n  ffn_dim: 64\n"
         "  heads: 4\n  dropout: 0.1\n  attention_dropout: 0\n  activation_dropout: 0\n"
         "  share_all_embeddings: true\n  max_source_positions: 64\n  max_target_positions: 64\n"
         "optim:\n  name: adam\n  lr: 0.003\n"
         "schedule:\n  name: inverse_sqrt\n  warmup_updates: 10\n"
         "train:\n  device: cpu\n  threads: 1\n  max_updates: 40\n  log_interval: 10\n  label_smoothing: 0.1\n"
         "eval:\n  beam: 3\n  max_len_a: 1.0\n  max_len_b: 5\n";
}

/// The "loss" of every per-update record of a metrics.jsonl, in order.
inline std::vector<double> logged_losses(const std::string& metrics) {
  std::vector<double> out;
  for (const auto& l : read_lines(metrics)) {
    auto p = l.find("\"loss\": ");
    if (p != std::string::npos && l.find("\"update\"") == 1) out.push_back(std::stod(l.substr(p + 8)));
  }
  return out;
}

inline std::string clinic_bin() { return std::string(kBinDir) + "/clinic"; }

}  // namespace clinic::test
