// The CUDA side of core: per-device context (stream, cuBLASLt handle, workspace) and the
// stream-ordered caching allocator. Declared always; without CUDA every call throws
// (or reports "no GPU"), so host code needs no #ifdefs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "lizard/core/storage.h"

namespace lizard {
class Tensor;
}

namespace lizard::cuda {

/// Explicit CUDA state for one device. Kernel launchers take its stream explicitly.
struct Context {
  int device = 0;
  void* stream = nullptr;         ///< cudaStream_t of compute
  void* blaslt = nullptr;         ///< cublasLtHandle_t
  void* workspace = nullptr;      ///< cuBLASLt workspace
  size_t workspace_bytes = 0;
  int sm_count = 0;
  std::string name;               ///< GPU name
  size_t total_memory = 0;        ///< bytes
  /// cuda/gemm.cu's cache of cuBLASLt descriptors and heuristics, keyed by problem shape
  /// (opaque here; created on first GEMM, owned by the context so no global holds it).
  std::shared_ptr<void> gemm_plans;
  /// cuda/side_stream.cu's second stream and its fork/join events (opaque here; created on
  /// the first fork).
  std::shared_ptr<void> side_stream;
};

/// The context of GPU `device`, created on first use (one per device per process).
Context& context(int device = 0);

/// The compute stream (cudaStream_t) of the device holding `t`.
void* stream_of(const lizard::Tensor& t);

/// Caching allocator: stream-ordered on the device's compute stream.
void* device_malloc(size_t bytes, int device);
void device_free(void* ptr, int device);
MemoryStats device_memory_stats(int device);
void device_reset_peak(int device);
void device_empty_cache(int device);

/// cudaMemcpy in each direction, ordered on the context stream; host side waits for D2H.
void memcpy_h2d(void* dst, const void* src, size_t bytes, int device);
void memcpy_d2h(void* dst, const void* src, size_t bytes, int device);
void memcpy_d2d(void* dst, const void* src, size_t bytes, int device);
/// Waits for all work queued on the device's stream.
void synchronize(int device = 0);
/// Throws lizard::Error naming `what` if the last kernel launch failed.
void check_last_error(const char* what);
/// Throws lizard::Error naming `what` and the CUDA error when `status` (a cudaError_t, as
/// int so this header needs no CUDA include) is not cudaSuccess.
void check_status(int status, const char* what);

}  // namespace lizard::cuda
