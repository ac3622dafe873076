// Dropout with a regenerated mask: element i survives iff rng_uniform(seed, offset, i) >= p
// (rng.h, the same numbers as the CPU), so the backward is this same call on dy and no mask
// is ever stored.
#include "kernel_util.cuh"
#include "lizard/core/rng.h"
#include "lizard/cuda/dropout.h"

namespace lizard::cuda {
namespace {

template <class T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, float p, float scale,
                               uint64_t seed, uint64_t offset, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = rng_uniform(seed, offset, static_cast<uint64_t>(i)) >= p;
    y[i] = Store<T>::from(keep ? load_f(x[i]) * scale : 0.f);
  }
}

}  // namespace

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y, void* stream) {
  require_contiguous(x, "cuda::dropout", "x");
  require_contiguous(y, "cuda::dropout", "y");
  LZ_CHECK(x.shape() == y.shape() && x.dtype() == y.dtype(), "cuda::dropout: y ", y.desc(),
           " vs x ", x.desc());
  LZ_CHECK(p >= 0.0 && p < 1.0, "cuda::dropout: p must be in [0, 1), got ", p);
  const int64_t n = x.numel();
  if (n == 0) return;
  visit_storage(x.dtype(), "cuda::dropout", [&](auto z) {
    using T = decltype(z);
    dropout_kernel<T><<<grid_for(n), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(x.raw()), static_cast<T*>(y.raw()), static_cast<float>(p),
        static_cast<float>(1.0 / (1.0 - p)), seed, offset, n);
  });
  check_last_error("cuda::dropout");
}

}  // namespace lizard::cuda
