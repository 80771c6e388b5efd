// clinic bpe --codes CODES [--input F] [--output F]: apply learned BPE merges
// to tokenized text (subword-nmt apply_bpe.py's output, byte for byte), so a
// user with fairseq's tokenized IWSLT'14 (prepare-iwslt14.sh's tmp/) and its
// `code` file needs no Python to get the BPE'd splits the recipes train on.
#include <fmt/format.h>

#include <iostream>

#include "framework/data/bpe.h"
#include "framework/data/text.h"
#include "framework/errors.h"
#include "tools/command.h"

namespace clinic::cli {

void add_bpe_command(CLI::App& app, Action& action) {
  static std::string codes, input, output;
  auto* c = app.add_subcommand("bpe", "apply BPE merges (subword-nmt apply_bpe.py) to tokenized text");
  c->add_option("--codes", codes, "BPE codes file (subword-nmt learn_bpe.py output)")->required();
  c->add_option("--input", input, "tokenized text (default stdin)");
  c->add_option("--output", output, "output file (default stdout; written atomically)");
  c->callback([&action] {
    action = [] {
      for (const auto& [flag, in] : {std::pair<const char*, std::string>{"--codes", codes},
                                     {"--input", input}})
        if (!output.empty() && !in.empty() && same_file(output, in))
          throw ConfigError(fmt::format("--output {}: is the same file as {}; choose another output",
                                        output, flag));
      BpeCodes bpe(codes);
      std::vector<std::string> lines;
      if (input.empty()) {
        for (std::string l; std::getline(std::cin, l);) lines.push_back(l);
      } else {
        lines = read_lines(input);
      }
      TextOutput out(output);
      for (const auto& l : lines) out.write(bpe.apply_line(l) + "\n");
      out.commit();
    };
  });
}

}  // namespace clinic::cli
