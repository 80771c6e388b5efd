// TorchScript export round trip: the exported module, loaded back in C++ and
// in Python (Debian's python3-torch), equals the eager model.
#include <torch/script.h>

#include <sstream>

#include "framework/eval/search.h"
#include "models/transformer.h"
#include "test/support.h"

namespace clinic {
namespace {

const std::vector<std::vector<int64_t>> kSrc = {{5, 9, 7, 12, 4, 3}, {13, 6, 8, 3, 0, 0}};
const std::vector<std::vector<int64_t>> kTgt = {{2, 5, 9, 7}, {2, 13, 6, 0}};

torch::Tensor to_tensor(const std::vector<std::vector<int64_t>>& rows) {
  auto t = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())},
                        torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t;
}

// "enc+dec" names per-stack variants (model.encoder_residual / decoder_residual).
std::shared_ptr<TransformerImpl> exported_model(const std::string& residual, bool scalar) {
  auto plus = residual.find('+');
  auto cfg = test::tiny_model(residual.substr(0, plus), 2, 16);
  if (plus != std::string::npos) {
    cfg.encoder_residual = residual.substr(0, plus);
    cfg.decoder_residual = residual.substr(plus + 1);
  }
  if (scalar) cfg.omega_shape = "scalar";
  torch::manual_seed(5);
  auto m = std::make_shared<TransformerImpl>(cfg, VocabInfo{16, 16, true});
  Batch b;
  b.src = to_tensor(kSrc);
  b.tgt_in = to_tensor(kTgt);
  m->initialize_from_batch(b);
  torch::NoGradGuard g;
  for (auto& s : m->sublayers()) {
    if (s->residual->alpha.defined()) s->residual->alpha.fill_(0.5);
    if (residual.find("admin") != std::string::npos && !scalar && s->residual->omega.defined())
      s->residual->omega.uniform_(0.8, 1.6);  // trained-like
  }
  m->eval();
  return m;
}

struct Case {
  std::string residual;
  bool scalar;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.residual << (c.scalar ? " (scalar omega)" : "");
}

class Export : public ::testing::TestWithParam<Case> {};

TEST_P(Export, CppRoundTripEqualsEager) {
  auto m = exported_model(GetParam().residual, GetParam().scalar);
  test::TempDir d;
  m->to_torchscript().save(d.file("m.pt"));
  auto ts = torch::jit::load(d.file("m.pt"));
  torch::NoGradGuard g;
  auto src = to_tensor(kSrc), tgt = to_tensor(kTgt);
  auto eager = m->forward(src, tgt);
  auto got = ts.forward({src, tgt}).toTensor();
  EXPECT_LT((eager - got).abs().max().item<double>(), 1e-5);
  for (int64_t beam : {1, 4}) {
    SearchOptions o;
    o.beam = beam;
    o.max_len_b = 8;
    o.max_positions = 64;
    auto hyps = beam_search(*m, src, o);
    auto out = ts.get_method("translate")({src, beam, int64_t{8}}).toList();
    ASSERT_EQ(out.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      auto row = c10::IValue(out.get(i)).toIntVector();
      EXPECT_EQ(row, hyps[i][0].tokens) << "beam " << beam << " row " << i;
    }
  }
}

TEST_P(Export, PythonLoadsAndMatches) {
  std::string out;
  if (test::run_shell("/usr/bin/python3 -c 'import torch'", &out) != 0)
    GTEST_SKIP() << "python3-torch not installed";
  auto m = exported_model(GetParam().residual, GetParam().scalar);
  test::TempDir d;
  m->to_torchscript().save(d.file("m.pt"));
  std::string py =
      "import torch\n"
      "m = torch.jit.load('" + d.file("m.pt") + "')\n"
      "src = torch.tensor([[5, 9, 7, 12, 4, 3], [13, 6, 8, 3, 0, 0]])\n"
      "tgt = torch.tensor([[2, 5, 9, 7], [2, 13, 6, 0]])\n"
      "with torch.no_grad():\n"
      "    print(' '.join(repr(float(v)) for v in m(src, tgt).flatten()))\n"
      "    print(m.translate(src, 4, 8))\n";
  test::write_text(d.file("check.py"), py);
  ASSERT_EQ(test::run_shell("/usr/bin/python3 " + d.file("check.py"), &out), 0) << out;
  std::istringstream in(out);
  std::string logits_line, tokens_line;
  std::getline(in, logits_line);
  std::getline(in, tokens_line);
  std::vector<double> vals;
  std::istringstream ls(logits_line);
  for (double v; ls >> v;) vals.push_back(v);
  torch::NoGradGuard g;
  auto eager = m->forward(to_tensor(kSrc), to_tensor(kTgt)).flatten();
  ASSERT_EQ(static_cast<int64_t>(vals.size()), eager.numel());
  auto py_logits = torch::tensor(vals, torch::kDouble);
  EXPECT_LT((py_logits - eager.to(torch::kDouble)).abs().max().item<double>(), 1e-5);
  SearchOptions o;
  o.beam = 4;
  o.max_len_b = 8;
  o.max_positions = 64;
  auto hyps = beam_search(*m, to_tensor(kSrc), o);
  std::string want = "[";
  for (size_t i = 0; i < hyps.size(); ++i) {
    want += i ? ", [" : "[";
    for (size_t j = 0; j < hyps[i][0].tokens.size(); ++j)
      want += (j ? ", " : "") + std::to_string(hyps[i][0].tokens[j]);
    want += "]";
  }
  EXPECT_EQ(tokens_line, want + "]");
}

INSTANTIATE_TEST_SUITE_P(Variants, Export,
                         ::testing::Values(Case{"post_ln", false}, Case{"pre_ln", false},
                                           Case{"admin", false}, Case{"admin", true},
                                           Case{"admin_closed_form", true},
                                           Case{"deepnorm", false}, Case{"rezero", false},
                                           Case{"post_ln+pre_ln", false},
                                           Case{"pre_ln+admin", false}),
                         [](const auto& info) {
                           std::string name = info.param.residual;
                           auto plus = name.find('+');
                           if (plus != std::string::npos)
                             name = "enc_" + name.substr(0, plus) + "_dec_" + name.substr(plus + 1);
                           return name + (info.param.scalar ? "_scalar" : "");
                         });

}  // namespace
}  // namespace clinic
