// Scatter-add of unique rows: dst[ids[i], :] += rows[i, :]. With unique ids every output
// element is written by exactly one thread, so there are no atomics and the result is the
// same on every run and every rank (dist::SparseRowGrad relies on that for bitwise identical
// gradients across ranks).
#include "kernel_util.cuh"
#include "lizard/cuda/sparse_rows.h"

namespace lizard::cuda {
namespace {

template <class T>
__global__ void scatter_add_rows_kernel(T* __restrict__ dst, const int32_t* __restrict__ ids,
                                        const T* __restrict__ rows, int64_t n, int64_t D,
                                        int64_t V) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * D;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / D, d = i % D;
    const int32_t id = ids[r];
    if (id < 0 || id >= V) continue;
    T& out = dst[int64_t(id) * D + d];
    out = Store<T>::from(load_f(out) + load_f(rows[i]));
  }
}

}  // namespace

void scatter_add_rows(Tensor& dst, const Tensor& ids, const Tensor& rows, void* stream) {
  const char* op = "cuda::scatter_add_rows";
  require_contiguous(dst, op, "dst");
  require_contiguous(ids, op, "ids");
  require_contiguous(rows, op, "rows");
  LZ_CHECK(dst.dim() == 2, op, ": dst must be [V, D], got ", dst.desc());
  LZ_CHECK(ids.dtype() == DType::I32, op, ": ids must be i32, got ", ids.desc());
  const int64_t V = dst.size(0), D = dst.size(1), n = ids.numel();
  LZ_CHECK(rows.dtype() == dst.dtype() && rows.numel() == n * D, op, ": rows ", rows.desc(),
           " must hold ", n, " rows of ", dst.desc());
  if (n * D == 0) return;
  visit_storage(dst.dtype(), op, [&](auto z) {
    using T = decltype(z);
    scatter_add_rows_kernel<T><<<grid_for(n * D), 256, 0, as_stream(stream)>>>(
        static_cast<T*>(dst.raw()), ids.data<int32_t>(), static_cast<const T*>(rows.raw()), n, D, V);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
