#pragma once
// Checkpoints: one self-contained file with the model, optimizer, loss
// scaler, training state, RNG state, the resolved recipe and the vocabulary
// files. Layout: 32-byte header (magic, format version, payload size,
// FNV-1a checksum) + a torch::serialize archive. Written atomically.
#include <torch/torch.h>

#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/amp/grad_scaler.h"
#include "framework/data/batcher.h"
#include "framework/model.h"

namespace clinic {

constexpr uint32_t kCheckpointVersion = 1;

/// Everything besides tensors of model/optimizer that a resume needs.
struct TrainState {
  int64_t update = 0;
  DataPosition position;
  double best_valid = std::numeric_limits<double>::infinity();
  double best_bleu = -1;
  int64_t stalled = 0;       // validations without improvement
  int64_t skipped = 0;       // non-finite updates skipped so far
  int64_t tokens = 0;        // target tokens trained on
  double wall_s = 0;         // training seconds before this process
};

/// Every generator a run draws from: dropout masks come from the CPU one on
/// CPU and from the device's on CUDA (a resume restores both, so a run
/// interrupted on a GPU continues with the masks it would have drawn).
struct RngState {
  torch::Tensor cpu;
  std::vector<torch::Tensor> cuda;  // one per visible CUDA device, empty without CUDA
};

struct CheckpointMeta {
  std::string recipe_yaml;
  TrainState state;
  LossScalerState scaler;
  std::string src_vocab_name, tgt_vocab_name;  // file names, e.g. spm.model
  std::string src_vocab, tgt_vocab;            // file bytes
  RngState rng_state;
  /// False for averaged checkpoints (`clinic average`): weights only, which
  /// translate/export use but training cannot resume from.
  bool has_optimizer = true;
  /// Named tensors of components around the trainer (the instruments' probe
  /// batch and spike window), so a resume continues them exactly.
  std::map<std::string, torch::Tensor> extras;
};

/// One checkpoint file, read and checksum-verified once: callers that need
/// the recipe before they can build the model (resume, translate, export)
/// read the metadata, build, then load from the same bytes.
class CheckpointFile {
 public:
  /// Throws CheckpointError("... corrupt or truncated ...") naming the file.
  explicit CheckpointFile(const std::string& path);
  const CheckpointMeta& meta() const { return meta_; }
  /// Load tensors into `model` (and `optimizer` when given). Names and
  /// shapes must match: a different model or vocabulary is a CheckpointError.
  void load_into(Seq2SeqModel& model, torch::optim::Optimizer* optimizer);
  /// The stored model tensors by name (averaging needs no model instance).
  std::vector<std::pair<std::string, torch::Tensor>> model_tensors();

 private:
  std::string path_;
  torch::serialize::InputArchive archive_;
  CheckpointMeta meta_;
};

/// Writes `path` atomically (temp file, fsync, rename), streaming: model
/// parameters and buffers by name; optimizer may be null (averaged checkpoints).
/// On failure (disk full, unwritable directory) throws DataError and leaves an
/// existing `path` as it was.
void write_checkpoint(const std::string& path, Seq2SeqModel& model,
                      torch::optim::Optimizer* optimizer, const CheckpointMeta& meta);
/// Shorthands for a CheckpointFile used once.
CheckpointMeta read_checkpoint_meta(const std::string& path);
CheckpointMeta load_checkpoint(const std::string& path, Seq2SeqModel& model,
                               torch::optim::Optimizer* optimizer);

/// True when `path` is a regular file that starts with the checkpoint magic
/// (outputs refuse to overwrite one).
bool is_clinic_checkpoint(const std::string& path);

/// CUDA devices this process sees (0 without CUDA).
size_t cuda_devices();
/// The CPU generator's state and, when CUDA is available, each device's.
RngState capture_rng_state();
/// Restores the CPU state and the CUDA states the machine has devices for;
/// returns how many CUDA states were restored.
size_t restore_rng_state(const RngState& state);

}  // namespace clinic
