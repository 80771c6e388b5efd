#include "framework/device_memory.h"

#ifdef CLINIC_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace clinic {

#ifdef CLINIC_WITH_CUDA
namespace {
c10::DeviceIndex index_of(const torch::Device& d) {
  return d.has_index() ? d.index() : c10::cuda::current_device();
}
}  // namespace

double device_peak_memory_mb(const torch::Device& device) {
  if (!device.is_cuda()) return 0;
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device));
  constexpr auto kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return static_cast<double>(stats.allocated_bytes[kAll].peak) / (1024.0 * 1024.0);
}

void reset_device_peak_memory(const torch::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(device));
}
#else
double device_peak_memory_mb(const torch::Device&) { return 0; }
void reset_device_peak_memory(const torch::Device&) {}
#endif

}  // namespace clinic
