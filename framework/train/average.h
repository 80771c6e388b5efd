#pragma once
// fairseq scripts/average_checkpoints.py: the parameter-wise mean of
// several checkpoints, written as a new (optimizer-free) checkpoint.
#include <string>
#include <vector>

namespace clinic {

/// checkpoint_u*.pt files of `run_dir`, newest `last` (by update); or, with
/// `epochs` = "A-B", checkpoint_epochN.pt for A <= N <= B (the newest
/// `last` of them when last > 0).
std::vector<std::string> select_checkpoints(const std::string& run_dir,
                                            int64_t last,
                                            const std::string& epochs);
/// Average model tensors of `files` (same model) into `out`; metadata,
/// recipe and vocabulary come from the newest file.
void average_checkpoints(const std::vector<std::string>& files,
                         const std::string& out);

}  // namespace clinic
