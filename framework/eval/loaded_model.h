#pragma once
// A trained model rebuilt from one checkpoint file: recipe, vocabulary and
// weights all come from the checkpoint itself.
#include <memory>
#include <string>

#include "framework/config.h"
#include "framework/data/vocab.h"
#include "framework/model.h"
#include "framework/train/checkpoint.h"

namespace clinic {

struct LoadedModel {
  /// Removes the vocabulary files unpacked from the checkpoint; declared
  /// first so it is destroyed after the tokenizers that read them.
  std::shared_ptr<void> unpacked;
  RunConfig cfg;
  Vocabularies vocab;
  std::shared_ptr<Seq2SeqModel> model;
  CheckpointMeta meta;  // recipe text and vocabulary bytes, for export
};

/// Load `checkpoint` onto `device` in eval mode.
LoadedModel load_trained_model(const std::string& checkpoint,
                               torch::Device device);

}  // namespace clinic
