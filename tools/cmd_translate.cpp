// clinic translate | eval | bleu | export
#include <fmt/format.h>
#include <torch/script.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "framework/data/text.h"
#include "framework/eval/bleu.h"
#include "framework/eval/loaded_model.h"
#include "framework/eval/search.h"
#include "framework/errors.h"
#include "framework/train/checkpoint.h"
#include "framework/train/trainer.h"
#include "tools/command.h"

namespace clinic::cli {

namespace {
struct DecodeFlags {
  std::string checkpoint, torchscript, input, output;
  int64_t beam = -1, nbest = -1, threads = 0;
  double lenpen = -1;
};
void add_decode_flags(CLI::App* c, DecodeFlags& f) {
  c->add_option("--checkpoint", f.checkpoint, "checkpoint file");
  c->add_option("--beam", f.beam, "beam size (default eval.beam of the recipe)");
  c->add_option("--lenpen", f.lenpen, "length penalty (default eval.lenpen)");
  c->add_option("--nbest", f.nbest, "hypotheses per sentence (default 1)");
  c->add_option("--threads", f.threads, "intra-op threads (0 = cores)");
}
SearchOptions search_options(const LoadedModel& m, const DecodeFlags& f) {
  EvalConfig e = m.cfg.eval;
  if (f.beam > 0) e.beam = f.beam;
  if (f.lenpen >= 0) e.lenpen = f.lenpen;
  if (f.nbest > 0) e.nbest = f.nbest;
  return SearchOptions::from(e, m.cfg.model.max_target_positions);
}
std::vector<std::string> read_input(const std::string& path) {
  if (!path.empty()) return read_lines(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(std::cin, l);) lines.push_back(l);
  return lines;
}
void translate_torchscript(const std::string& path, int64_t beam,
                           const std::vector<std::string>& lines, const std::string& output) {
  torch::jit::ExtraFilesMap extra{{"recipe.yaml", ""}, {"vocab/names", ""}};
  torch::jit::Module ts;
  try {
    ts = torch::jit::load(path, torch::kCPU, extra);
  } catch (const c10::Error&) {
    throw DataError(path + ": cannot load TorchScript model");
  }
  auto names = split_ws(extra["vocab/names"]);
  if (extra["recipe.yaml"].empty() || names.size() != 2)
    throw DataError(path + ": not exported by clinic export (no recipe/vocabulary inside)");
  torch::jit::ExtraFilesMap files{{"vocab/src/" + names[0], ""}, {"vocab/tgt/" + names[1], ""}};
  ts = torch::jit::load(path, torch::kCPU, files);
  RunConfig cfg = parse_recipe_text(extra["recipe.yaml"], path + " (recipe)");
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("clinic-ts-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  write_file_atomic(dir + "/" + names[0], files["vocab/src/" + names[0]]);
  if (!cfg.data.joint_vocab) write_file_atomic(dir + "/" + names[1], files["vocab/tgt/" + names[1]]);
  Vocabularies v = load_vocab(cfg.data, dir);
  int64_t k = beam > 0 ? beam : cfg.eval.beam;
  std::ofstream file;
  if (!output.empty()) file.open(output);
  std::ostream& out = output.empty() ? std::cout : file;
  torch::NoGradGuard g;
  for (const auto& line : lines) {
    auto ids = v.src->encode(line);
    if (ids.empty()) {
      out << "\n";
      continue;
    }
    auto src = torch::empty({1, static_cast<int64_t>(ids.size()) + 1}, torch::kLong);
    for (size_t j = 0; j < ids.size(); ++j) src[0][j] = ids[j];
    src[0][ids.size()] = kEos;
    int64_t max_len = std::min<int64_t>(
        static_cast<int64_t>(cfg.eval.max_len_a * (ids.size() + 1)) + cfg.eval.max_len_b,
        cfg.model.max_target_positions - 1);
    auto res = ts.get_method("translate")({src, k, max_len}).toList();
    auto toks = c10::IValue(res.get(0)).toIntVector();
    out << v.tgt->decode(std::vector<int64_t>(toks.begin(), toks.end())) << "\n";
    out.flush();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

void add_translate_commands(CLI::App& app, Action& action) {
  static DecodeFlags tf;
  auto* tr = app.add_subcommand("translate", "translate lines with a checkpoint");
  add_decode_flags(tr, tf);
  tr->add_option("--torchscript", tf.torchscript, "exported model (clinic export) instead of --checkpoint");
  tr->add_option("--input", tf.input, "source file (default stdin)");
  tr->add_option("--output", tf.output, "output file (default stdout)");
  tr->callback([&action] {
    action = [] {
      configure_threads(tf.threads);
      if (tf.checkpoint.empty() == tf.torchscript.empty())
        throw ConfigError("translate: give exactly one of --checkpoint or --torchscript");
      if (!tf.torchscript.empty()) {
        translate_torchscript(tf.torchscript, tf.beam, read_input(tf.input), tf.output);
        return;
      }
      auto device = pick_device("auto");
      LoadedModel m = load_trained_model(tf.checkpoint, device);
      auto opts = search_options(m, tf);
      std::ofstream file;
      if (!tf.output.empty()) file.open(tf.output);
      std::ostream& out = tf.output.empty() ? std::cout : file;
      // Stream in chunks so output appears while a long input is decoded.
      auto lines = read_input(tf.input);
      const size_t kChunk = 256;
      for (size_t i = 0; i < lines.size(); i += kChunk) {
        std::vector<std::string> part(lines.begin() + i,
                                      lines.begin() + std::min(lines.size(), i + kChunk));
        auto hyps = translate_lines(*m.model, *m.vocab.src, *m.vocab.tgt, part, opts,
                                    m.cfg.eval.max_tokens, device);
        for (const auto& h : hyps) {
          if (opts.nbest == 1) out << (h.empty() ? "" : h.front()) << "\n";
          else
            for (const auto& s : h) out << s << "\n";
        }
        out.flush();
      }
    };
  });

  static DecodeFlags ef;
  static std::string split, src, ref, hyp_out;
  auto* ev = app.add_subcommand("eval", "translate a split and print BLEU");
  add_decode_flags(ev, ef);
  ev->add_option("--split", split, "split of the recipe's data.dir (valid, test, ...)");
  ev->add_option("--src", src, "source file (instead of --split)");
  ev->add_option("--ref", ref, "reference file (instead of --split)");
  ev->add_option("--output", hyp_out, "where to write hypotheses (default CHECKPOINT.<split>.hyp)");
  ev->callback([&action] {
    action = [] {
      configure_threads(ef.threads);
      if (ef.checkpoint.empty()) throw ConfigError("eval: --checkpoint is required");
      auto device = pick_device("auto");
      LoadedModel m = load_trained_model(ef.checkpoint, device);
      std::string s = src, r = ref;
      if (s.empty() != r.empty()) throw ConfigError("eval: give both --src and --ref, or --split");
      if (s.empty()) {
        if (split.empty()) throw ConfigError("eval: give --split or --src/--ref");
        std::string name = split == "test" ? m.cfg.data.test
                           : split == "valid" ? m.cfg.data.valid : split;
        s = split_path(m.cfg.data, name, m.cfg.data.src_lang);
        r = split_path(m.cfg.data, name, m.cfg.data.tgt_lang);
      }
      auto lines = read_lines(s);
      auto refs = read_lines(r);
      if (lines.size() != refs.size())
        throw DataError(fmt::format("{} has {} lines but {} has {}", s, lines.size(), r,
                                    refs.size()));
      auto opts = search_options(m, ef);
      opts.nbest = 1;
      double t0 = now_seconds();
      auto hyps = translate_lines(*m.model, *m.vocab.src, *m.vocab.tgt, lines, opts,
                                  m.cfg.eval.max_tokens, device);
      double secs = now_seconds() - t0;
      std::vector<std::string> best;
      for (const auto& h : hyps) best.push_back(h.empty() ? "" : h.front());
      std::string out = hyp_out.empty()
                            ? ef.checkpoint + "." + (split.empty() ? "custom" : split) + ".hyp"
                            : hyp_out;
      std::string text;
      for (const auto& b : best) text += b + "\n";
      write_file_atomic(out, text);
      auto bleu = corpus_bleu(best, {refs}, m.cfg.eval.bleu_tokenize, m.cfg.eval.lowercase);
      std::cout << bleu.format() << "\n"
                << "signature: " << bleu.signature << "\n"
                << fmt::format("{} sentences in {:.1f}s (beam {}), hypotheses in {}\n",
                               lines.size(), secs, opts.beam, out);
    };
  });

  static std::string hyp_file, tokenize = "13a";
  static std::vector<std::string> ref_files;
  static bool lowercase = false;
  auto* bl = app.add_subcommand("bleu", "corpus BLEU of a hypothesis file (sacreBLEU 2.x compatible)");
  bl->add_option("--hyp", hyp_file, "hypotheses, one per line")->required();
  bl->add_option("--ref", ref_files, "reference file(s)")->required();
  bl->add_option("--tokenize", tokenize, "13a, intl or none")
      ->check(CLI::IsMember({"13a", "intl", "none"}));
  bl->add_flag("--lowercase", lowercase, "lowercase before scoring");
  bl->callback([&action] {
    action = [] {
      auto hyps = read_lines(hyp_file);
      std::vector<std::vector<std::string>> refs;
      for (const auto& f : ref_files) refs.push_back(read_lines(f));
      for (size_t k = 0; k < refs.size(); ++k)
        if (refs[k].size() != hyps.size())
          throw DataError(fmt::format("{} has {} lines but {} has {}", hyp_file,
                                      hyps.size(), ref_files[k], refs[k].size()));
      auto b = corpus_bleu(hyps, refs, tokenize, lowercase);
      std::cout << b.format() << "\nsignature: " << b.signature << "\n";
    };
  });

  static std::string ckpt, out_file;
  auto* ex = app.add_subcommand("export", "export a checkpoint as TorchScript");
  ex->add_option("--checkpoint", ckpt, "checkpoint file")->required();
  ex->add_option("--out", out_file, "output .pt file")->required();
  ex->callback([&action] {
    action = [] {
      LoadedModel m = load_trained_model(ckpt, torch::kCPU);
      auto module = m.model->to_torchscript();
      // The recipe and vocabulary travel as extra files of the archive.
      const CheckpointMeta& meta = m.meta;
      torch::jit::ExtraFilesMap extra{{"recipe.yaml", meta.recipe_yaml},
                                      {"vocab/src/" + meta.src_vocab_name, meta.src_vocab},
                                      {"vocab/tgt/" + meta.tgt_vocab_name, meta.tgt_vocab},
                                      {"vocab/names", meta.src_vocab_name + "\n" + meta.tgt_vocab_name}};
      module.save(out_file, extra);
      std::cout << "wrote " << out_file << "\n";
    };
  });
}

}  // namespace clinic::cli
