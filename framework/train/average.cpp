#include "framework/train/average.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "framework/data/text.h"
#include "framework/errors.h"
#include "framework/model.h"
#include "framework/train/checkpoint.h"

namespace fs = std::filesystem;

namespace clinic {

std::vector<std::string> select_checkpoints(const std::string& run_dir,
                                            int64_t last,
                                            const std::string& epochs) {
  if (!fs::is_directory(run_dir))
    throw ConfigError(run_dir + ": run directory not found");
  int64_t lo = 0, hi = -1;
  if (!epochs.empty()) {
    std::smatch m;
    if (!std::regex_match(epochs, m, std::regex("([0-9]+)-([0-9]+)")))
      throw ConfigError("--epochs " + epochs + ": expected A-B, e.g. 81-90");
    lo = std::stoll(m[1]);
    hi = std::stoll(m[2]);
  } else if (last <= 0) {
    throw ConfigError("average: give --last N or --epochs A-B");
  }
  auto scan = [&](const char* pattern) {
    std::regex re(pattern);
    std::vector<std::pair<int64_t, std::string>> found;
    for (const auto& e : fs::directory_iterator(run_dir)) {
      std::smatch m;
      std::string name = e.path().filename().string();
      if (!std::regex_match(name, m, re)) continue;
      int64_t n = std::stoll(m[1]);
      if (!epochs.empty() && (n < lo || n > hi)) continue;
      found.emplace_back(n, e.path().string());
    }
    return found;
  };
  const char* kEpoch = "checkpoint_epoch([0-9]+)\\.pt";
  auto found = scan(epochs.empty() ? "checkpoint_u([0-9]+)\\.pt" : kEpoch);
  if (found.empty() && epochs.empty()) found = scan(kEpoch);
  std::sort(found.begin(), found.end());
  if (last > 0 && static_cast<int64_t>(found.size()) > last)
    found.erase(found.begin(), found.end() - last);
  if (found.empty())
    throw ConfigError(fmt::format("{}: no matching checkpoints to average", run_dir));
  if (last > 0 && static_cast<int64_t>(found.size()) < last)
    throw ConfigError(fmt::format("{}: asked for {} checkpoints, found {}",
                                  run_dir, last, found.size()));
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

namespace {
// A model stand-in that holds named tensors, so the averaged tensors can go
// through the same checkpoint writer as a trained model.
class TensorBag : public Seq2SeqModel {
 public:
  EncoderOut encode(const torch::Tensor&) override { TORCH_CHECK(false, "TensorBag"); }
  torch::Tensor decode(const torch::Tensor&, const EncoderOut&, DecoderCache*) override {
    TORCH_CHECK(false, "TensorBag");
  }
  void set_observer(SublayerObserver*) override {}
  torch::jit::Module to_torchscript() const override { TORCH_CHECK(false, "TensorBag"); }
  void add(const std::string& name, const torch::Tensor& t, bool buffer) {
    // Module names may not contain '.', so nest modules along the path.
    auto dot = name.rfind('.');
    torch::nn::Module* owner = this;
    if (dot != std::string::npos) owner = &child(name.substr(0, dot));
    std::string leaf = name.substr(dot == std::string::npos ? 0 : dot + 1);
    if (buffer)
      owner->register_buffer(leaf, t);
    else
      owner->register_parameter(leaf, t);
  }

 private:
  torch::nn::Module& child(const std::string& path) {
    torch::nn::Module* m = this;
    size_t start = 0;
    while (start <= path.size()) {
      size_t end = path.find('.', start);
      std::string part = path.substr(start, end - start);
      auto kids = m->named_children();
      if (kids.contains(part)) {
        m = kids[part].get();
      } else {
        m = m->register_module(part, std::make_shared<torch::nn::Module>()).get();
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return *m;
  }
};
}  // namespace

void average_checkpoints(const std::vector<std::string>& files,
                         const std::string& out) {
  static const std::regex training_name(
      "checkpoint_(last|best|u[0-9]+|epoch[0-9]+)\\.pt");
  std::string name = fs::path(out).filename().string();
  bool has_optimizer = false;
  if (is_clinic_checkpoint(out)) {
    try {
      has_optimizer = read_checkpoint_meta(out).has_optimizer;
    } catch (const CheckpointError&) {
      // A damaged file holds nothing to keep.
    }
  }
  if (std::regex_match(name, training_name) || has_optimizer)
    throw ConfigError(fmt::format(
        "--out {}: is a training checkpoint name or holds optimizer state; an averaged "
        "checkpoint must not replace it (training would restart from it); choose another "
        "name, e.g. checkpoint_avg.pt",
        out));
  std::map<std::string, torch::Tensor> sum;
  CheckpointMeta meta;
  for (const auto& f : files) {
    CheckpointFile file(f);
    meta = file.meta();
    for (auto& [key, t] : file.model_tensors()) {
      auto it = sum.find(key);
      if (it == sum.end())
        sum[key] = t.to(torch::kDouble);
      else if (!it->second.sizes().equals(t.sizes()))
        throw CheckpointError(fmt::format("{}: '{}' has shape {}, other checkpoints {}",
                                          f, key, c10::str(t.sizes()),
                                          c10::str(it->second.sizes())));
      else
        it->second += t.to(torch::kDouble);
    }
  }
  TensorBag bag;
  for (auto& [k, v] : sum)
    bag.add(k, (v / static_cast<double>(files.size())).to(torch::kFloat), false);
  meta.state = TrainState{};
  write_checkpoint(out, bag, nullptr, meta);
}

}  // namespace clinic
