// clinic-spm: the only program that links SentencePiece. clinic runs it as a
// child process (LibTorch + libsentencepiece in one process crash before
// main on Debian: two protobuf copies).
//   clinic-spm train ARGS...            SentencePieceTrainer flags
//   clinic-spm encode MODEL IN OUT      one line of ids per input line
//   clinic-spm serve MODEL              "E text" -> ids, "D ids" -> text
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int fail(const std::string& msg) {
  std::cerr << msg << "\n";
  return 1;
}

std::string ids_text(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i)
    s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

int train(int argc, char** argv) {
  std::string flags;
  for (int i = 2; i < argc; ++i) flags += std::string(i > 2 ? " " : "") + argv[i];
  auto status = sentencepiece::SentencePieceTrainer::Train(flags);
  return status.ok() ? 0 : fail(status.ToString());
}

int encode(const std::string& model, const std::string& in_path,
           const std::string& out_path) {
  sentencepiece::SentencePieceProcessor sp;
  if (auto s = sp.Load(model); !s.ok()) return fail(s.ToString());
  std::ifstream in(in_path);
  if (!in) return fail(in_path + ": cannot open");
  std::ofstream out(out_path);
  std::string line;
  std::vector<int> ids;
  while (std::getline(in, line)) {
    sp.Encode(line, &ids);
    out << ids_text(ids) << "\n";
  }
  return out ? 0 : fail(out_path + ": write failed");
}

int serve(const std::string& model) {
  sentencepiece::SentencePieceProcessor sp;
  if (auto s = sp.Load(model); !s.ok()) return fail(s.ToString());
  std::cout << "READY " << sp.GetPieceSize() << std::endl;
  std::string line;
  std::vector<int> ids;
  while (std::getline(std::cin, line)) {
    if (line.size() >= 2 && line[0] == 'E') {
      sp.Encode(line.substr(2), &ids);
      std::cout << ids_text(ids) << "\n";
    } else if (line.size() >= 1 && line[0] == 'D') {
      std::istringstream in(line.size() > 2 ? line.substr(2) : "");
      ids.clear();
      for (int id; in >> id;) ids.push_back(id);
      std::string text;
      sp.Decode(ids, &text);
      std::cout << text << "\n";
    } else {
      std::cout << "\n";
    }
    std::cout.flush();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "train") return train(argc, argv);
  if (cmd == "encode" && argc == 5) return encode(argv[2], argv[3], argv[4]);
  if (cmd == "serve" && argc == 3) return serve(argv[2]);
  return fail("usage: clinic-spm train FLAGS... | encode MODEL IN OUT | serve MODEL");
}
