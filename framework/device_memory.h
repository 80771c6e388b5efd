#pragma once
// Peak device memory of the caching allocator, for `clinic bench` on CUDA.
// LibTorch's C++ frontend has no device-generic memory statistics; the CUDA
// allocator's own counters are compiled in only against a CUDA LibTorch
// (CLINIC_WITH_CUDA), so a CPU build needs no CUDA headers.
#include <torch/torch.h>

namespace clinic {

/// Peak bytes (MiB) allocated on `device` since the last reset; 0 for the
/// CPU (whose peak is the process' RSS) and in builds without CUDA.
double device_peak_memory_mb(const torch::Device& device);
void reset_device_peak_memory(const torch::Device& device);

}  // namespace clinic
