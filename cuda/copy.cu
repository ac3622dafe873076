// Strided copy with dtype conversion, fills, and Philox RNG fills.
// Contract: `layout` gives the shared shape and both operands' element strides; the copy is
// first collapsed (copy_layout.h), then runs the flat vectorised kernel when both operands
// are one unit-stride run, else the div/mod walk (32-bit where offsets fit). Every path
// stores convert<D>(src element), so results are the same bit for bit whichever runs.
// The RNG fill produces exactly the numbers of the CPU path (rng.h).
#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/dispatch.h"
#include "lizard/core/rng.h"
#include "lizard/cuda/copy.h"
#include "lizard/cuda/copy_layout.h"
#include "lizard/cuda/elem.h"

namespace lizard::cuda {
namespace {

// The general walk: row-major index -> (src, dst) offsets by div/mod over the dims. I is the
// index type: int32 where layout_fits_int32 holds (64-bit div/mod is a multi-instruction
// sequence on GPUs), else int64.
template <class I>
struct Layout {
  int ndim;
  I shape[kMaxDims], src_stride[kMaxDims], dst_stride[kMaxDims];
};

template <class I>
Layout<I> narrow(const StridedLayout& l) {
  Layout<I> r{};
  r.ndim = l.ndim;
  for (int d = 0; d < l.ndim; ++d) {
    r.shape[d] = static_cast<I>(l.shape[d]);
    r.src_stride[d] = static_cast<I>(l.src_stride[d]);
    r.dst_stride[d] = static_cast<I>(l.dst_stride[d]);
  }
  return r;
}

template <class S, class D, class I>
__global__ void strided_copy_kernel(const S* __restrict__ src, D* __restrict__ dst, Layout<I> l,
                                    I n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    I rem = static_cast<I>(i), so = 0, doff = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
      I idx = rem % l.shape[d];
      rem /= l.shape[d];
      so += idx * l.src_stride[d];
      doff += idx * l.dst_stride[d];
    }
    dst[doff] = convert<D>(src[so]);
  }
}

// V elements of T as one aligned access (16 bytes at most: one ld/st.global.v4 or narrower).
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Elements per thread of the flat kernel: the most that keeps both accesses within 16 bytes.
template <class S, class D>
constexpr int pack_width() {
  constexpr size_t w = 16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
  return static_cast<int>(w);
}

// dst[i] = convert<D>(src[i]) for i < n, both contiguous. Elements [0, head) and the tail
// after the last whole pack are done one by one; between them src + head and dst + head are
// both aligned to their pack size, so each thread moves V elements per aligned load/store.
// head == n means "all scalar" (the operands' alignments never agree).
template <class S, class D, int V>
__global__ void flat_copy_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n,
                                 int64_t head) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t npack = (n - head) / V;
  const int64_t tail = head + npack * V;
  const auto* sp = reinterpret_cast<const Pack<S, V>*>(src + head);
  auto* dp = reinterpret_cast<Pack<D, V>*>(dst + head);
  for (int64_t p = tid; p < npack; p += step) {
    const Pack<S, V> a = sp[p];
    Pack<D, V> b;
#pragma unroll
    for (int j = 0; j < V; ++j) b.v[j] = convert<D>(a.v[j]);
    dp[p] = b;
  }
  for (int64_t i = tid; i < head; i += step) dst[i] = convert<D>(src[i]);
  for (int64_t i = tail + tid; i < n; i += step) dst[i] = convert<D>(src[i]);
}

/// dst[0, n) = v: elements [0, head) and [head + 16 k, n) one by one, the 16-byte packs between
/// (dst + head is 16-byte aligned) in one store each.
template <class T>
__global__ void fill_kernel(T* dst, int64_t n, int64_t head, T v) {
  constexpr int V = 16 / sizeof(T);
  Pack<T, V> p;
#pragma unroll
  for (int j = 0; j < V; ++j) p.v[j] = v;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t packs = (n - head) / V, tail = head + packs * V;
  Pack<T, V>* dp = reinterpret_cast<Pack<T, V>*>(dst + head);
  for (int64_t i = tid; i < packs; i += step) dp[i] = p;
  for (int64_t i = tid; i < head; i += step) dst[i] = v;
  for (int64_t i = tail + tid; i < n; i += step) dst[i] = v;
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


// Elements to do one by one before both src + head and dst + head sit on a pack boundary
// (bytes vs / vd), or n when no such head < V exists (or it would exceed n).
int64_t flat_head(const void* src, size_t es, size_t vs, const void* dst, size_t ed, size_t vd,
                  int64_t n, int v) {
  const auto a = reinterpret_cast<uintptr_t>(src), b = reinterpret_cast<uintptr_t>(dst);
  if (a % es != 0 || b % ed != 0) return n;  // not even element-aligned: scalar only
  for (int h = 0; h < v && h < n; ++h)
    if ((a + h * es) % vs == 0 && (b + h * ed) % vd == 0) return h;
  return n;
}

}  // namespace

void strided_copy(const void* src, DType src_t, void* dst, DType dst_t, const StridedLayout& layout,
                  int64_t numel, void* stream) {
  if (numel == 0) return;
  const StridedLayout l = collapse_layout(layout);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  visit_dtype(src_t, [&](auto s0) {
    using S = decltype(s0);
    visit_dtype(dst_t, [&](auto d0) {
      using D = decltype(d0);
      const S* sp = static_cast<const S*>(src);
      D* dp = static_cast<D*>(dst);
      if (layout_is_flat(l)) {
        constexpr int V = pack_width<S, D>();
        const int64_t head = flat_head(src, sizeof(S), sizeof(S) * V, dst, sizeof(D),
                                       sizeof(D) * V, numel, V);
        const int64_t work = head == numel ? numel : (numel - head) / V + 2 * V;
        flat_copy_kernel<S, D, V><<<blocks_for(work), 256, 0, st>>>(sp, dp, numel, head);
      } else if (layout_fits_int32(l, numel)) {
        strided_copy_kernel<S, D, int32_t><<<blocks_for(numel), 256, 0, st>>>(
            sp, dp, narrow<int32_t>(l), static_cast<int32_t>(numel));
      } else {
        strided_copy_kernel<S, D, int64_t><<<blocks_for(numel), 256, 0, st>>>(
            sp, dp, narrow<int64_t>(l), numel);
      }
    });
  });
  check_last_error("strided_copy");
}

void fill(void* dst, DType t, int64_t n, double value, void* stream) {
  if (n == 0) return;
  visit_dtype(t, [&](auto z) {
    using T = decltype(z);
    const T v = from_double<T>(value);
    const cudaStream_t st = static_cast<cudaStream_t>(stream);
    // All-zero bits (0.0 in every dtype here; -0.0 is not zero bits and takes the kernel):
    // cudaMemsetAsync runs at HBM speed, and zeroing is most fills (gradient accumulators).
    const T zero{};
    if (std::memcmp(&v, &zero, sizeof(T)) == 0) {
      if (cudaMemsetAsync(dst, 0, size_t(n) * sizeof(T), st) != cudaSuccess)
        check_last_error("fill (cudaMemsetAsync)");
      return;
    }
    constexpr int V = 16 / sizeof(T);
    const int64_t head = flat_head(dst, sizeof(T), 16, dst, sizeof(T), 16, n, V);
    const int64_t work = head == n ? n : (n - head) / V + 2 * V;
    fill_kernel<T><<<blocks_for(work), 256, 0, st>>>(static_cast<T*>(dst), n, head, v);
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
