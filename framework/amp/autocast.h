#pragma once
// RAII autocast over the LibTorch 1.13 and >= 2.4 APIs
// (libtorch-on-debian.md §3.4).
#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace clinic {

#if (TORCH_VERSION_MAJOR > 2) || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline void autocast_enable(c10::DeviceType d, bool on) {
  at::autocast::set_autocast_enabled(d, on);
}
inline void autocast_dtype(c10::DeviceType d, at::ScalarType t) {
  at::autocast::set_autocast_dtype(d, t);
}
inline bool autocast_enabled(c10::DeviceType d) {
  return at::autocast::is_autocast_enabled(d);
}
inline at::ScalarType autocast_get_dtype(c10::DeviceType d) {
  return at::autocast::get_autocast_dtype(d);
}
#else
inline void autocast_enable(c10::DeviceType d, bool on) {
  d == c10::kCUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on);
}
inline void autocast_dtype(c10::DeviceType d, at::ScalarType t) {
  d == c10::kCUDA ? at::autocast::set_autocast_gpu_dtype(t)
                  : at::autocast::set_autocast_cpu_dtype(t);
}
inline bool autocast_enabled(c10::DeviceType d) {
  return d == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline at::ScalarType autocast_get_dtype(c10::DeviceType d) {
  return d == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype()
                         : at::autocast::get_autocast_cpu_dtype();
}
#endif

/// Enables autocast to `dtype` on `device` for the guard's lifetime; a no-op
/// when dtype is Float.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, at::ScalarType dtype)
      : device_(device), active_(dtype != at::kFloat) {
    if (!active_) return;
    was_enabled_ = autocast_enabled(device_);
    autocast_dtype(device_, dtype);
    autocast_enable(device_, true);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    autocast_enable(device_, was_enabled_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool was_enabled_ = false;
};

}  // namespace clinic
