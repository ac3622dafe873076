#include "lizard/core/storage.h"

#include <cstdlib>
#include <new>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"

namespace lizard {

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  size_t n = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (device.is_cpu()) {
    data_ = std::aligned_alloc(64, n);
    if (!data_) throw OutOfMemoryError(str_cat("out of host memory allocating ", bytes, " bytes"));
  } else {
    data_ = cuda::device_malloc(n, device.index);
  }
}

Storage::~Storage() {
  if (device_.is_cpu())
    std::free(data_);
  else
    cuda::device_free(data_, device_.index);
}

MemoryStats memory_stats(int device) { return cuda::device_memory_stats(device); }
void reset_peak_memory(int device) { cuda::device_reset_peak(device); }
void empty_cache(int device) { cuda::device_empty_cache(device); }

}  // namespace lizard
