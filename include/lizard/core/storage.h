// Storage: one owned allocation on one device. Tensors share storages through views.
#pragma once
#include <cstddef>
#include <memory>

#include "lizard/core/device.h"

namespace lizard {

class Storage {
 public:
  /// Allocates `bytes` on `device` (CPU: 64-byte aligned; CUDA: the caching allocator).
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

/// Device memory statistics of the caching allocator (bytes).
struct MemoryStats {
  size_t current = 0;   ///< bytes handed out to live tensors
  size_t peak = 0;      ///< high-water mark of `current` since the last reset
  size_t reserved = 0;  ///< bytes held from the driver, cached blocks included
};
/// Statistics of GPU `device` (all zero without CUDA).
MemoryStats memory_stats(int device = 0);
/// Resets the peak to the current usage.
void reset_peak_memory(int device = 0);
/// Returns cached, unused blocks to the driver.
void empty_cache(int device = 0);

}  // namespace lizard
