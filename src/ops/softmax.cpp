#include "lizard/ops/softmax.h"

#include <algorithm>
#include <cmath>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/softmax.h"

namespace lizard::ops {

namespace {

Tensor forward(const Tensor& x, bool log) {
  LZ_CHECK(x.dim() >= 1 && x.size(-1) >= 1, "softmax: x needs a non-empty last dim, got ",
           x.desc());
  const int64_t C = x.size(-1), N = x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    Tensor y2 = y.view({N, C});
    LZ_CUDA_ONLY(cuda::softmax_forward(x.contiguous().view({N, C}), log, y2, cuda::stream_of(y)));
    return y;
  }
  cpu::visit_float(x.dtype(), "softmax", [&](auto z) {
    using T = decltype(z);
    const Tensor xc = x.contiguous();
    const T* px = xc.data<T>();
    T* py = y.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      T* yr = py + n * C;
      const T m = *std::max_element(xr, xr + C);
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(xr[c] - m));
      if (log) {
        const double ls = std::log(s);
        for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<T>(xr[c] - m - ls);
      } else {
        for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<T>(std::exp(static_cast<double>(xr[c] - m)) / s);
      }
    }
  });
  return y;
}

Tensor backward(const Tensor& dy, const Tensor& y, bool log) {
  LZ_CHECK(dy.shape() == y.shape(), "softmax_backward: dy ", dy.desc(), " for y ", y.desc());
  const int64_t C = y.size(-1), N = y.numel() / C;
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  if (y.is_cuda()) {
    Tensor dx2 = dx.view({N, C});
    LZ_CUDA_ONLY(cuda::softmax_backward(dy.contiguous().view({N, C}), y.contiguous().view({N, C}),
                                        log, dx2, cuda::stream_of(dx)));
    return dx;
  }
  cpu::visit_float(y.dtype(), "softmax_backward", [&](auto z) {
    using T = decltype(z);
    const Tensor yc = y.contiguous(), gc = dy.contiguous();
    const T* py = yc.data<T>();
    const T* pg = gc.data<T>();
    T* pd = dx.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T* yr = py + n * C;
      const T* gr = pg + n * C;
      T* dr = pd + n * C;
      double s = 0;
      if (log) {
        for (int64_t c = 0; c < C; ++c) s += gr[c];
        for (int64_t c = 0; c < C; ++c) dr[c] = static_cast<T>(gr[c] - std::exp(static_cast<double>(yr[c])) * s);
      } else {
        for (int64_t c = 0; c < C; ++c) s += static_cast<double>(gr[c]) * yr[c];
        for (int64_t c = 0; c < C; ++c) dr[c] = static_cast<T>(yr[c] * (gr[c] - s));
      }
    }
  });
  return dx;
}

}  // namespace

Tensor softmax(const Tensor& x) { return forward(x, false); }
Tensor log_softmax(const Tensor& x) { return forward(x, true); }
Tensor softmax_backward(const Tensor& dy, const Tensor& y) { return backward(dy, y, false); }
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y) { return backward(dy, y, true); }

}  // namespace lizard::ops
