#pragma once
// fairseq scripts/average_checkpoints.py: the parameter-wise mean of
// several checkpoints, written as a new (optimizer-free) checkpoint.
#include <string>
#include <vector>

namespace clinic {

/// The newest `last` checkpoint_u*.pt files of `run_dir` (by update); when
/// the run kept no update checkpoints, its newest `last` checkpoint_epochN.pt
/// (fairseq's --num-epoch-checkpoints; the IWSLT'14 recipes keep epochs).
/// With `epochs` = "A-B": checkpoint_epochN.pt for A <= N <= B (the newest
/// `last` of them when last > 0).
std::vector<std::string> select_checkpoints(const std::string& run_dir,
                                            int64_t last,
                                            const std::string& epochs);
/// Average model tensors of `files` (same model) into `out`; metadata,
/// recipe and vocabulary come from the newest file. The result has no
/// optimizer state, which training refuses to resume from. `out` may not be a
/// training checkpoint (checkpoint_last/best/u*/epoch* or any checkpoint with
/// optimizer state): replacing one lost the run's optimizer, schedule and
/// data position.
void average_checkpoints(const std::vector<std::string>& files,
                         const std::string& out);

}  // namespace clinic
