// Private helpers of the .cu files: dtype dispatch over the float storage types, launch
// sizing, warp/block reductions, and 16-byte packs. Not a public header (kernels only).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "lizard/core/tensor.h"
#include "lizard/cuda/elem.h"
#include "pdl.cuh"

namespace lizard::cuda {

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

/// Blocks for a grid-stride loop over n items: enough to fill the chip, capped so the
/// grid stays legal; every kernel using it loops, so the cap never drops work.
inline int grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 16) b = 65535LL * 16;
  return static_cast<int>(b);
}

/// f(T{}) with T the storage type of a float dtype kernels accept (f32, bf16, f16).
template <class F>
decltype(auto) visit_storage(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(bf16{});
    case DType::F16: return f(f16{});
    default: break;
  }
  throw Error(str_cat(op, ": CUDA kernels take f32, bf16 or f16, got ", dtype_name(t)));
}

/// Throws naming `op` unless `t` is a defined CUDA tensor.
inline void require_cuda(const Tensor& t, const char* op, const char* name) {
  LZ_CHECK(t.defined() && t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got ",
           t.defined() ? t.desc() : std::string("undefined"));
}
inline void require_contiguous(const Tensor& t, const char* op, const char* name) {
  require_cuda(t, op, name);
  LZ_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous, got ", t.desc());
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
/// result. `shm` holds 32 floats. The order is fixed, so the result is deterministic.
__device__ __forceinline__ float block_sum(float v, float* shm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // shm may still be read by a previous call
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  v = lane < nw ? shm[lane] : 0.f;
  return warp_sum(v);
}
/// block_sum in double (for sums that are then subtracted from one of their terms).
__device__ __forceinline__ double block_sum_f64(double v, double* shm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  v = lane < nw ? shm[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float block_max(float v, float* shm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  v = lane < nw ? shm[lane] : -INFINITY;
  return warp_max(v);
}

/// A 16-byte group of storage elements, loaded and stored in one instruction.
template <class T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

/// True when p is 16-byte aligned (so Pack loads are legal).
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

/// True when every pointer is 16-byte aligned: the operands of a kernel may all take Packs.
inline bool all_aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (!aligned16(p)) return false;
  return true;
}

}  // namespace lizard::cuda
