// Row sums with fp32 accumulation, deterministic (fixed reduction order for a given shape).
// Three regimes: short rows (a warp per row), long rows (a block per row), and few very long
// rows (each row split over many blocks into partial sums, then summed in order), so that a
// full reduction (rows = 1) still fills the chip.
#include "kernel_util.cuh"
#include "lizard/cuda/copy.h"
#include "lizard/cuda/reduce.h"

#include <algorithm>

namespace lizard::cuda {
namespace {

// out[r] = sum of row r, one warp per row.
template <class T, class O>
__global__ void row_sum_warp_kernel(const T* __restrict__ x, O* __restrict__ out, int64_t rows,
                                    int64_t cols) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const T* row = x + r * cols;
    float acc = 0.f;
    for (int64_t c = lane; c < cols; c += 32) acc += load_f(row[c]);
    acc = warp_sum(acc);
    if (lane == 0) out[r] = Store<O>::from(acc);
  }
}

// out[r * parts + p] = sum of chunk p of row r (chunk = cols / parts rounded up), one block
// per (row, part).
template <class T, class O>
__global__ void row_sum_block_kernel(const T* __restrict__ x, O* __restrict__ out, int64_t rows,
                                     int64_t cols, int64_t parts) {
  __shared__ float shm[32];
  const int64_t chunk = (cols + parts - 1) / parts;
  for (int64_t job = blockIdx.x; job < rows * parts; job += gridDim.x) {
    const int64_t r = job / parts, p = job % parts;
    const int64_t c0 = p * chunk, c1 = min(cols, c0 + chunk);
    const T* row = x + r * cols;
    float acc = 0.f;
    for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) acc += load_f(row[c]);
    acc = block_sum(acc, shm);
    if (threadIdx.x == 0) out[job] = Store<O>::from(acc);
  }
}

}  // namespace

void row_sum(const Tensor& x, Tensor& out, int64_t rows, int64_t cols, void* stream) {
  require_contiguous(x, "cuda::row_sum", "x");
  require_contiguous(out, "cuda::row_sum", "out");
  LZ_CHECK(rows * cols == x.numel() && out.numel() == rows, "cuda::row_sum: ", x.desc(),
           " as [", rows, ", ", cols, "] into ", out.desc());
  LZ_CHECK(out.dtype() == x.dtype(), "cuda::row_sum: out ", out.desc(), " vs x ", x.desc());
  if (rows == 0) return;
  if (cols == 0) {
    fill(out.raw(), out.dtype(), rows, 0.0, stream);
    return;
  }
  const int sms = context(x.device().index).sm_count;
  visit_storage(x.dtype(), "cuda::row_sum", [&](auto z) {
    using T = decltype(z);
    const T* px = static_cast<const T*>(x.raw());
    T* po = static_cast<T*>(out.raw());
    if (cols <= 1024) {
      row_sum_warp_kernel<T, T><<<grid_for(rows * 32), 256, 0, as_stream(stream)>>>(px, po, rows, cols);
      return;
    }
    // Split rows only when there are too few to fill the chip and each is long.
    int64_t parts = 1;
    if (rows < 2 * int64_t(sms) && cols >= 65536) {
      parts = (4 * int64_t(sms) + rows - 1) / rows;
      parts = std::min<int64_t>(parts, cols / 16384);
      parts = std::max<int64_t>(parts, 1);
    }
    if (parts == 1) {
      row_sum_block_kernel<T, T><<<grid_for(rows, 1), 512, 0, as_stream(stream)>>>(px, po, rows, cols, 1);
      return;
    }
    Tensor partial = Tensor::empty({rows, parts}, DType::F32, x.device());
    float* pp = partial.data<float>();
    row_sum_block_kernel<T, float><<<grid_for(rows * parts, 1), 512, 0, as_stream(stream)>>>(
        px, pp, rows, cols, parts);
    row_sum_warp_kernel<float, T><<<grid_for(rows * 32), 256, 0, as_stream(stream)>>>(
        pp, po, rows, parts);
  });
  check_last_error("cuda::row_sum");
}

}  // namespace lizard::cuda
