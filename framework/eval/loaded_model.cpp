#include "framework/eval/loaded_model.h"

#include <unistd.h>

#include <filesystem>

#include "framework/data/text.h"
#include "framework/train/checkpoint.h"

namespace fs = std::filesystem;

namespace clinic {

LoadedModel load_trained_model(const std::string& checkpoint,
                               torch::Device device) {
  LoadedModel m;
  CheckpointFile file(checkpoint);
  const CheckpointMeta& meta = file.meta();
  m.cfg = parse_recipe_text(meta.recipe_yaml, checkpoint + " (recipe)");
  // The vocabulary files travel inside the checkpoint; unpack them so the
  // SentencePiece helper can read them.
  std::string vocab_dir = (fs::temp_directory_path() /
                 ("clinic-vocab-" + std::to_string(::getpid()) + "-" +
                  hex64(hash_bytes(meta.src_vocab + meta.tgt_vocab))))
                    .string();
  fs::create_directories(vocab_dir);
  write_file_atomic(vocab_dir + "/" + meta.src_vocab_name, meta.src_vocab);
  if (!m.cfg.data.joint_vocab)
    write_file_atomic(vocab_dir + "/" + meta.tgt_vocab_name, meta.tgt_vocab);
  m.vocab = load_vocab(m.cfg.data, vocab_dir);
  // The helper re-reads the model file for batch encoding: keep the unpacked
  // copy as long as this LoadedModel (or a copy of it) lives.
  m.unpacked = std::shared_ptr<void>(nullptr, [vocab_dir](void*) {
    std::error_code ec;
    fs::remove_all(vocab_dir, ec);
  });
  VocabInfo info{m.vocab.src->size(), m.vocab.tgt->size(), m.vocab.joint};
  m.model = build_model(m.cfg.model, info);
  file.load_into(*m.model, nullptr);
  m.meta = meta;
  m.model->to(device);
  m.model->eval();
  return m;
}

}  // namespace clinic
