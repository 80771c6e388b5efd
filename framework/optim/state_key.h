#pragma once
// The optimizer state map is keyed by a string of the TensorImpl pointer in
// LibTorch 1.13 and by the raw pointer in 2.x (libtorch-on-debian.md §3.2).
#include <torch/optim/optimizer.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace clinic {

using OptimStateKey = typename std::decay_t<
    decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

// A template so the branch for the other LibTorch version is never
// instantiated.
template <typename K = OptimStateKey>
K optim_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<K, std::string>) {
    std::ostringstream ss;
    ss << p.unsafeGetTensorImpl();
    return ss.str();
  } else {
    return static_cast<K>(p.unsafeGetTensorImpl());
  }
}

}  // namespace clinic
