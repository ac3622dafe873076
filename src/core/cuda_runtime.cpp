// CUDA context registry and the caching allocator (host code; compiled without nvcc).
#include "lizard/core/cuda_runtime.h"

#include "lizard/core/device.h"
#include "lizard/core/error.h"

#ifdef LIZARD_WITH_CUDA
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>
#endif

namespace lizard {

#ifdef LIZARD_WITH_CUDA

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(str_cat("CUDA error in ", what, ": ", cudaGetErrorString(e)));
}

// Caching allocator for one device. All kernels run on the device's compute stream, so a
// freed block can be handed out again at once: later users are ordered after earlier ones.
class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t size = round(bytes);
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= size + size / 4) {
      void* p = it->second;
      free_.erase(it);
      used(p, size);
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError();
      release_cached();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw OutOfMemoryError(str_cat("out of GPU memory on cuda:", device_, " allocating ",
                                     bytes / 1048576.0, " MiB (in use ", stats_.current / 1048576.0,
                                     " MiB, peak ", stats_.peak / 1048576.0,
                                     " MiB); lower data.micro_batch or data.seq_len, or set "
                                     "recompute: true"));
    }
    stats_.reserved += size;
    used(p, size);
    return p;
  }

  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    stats_.current -= it->second;
    free_.emplace(it->second, p);
    sizes_.erase(it);
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak = stats_.current;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached();
  }

 private:
  static size_t round(size_t b) {
    if (b < (1u << 20)) return (b + 511) / 512 * 512;
    return (b + (2u << 20) - 1) / (2u << 20) * (2u << 20);
  }
  void used(void* p, size_t size) {
    sizes_[p] = size;
    stats_.current += size;
    if (stats_.current > stats_.peak) stats_.peak = stats_.current;
  }
  void release_cached() {
    cudaDeviceSynchronize();
    for (auto& kv : free_) {
      cudaFree(kv.second);
      stats_.reserved -= kv.first;
    }
    free_.clear();
  }

  int device_;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> sizes_;
  MemoryStats stats_;
};

struct DeviceState {
  cuda::Context ctx;
  std::unique_ptr<CachingAllocator> alloc;
};

struct Registry {
  std::mutex mu;
  std::unordered_map<int, std::unique_ptr<DeviceState>> devices;
};

Registry& registry() {
  static Registry* r = new Registry();  // leaked on purpose: outlives static tensors
  return *r;
}

DeviceState& state(int device) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto& slot = r.devices[device];
  if (!slot) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    if (device < 0 || device >= n) {
      cudaGetLastError();
      throw Error(str_cat("cuda:", device, " requested but ", n, " GPU(s) are visible"));
    }
    auto s = std::make_unique<DeviceState>();
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    s->ctx.device = device;
    s->ctx.name = prop.name;
    s->ctx.sm_count = prop.multiProcessorCount;
    s->ctx.total_memory = prop.totalGlobalMem;
    cudaStream_t stream;
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    s->ctx.stream = stream;
    cublasLtHandle_t lt;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) throw Error("cublasLtCreate failed");
    s->ctx.blaslt = lt;
    s->ctx.workspace_bytes = 64u << 20;
    check_cuda(cudaMalloc(&s->ctx.workspace, s->ctx.workspace_bytes), "workspace cudaMalloc");
    s->alloc = std::make_unique<CachingAllocator>(device);
    slot = std::move(s);
  }
  return *slot;
}

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

namespace cuda {

Context& context(int device) { return state(device).ctx; }
void* device_malloc(size_t bytes, int device) { return state(device).alloc->allocate(bytes); }
void device_free(void* p, int device) { state(device).alloc->release(p); }
MemoryStats device_memory_stats(int device) {
  if (cuda_device_count() == 0) return {};
  return state(device).alloc->stats();
}
void device_reset_peak(int device) {
  if (cuda_device_count() > 0) state(device).alloc->reset_peak();
}
void device_empty_cache(int device) {
  if (cuda_device_count() > 0) state(device).alloc->empty_cache();
}

void memcpy_h2d(void* dst, const void* src, size_t bytes, int device) {
  auto s = static_cast<cudaStream_t>(context(device).stream);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "memcpy H2D");
  check_cuda(cudaStreamSynchronize(s), "memcpy H2D sync");  // src may be freed right after
}
void memcpy_d2h(void* dst, const void* src, size_t bytes, int device) {
  auto s = static_cast<cudaStream_t>(context(device).stream);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "memcpy D2H");
  check_cuda(cudaStreamSynchronize(s), "memcpy D2H sync");
}
void memcpy_d2d(void* dst, const void* src, size_t bytes, int device) {
  auto s = static_cast<cudaStream_t>(context(device).stream);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "memcpy D2D");
}
void synchronize(int device) {
  check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(context(device).stream)),
             "stream synchronize");
}
void check_last_error(const char* what) { check_cuda(cudaGetLastError(), what); }
void check_status(int status, const char* what) {
  check_cuda(static_cast<cudaError_t>(status), what);
}

}  // namespace cuda

#else  // no CUDA in this build

int cuda_device_count() { return 0; }

namespace cuda {
namespace {
[[noreturn]] void no_cuda() { throw Error("this build of lizard has no CUDA support"); }
}  // namespace
Context& context(int) { no_cuda(); }
void* device_malloc(size_t, int) { no_cuda(); }
void device_free(void*, int) {}
MemoryStats device_memory_stats(int) { return {}; }
void device_reset_peak(int) {}
void device_empty_cache(int) {}
void memcpy_h2d(void*, const void*, size_t, int) { no_cuda(); }
void memcpy_d2h(void*, const void*, size_t, int) { no_cuda(); }
void memcpy_d2d(void*, const void*, size_t, int) { no_cuda(); }
void synchronize(int) {}
void check_last_error(const char*) {}
void check_status(int status, const char* what) {
  if (status != 0)
    throw Error(str_cat("CUDA error in ", what, ": status ", status, " (built without CUDA)"));
}
}  // namespace cuda

#endif

}  // namespace lizard

#include "lizard/core/tensor.h"
namespace lizard::cuda {
void* stream_of(const Tensor& t) {
  LZ_CHECK(t.is_cuda(), "stream_of: ", t.desc(), " is not on a GPU");
  return context(t.device().index).stream;
}
}  // namespace lizard::cuda
