// Embedding lookup and its deterministic backward.
// Backward: the (id, n) pairs are sorted by id with a stable radix sort (cub), so each id's
// occurrences form one segment in increasing n; one block per segment (and column slice)
// sums those dy rows in that order and writes the id's row of dweight. No atomics, so the
// result is bitwise reproducible; rows of ids that never occur are zero.
#include <cub/device/device_radix_sort.cuh>

#include "kernel_util.cuh"
#include "lizard/cuda/embedding.h"

namespace lizard::cuda {
namespace {

constexpr int kCols = 256;  // columns per backward block

// out[n, :] = weight[ids[n], :]; an id outside [0, V) gives a NaN row (loud; kernels cannot throw).
template <class T>
__global__ void embedding_fwd_kernel(const T* __restrict__ w, const int32_t* __restrict__ ids,
                                     T* __restrict__ out, int64_t N, int64_t D, int64_t V) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * D;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / D, d = i % D;
    const int32_t id = ids[n];
    out[i] = (id >= 0 && id < V) ? w[int64_t(id) * D + d] : Store<T>::from(NAN);
  }
}

// Block (i, y): if sorted position i starts a segment, sums dy rows of that segment over
// columns [y*kCols, (y+1)*kCols) into dweight[id]. Ids outside [0, V) are skipped.
template <class T>
__global__ void embedding_bwd_kernel(const T* __restrict__ dy, const int32_t* __restrict__ keys,
                                     const int32_t* __restrict__ rows, float* __restrict__ dw,
                                     int64_t N, int64_t D, int64_t V) {
  const int64_t i = blockIdx.x;
  const int32_t id = keys[i];
  if ((i > 0 && keys[i - 1] == id) || id < 0 || id >= V) return;
  const int64_t d = blockIdx.y * int64_t(kCols) + threadIdx.x;
  if (d >= D) return;
  float acc = 0.f;
  for (int64_t j = i; j < N && keys[j] == id; ++j) acc += load_f(dy[int64_t(rows[j]) * D + d]);
  dw[int64_t(id) * D + d] = acc;
}

__global__ void iota_kernel(int32_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(i);
}

}  // namespace

void embedding_forward(const Tensor& weight, const Tensor& ids, Tensor& out, void* stream) {
  const char* op = "cuda::embedding_forward";
  require_contiguous(weight, op, "weight");
  require_contiguous(ids, op, "ids");
  require_contiguous(out, op, "out");
  LZ_CHECK(weight.dim() == 2, op, ": weight must be [V, D], got ", weight.desc());
  LZ_CHECK(ids.dtype() == DType::I32, op, ": ids must be i32, got ", ids.desc());
  const int64_t V = weight.size(0), D = weight.size(1), N = ids.numel();
  LZ_CHECK(out.numel() == N * D && out.dtype() == weight.dtype(), op, ": out ", out.desc(),
           " must hold ", N, " rows of ", weight.desc());
  if (N * D == 0) return;
  visit_storage(weight.dtype(), op, [&](auto z) {
    using T = decltype(z);
    embedding_fwd_kernel<T><<<grid_for(N * D), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(weight.raw()), ids.data<int32_t>(), static_cast<T*>(out.raw()), N, D, V);
  });
  check_last_error(op);
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dweight, void* stream) {
  const char* op = "cuda::embedding_backward";
  require_contiguous(dy, op, "dy");
  require_contiguous(ids, op, "ids");
  require_contiguous(dweight, op, "dweight");
  LZ_CHECK(dweight.dim() == 2 && dweight.dtype() == DType::F32, op,
           ": dweight must be f32 [V, D], got ", dweight.desc());
  LZ_CHECK(ids.dtype() == DType::I32, op, ": ids must be i32, got ", ids.desc());
  const int64_t V = dweight.size(0), D = dweight.size(1), N = ids.numel();
  LZ_CHECK(dy.numel() == N * D, op, ": dy ", dy.desc(), " must hold ", N, " rows of width ", D);
  LZ_CHECK(N < (int64_t(1) << 31), op, ": too many ids (", N, ")");
  auto s = as_stream(stream);
  if (cudaMemsetAsync(dweight.raw(), 0, dweight.nbytes(), s) != cudaSuccess)
    check_last_error("cuda::embedding_backward memset");
  if (N == 0 || D == 0) return;
  const Device dev = dy.device();
  Tensor rows_in = Tensor::empty({N}, DType::I32, dev);
  Tensor keys_out = Tensor::empty({N}, DType::I32, dev), rows_out = Tensor::empty({N}, DType::I32, dev);
  iota_kernel<<<grid_for(N), 256, 0, s>>>(rows_in.data<int32_t>(), N);
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids.data<int32_t>(), keys_out.data<int32_t>(),
                                  rows_in.data<int32_t>(), rows_out.data<int32_t>(),
                                  static_cast<int>(N), 0, 32, s);
  Tensor temp = Tensor::empty({static_cast<int64_t>(temp_bytes) + 1}, DType::U8, dev);
  const cudaError_t e = cub::DeviceRadixSort::SortPairs(
      temp.raw(), temp_bytes, ids.data<int32_t>(), keys_out.data<int32_t>(),
      rows_in.data<int32_t>(), rows_out.data<int32_t>(), static_cast<int>(N), 0, 32, s);
  LZ_CHECK(e == cudaSuccess, op, ": radix sort failed: ", cudaGetErrorString(e));
  LZ_CHECK(N < 2147483647 && (D + kCols - 1) / kCols < 65536, op, ": grid too large for ", dy.desc());
  visit_storage(dy.dtype(), op, [&](auto z) {
    using T = decltype(z);
    dim3 grid(static_cast<unsigned>(N), static_cast<unsigned>((D + kCols - 1) / kCols));
    embedding_bwd_kernel<T><<<grid, kCols, 0, s>>>(static_cast<const T*>(dy.raw()),
                                                   keys_out.data<int32_t>(), rows_out.data<int32_t>(),
                                                   dweight.data<float>(), N, D, V);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
