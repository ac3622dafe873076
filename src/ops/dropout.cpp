#include "lizard/ops/dropout.h"

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/rng.h"
#include "lizard/cuda/dropout.h"

namespace lizard::ops {

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  LZ_INPUT_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  if (p == 0.0) return x.clone();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::dropout(x.contiguous(), p, seed, offset, y, cuda::stream_of(y)));
    return y;
  }
  cpu::visit_float(x.dtype(), "dropout", [&](auto z) {
    using T = decltype(z);
    const Tensor xc = x.contiguous();
    const T* px = xc.data<T>();
    T* py = y.data<T>();
    // Compared in float, as the kernel does: rng_uniform is a float with 24 random bits.
    const float pf = static_cast<float>(p);
    const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
    for (int64_t i = 0; i < y.numel(); ++i)
      py[i] = rng_uniform(seed, offset, static_cast<uint64_t>(i)) >= pf ? px[i] * keep_scale : T(0);
  });
  return y;
}

}  // namespace lizard::ops
