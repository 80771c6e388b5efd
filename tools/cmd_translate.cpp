// clinic translate | eval | bleu | export
#include <fmt/format.h>
#include <torch/script.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <tuple>

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
// Decoding flags are recipe overrides of eval.*: the same ranges as the
// recipe (beam 1..1024, lenpen >= 0, nbest <= beam), the same messages, and
// an absent flag keeps the checkpoint's recipe value. Strings, so that
// "--lenpen nan" or "--beam x" reach the recipe validator as written.
struct DecodeFlags {
  std::string checkpoint, torchscript, input, output;
  std::string beam, lenpen, nbest;
  int64_t threads = 0;
  bool strict = false;  // refuse sources longer than the model's positions
  bool cuda_graph = false;  // eval.cuda_graph
};
void add_decode_flags(CLI::App* c, DecodeFlags& f) {
  c->add_option("--checkpoint", f.checkpoint, "checkpoint file");
  c->add_option("--beam", f.beam, "beam size, 1-1024 (default eval.beam of the recipe)");
  c->add_option("--lenpen", f.lenpen, "length penalty, >= 0 (default eval.lenpen)");
  c->add_option("--nbest", f.nbest, "hypotheses per sentence, <= beam (default eval.nbest)");
  c->add_option("--threads", f.threads, "intra-op threads (0 = cores)")
      ->check(CLI::Range(0, 4096));
  c->add_flag("--strict", f.strict,
              "refuse an input line longer than model.max_source_positions instead of cutting it");
  c->add_flag("--cuda-graph", f.cuda_graph,
              "static KV cache, the decoder step captured as a CUDA graph (eval.cuda_graph)");
}
void apply_decode_flags(RunConfig& cfg, const DecodeFlags& f) {
  for (auto [flag, key, value] : {std::tuple{"--beam", "eval.beam", &f.beam},
                                  std::tuple{"--lenpen", "eval.lenpen", &f.lenpen},
                                  std::tuple{"--nbest", "eval.nbest", &f.nbest}})
    if (!value->empty())
      apply_override(cfg, std::string(key) + "=" + *value, std::string(flag) + " " + *value);
  if (f.cuda_graph) apply_override(cfg, "eval.cuda_graph=true", "--cuda-graph");
  validate(cfg);
}
std::vector<std::string> read_input(const std::string& path) {
  if (!path.empty()) return read_lines(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(std::cin, l);) lines.push_back(l);
  return lines;
}
// An output file never replaces an input of the same run or a checkpoint:
// `--output` equal to `--input` or to the model used to leave a 0-byte file.
void check_output(const std::string& flag, const std::string& out,
                  const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (out.empty()) return;
  for (const auto& [in_flag, in] : inputs)
    if (!in.empty() && same_file(out, in))
      throw ConfigError(fmt::format("{} {}: is the same file as {}; choose another output",
                                    flag, out, in_flag));
  if (is_clinic_checkpoint(out))
    throw ConfigError(fmt::format("{} {}: is a clinic checkpoint; refusing to overwrite it",
                                  flag, out));
}
// Sources longer than the encoder's positions (model.max_source_positions)
// are cut to fit, said once per run with the count; --strict refuses them
// before anything is translated. `cut`: (0-based line, tokens) pairs.
void report_cut(const std::vector<std::pair<size_t, size_t>>& cut, int64_t limit) {
  if (cut.empty()) return;
  std::cerr << fmt::format("clinic: warning: {} input line{} of {} tokens or more {} cut to the "
                           "first {} (model.max_source_positions = {}; the first is line {}, {} "
                           "tokens); --strict refuses such input\n",
                           cut.size(), cut.size() == 1 ? "" : "s", limit,
                           cut.size() == 1 ? "was" : "were", limit - 1, limit,
                           cut.front().first + 1, cut.front().second);
}
void refuse_long_lines(const std::string& input, Tokenizer& src, const std::vector<std::string>& lines,
                       int64_t limit) {
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t n = src.encode(lines[i]).size();
    if (static_cast<int64_t>(n) >= limit)
      throw DataError(fmt::format("{}:{}: {} tokens, over model.max_source_positions = {} "
                                  "(room for EOS: at most {}); --strict refuses it",
                                  input.empty() ? "<stdin>" : input, i + 1, n, limit, limit - 1));
  }
}
void translate_torchscript(const DecodeFlags& f, const std::vector<std::string>& lines) {
  const std::string& path = f.torchscript;
  torch::jit::ExtraFilesMap extra{{"recipe.yaml", ""}, {"vocab/names", ""}};
  torch::jit::Module ts;
  try {
    require_regular_file(path);
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
  apply_decode_flags(cfg, f);
  if (cfg.eval.nbest > 1)
    throw ConfigError("--nbest: the exported model's translate() returns one hypothesis; "
                      "use --checkpoint for n-best lists");
  if (f.cuda_graph)
    throw ConfigError("--cuda-graph: the exported model searches in TorchScript; use --checkpoint");
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("clinic-ts-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  std::shared_ptr<void> cleanup(nullptr, [dir](void*) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  });
  write_file_atomic(dir + "/" + names[0], files["vocab/src/" + names[0]]);
  if (!cfg.data.joint_vocab) write_file_atomic(dir + "/" + names[1], files["vocab/tgt/" + names[1]]);
  Vocabularies v = load_vocab(cfg.data, dir);
  TextOutput out(f.output);
  torch::NoGradGuard g;
  const int64_t max_src = cfg.model.max_source_positions;
  if (f.strict) refuse_long_lines(f.input, *v.src, lines, max_src);
  std::vector<std::pair<size_t, size_t>> cut;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto ids = v.src->encode(lines[i]);
    if (ids.empty()) {
      out.write("\n");
      continue;
    }
    if (static_cast<int64_t>(ids.size()) >= max_src) {
      cut.emplace_back(i, ids.size());
      ids.resize(max_src - 1);
    }
    auto src = torch::empty({1, static_cast<int64_t>(ids.size()) + 1}, torch::kLong);
    for (size_t j = 0; j < ids.size(); ++j) src[0][j] = ids[j];
    src[0][ids.size()] = kEos;
    int64_t max_len = std::min<int64_t>(
        static_cast<int64_t>(cfg.eval.max_len_a * (ids.size() + 1)) + cfg.eval.max_len_b,
        cfg.model.max_target_positions - 1);
    std::vector<int64_t> toks;
    try {
      auto res = ts.get_method("translate")({src, cfg.eval.beam, max_len}).toList();
      toks = c10::IValue(res.get(0)).toIntVector();
    } catch (const std::exception& e) {
      // The interpreter's message is a script traceback; its last line says what failed.
      std::string msg = e.what();
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      throw DataError(fmt::format("{}: translate() failed on input line {}: {}", path, i + 1,
                                  msg.substr(msg.rfind('\n') + 1)));
    }
    out.write(v.tgt->decode(toks) + "\n");
    out.flush();
  }
  out.commit();
  report_cut(cut, max_src);
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
      check_output("--output", tf.output,
                   {{"--input", tf.input}, {"--checkpoint", tf.checkpoint},
                    {"--torchscript", tf.torchscript}});
      if (!tf.torchscript.empty()) {
        translate_torchscript(tf, read_input(tf.input));
        return;
      }
      auto device = pick_device("auto");
      LoadedModel m = load_trained_model(tf.checkpoint, device);
      apply_decode_flags(m.cfg, tf);
      auto opts = SearchOptions::from(m.cfg.eval, m.cfg.model);
      auto lines = read_input(tf.input);
      const int64_t max_src = m.cfg.model.max_source_positions;
      if (tf.strict) refuse_long_lines(tf.input, *m.vocab.src, lines, max_src);
      std::vector<std::pair<size_t, size_t>> cut;
      TextOutput out(tf.output);
      // Stream in chunks so output appears while a long input is decoded.
      // n-best lists are Moses/Marian style: "ID ||| hypothesis ||| score",
      // ID counting input lines from 0.
      const size_t kChunk = 256;
      for (size_t i = 0; i < lines.size(); i += kChunk) {
        std::vector<std::string> part(lines.begin() + i,
                                      lines.begin() + std::min(lines.size(), i + kChunk));
        std::vector<std::pair<size_t, size_t>> part_cut;
        auto hyps = translate_lines(*m.model, *m.vocab.src, *m.vocab.tgt, part, opts,
                                    m.cfg.eval.max_tokens, device, &part_cut);
        for (auto [k, n] : part_cut) cut.emplace_back(i + k, n);
        for (size_t k = 0; k < hyps.size(); ++k) {
          if (opts.nbest == 1) {
            out.write((hyps[k].empty() ? std::string() : hyps[k].front().text) + "\n");
            continue;
          }
          for (const auto& h : hyps[k])
            out.write(fmt::format("{} ||| {} ||| {:.6f}\n", i + k, h.text, h.score));
        }
        out.flush();
      }
      out.commit();
      report_cut(cut, max_src);
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
      check_output("--output", hyp_out,
                   {{"--src", src}, {"--ref", ref}, {"--checkpoint", ef.checkpoint}});
      auto device = pick_device("auto");
      LoadedModel m = load_trained_model(ef.checkpoint, device);
      apply_decode_flags(m.cfg, ef);
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
      auto refs = read_references(m.cfg.data, r);  // "@@ " removed as from hypotheses
      if (lines.size() != refs.size())
        throw DataError(fmt::format("{} has {} lines but {} has {}", s, lines.size(), r,
                                    refs.size()));
      auto opts = SearchOptions::from(m.cfg.eval, m.cfg.model);
      opts.nbest = 1;
      if (ef.strict) refuse_long_lines(s, *m.vocab.src, lines, opts.max_source_positions);
      std::vector<std::pair<size_t, size_t>> cut;
      double t0 = now_seconds();
      auto hyps = translate_lines(*m.model, *m.vocab.src, *m.vocab.tgt, lines, opts,
                                  m.cfg.eval.max_tokens, device, &cut);
      report_cut(cut, opts.max_source_positions);
      double secs = now_seconds() - t0;
      std::vector<std::string> best;
      for (const auto& h : hyps) best.push_back(h.empty() ? "" : h.front().text);
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
  bl->add_option("--hyp", hyp_file, "hypotheses, one per line (- for stdin)")->required();
  bl->add_option("--ref", ref_files, "reference file(s)")->required();
  bl->add_option("--tokenize", tokenize, "13a, intl or none")
      ->check(CLI::IsMember({"13a", "intl", "none"}));
  bl->add_flag("--lowercase", lowercase, "lowercase before scoring");
  bl->callback([&action] {
    action = [] {
      auto hyps = hyp_file == "-" ? read_input("") : read_lines(hyp_file);
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
      check_output("--out", out_file, {{"--checkpoint", ckpt}});
      LoadedModel m = load_trained_model(ckpt, torch::kCPU);
      auto module = m.model->to_torchscript();
      // The recipe and vocabulary travel as extra files of the archive.
      const CheckpointMeta& meta = m.meta;
      torch::jit::ExtraFilesMap extra{{"recipe.yaml", meta.recipe_yaml},
                                      {"vocab/src/" + meta.src_vocab_name, meta.src_vocab},
                                      {"vocab/tgt/" + meta.tgt_vocab_name, meta.tgt_vocab},
                                      {"vocab/names", meta.src_vocab_name + "\n" + meta.tgt_vocab_name}};
      // Serialised in memory, then written atomically: a full disk leaves
      // no partial file and keeps an existing one (module.save(path) wrote in
      // place and aborted with a backtrace).
      std::ostringstream bytes;
      module.save(bytes, extra);
      write_file_atomic(out_file, bytes.str());
      std::cout << "wrote " << out_file << "\n";
    };
  });
}

}  // namespace clinic::cli
