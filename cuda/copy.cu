// Strided copy with dtype conversion, fills, and Philox RNG fills.
// Contract: one thread per element; `layout` gives the shared shape and both operands'
// element strides; the RNG fill produces exactly the numbers of the CPU path (rng.h).
#include <cuda_runtime.h>

#include <type_traits>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/dispatch.h"
#include "lizard/core/rng.h"
#include "lizard/cuda/copy.h"
#include "lizard/cuda/elem.h"

namespace lizard::cuda {
namespace {

template <class S, class D>
__global__ void strided_copy_kernel(const S* __restrict__ src, D* __restrict__ dst,
                                    StridedLayout l, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, so = 0, doff = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
      int64_t idx = rem % l.shape[d];
      rem /= l.shape[d];
      so += idx * l.src_stride[d];
      doff += idx * l.dst_stride[d];
    }
    dst[doff] = convert<D>(src[so]);
  }
}

template <class T>
__global__ void fill_kernel(T* dst, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = v;
}

template <class T>
__global__ void rng_kernel(T* dst, int64_t n, bool normal, float a, float b, uint64_t seed,
                           uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float r = normal ? a + b * rng_normal(seed, offset, i) : a + (b - a) * rng_uniform(seed, offset, i);
    dst[i] = Store<T>::from(r);
  }
}

int blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return static_cast<int>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

}  // namespace

void strided_copy(const void* src, DType src_t, void* dst, DType dst_t, const StridedLayout& layout,
                  int64_t numel, void* stream) {
  if (numel == 0) return;
  visit_dtype(src_t, [&](auto s0) {
    using S = decltype(s0);
    visit_dtype(dst_t, [&](auto d0) {
      using D = decltype(d0);
      strided_copy_kernel<S, D><<<blocks_for(numel), 256, 0, static_cast<cudaStream_t>(stream)>>>(
          static_cast<const S*>(src), static_cast<D*>(dst), layout, numel);
    });
  });
  check_last_error("strided_copy");
}

void fill(void* dst, DType t, int64_t n, double value, void* stream) {
  if (n == 0) return;
  visit_dtype(t, [&](auto z) {
    using T = decltype(z);
    T v = from_double<T>(value);
    fill_kernel<T><<<blocks_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<T*>(dst), n, v);
  });
  check_last_error("fill");
}

void rng_fill(void* dst, DType t, int64_t n, bool normal, double a, double b, uint64_t seed,
              uint64_t offset, void* stream) {
  if (n == 0) return;
  visit_dtype(t, [&](auto z) {
    using T = decltype(z);
    rng_kernel<T><<<blocks_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<T*>(dst), n, normal, static_cast<float>(a), static_cast<float>(b), seed,
        offset);
  });
  check_last_error("rng_fill");
}

}  // namespace lizard::cuda
