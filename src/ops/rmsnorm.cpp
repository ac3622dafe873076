#include "lizard/ops/rmsnorm.h"

#include <cmath>

#include "cpu_util.h"
#include "lizard/core/dispatch.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/rmsnorm.h"

namespace lizard::ops {

namespace {
void check_shapes(const Tensor& x, const Tensor& w, const char* op) {
  LZ_CHECK(x.dim() >= 1, op, ": x must have a last dim, got ", x.desc());
  LZ_CHECK(w.dim() == 1 && w.size(0) == x.size(-1), op, ": weight ", w.desc(),
           " does not match the last dim of x ", x.desc());
  cpu::check_same_device(op, {&x, &w});
}
}  // namespace

RmsNormOut rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  check_shapes(x, w, "rmsnorm");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  RmsNormOut r;
  r.y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    r.rstd = Tensor::empty({N}, DType::F32, x.device());
    LZ_CUDA_ONLY(cuda::rmsnorm_forward(x.contiguous(), w.contiguous(), eps, r.y, r.rstd,
                                       cuda::stream_of(x)));
    return r;
  }
  // The f64 oracle keeps rstd in f64 so finite-difference checks see no f32 rounding.
  r.rstd = Tensor::empty({N}, x.dtype() == DType::F64 ? DType::F64 : DType::F32);
  cpu::visit_float(x.dtype(), "rmsnorm", [&](auto z) {
    using T = decltype(z);
    using R = T;  // rstd storage type (f32 for f32 x, f64 for f64 x)
    Tensor xc = x.contiguous(), wc = w.contiguous();
    const T* px = xc.data<T>();
    const T* pw = wc.data<T>();
    T* py = r.y.data<T>();
    R* pr = r.rstd.data<R>();
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * D;
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * xr[d];
      const double rs = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
      pr[n] = static_cast<R>(rs);
      for (int64_t d = 0; d < D; ++d) py[n * D + d] = static_cast<T>(xr[d] * rs * pw[d]);
    }
  });
  return r;
}

RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                              const Tensor& rstd, bool need_dx, bool need_dw,
                              const Tensor& dx_acc) {
  check_shapes(x, w, "rmsnorm_backward");
  LZ_CHECK(dy.shape() == x.shape(), "rmsnorm_backward: dy ", dy.desc(), " for x ", x.desc());
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  LZ_CHECK(rstd.numel() == N, "rmsnorm_backward: rstd ", rstd.desc(), " for ", N, " rows");
  const bool acc = dx_acc.defined();
  if (acc) {
    LZ_CHECK(need_dx, "rmsnorm_backward: dx_acc ", dx_acc.desc(), " given without need_dx");
    LZ_CHECK(dx_acc.shape() == x.shape() && dx_acc.dtype() == x.dtype() &&
                 dx_acc.device() == x.device(),
             "rmsnorm_backward: dx_acc ", dx_acc.desc(), " must be like x ", x.desc());
  }
  RmsNormGrads g;
  if (x.is_cuda()) {
    if (need_dx) g.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (need_dw) g.dw = Tensor::empty({D}, DType::F32, x.device());
    LZ_CUDA_ONLY(cuda::rmsnorm_backward(dy.contiguous(), x.contiguous(), w.contiguous(), rstd,
                                        g.dx, g.dw, cuda::stream_of(x),
                                        acc ? dx_acc.contiguous() : Tensor()));
    return g;
  }
  // bf16 storage is taken as the reference of the CUDA rounding contract: f64 math, one
  // rounding of dx (the running sum included) to bf16 at the end.
  if (need_dx) g.dx = Tensor::empty(x.shape(), x.dtype());
  if (need_dw) g.dw = Tensor::zeros({D}, x.dtype());
  const Tensor rs64 = rstd.to(DType::F64).contiguous();
  const double* pr = rs64.data<double>();
  auto body = [&](auto z) {
    using T = decltype(z);
    Tensor xc = x.contiguous(), wc = w.contiguous(), gc = dy.contiguous();
    Tensor ac = acc ? dx_acc.contiguous() : Tensor();
    const T* px = xc.data<T>();
    const T* pw = wc.data<T>();
    const T* pg = gc.data<T>();
    const T* pa = acc ? ac.data<T>() : nullptr;
    auto ld = [](T v) { return to_double<T>(v); };
    std::vector<double> dw_acc(need_dw ? D : 0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * D;
      const T* gr = pg + n * D;
      const double rs = pr[n];
      if (need_dx) {
        double dot = 0;  // sum_d w dy x
        for (int64_t d = 0; d < D; ++d) dot += ld(pw[d]) * ld(gr[d]) * ld(xr[d]);
        const double c = rs * rs * dot / static_cast<double>(D);
        T* dxr = g.dx.template data<T>() + n * D;
        for (int64_t d = 0; d < D; ++d) {
          double v = rs * (ld(pw[d]) * ld(gr[d]) - ld(xr[d]) * c);
          if (pa) v += ld(pa[n * D + d]);
          dxr[d] = from_double<T>(v);
        }
      }
      if (need_dw)
        for (int64_t d = 0; d < D; ++d) dw_acc[d] += ld(gr[d]) * ld(xr[d]) * rs;
    }
    if (need_dw) {
      T* pdw = g.dw.template data<T>();
      for (int64_t d = 0; d < D; ++d) pdw[d] = from_double<T>(dw_acc[d]);
    }
  };
  if (x.dtype() == DType::BF16) body(bf16{});
  else cpu::visit_float(x.dtype(), "rmsnorm_backward", body);
  return g;
}

}  // namespace lizard::ops
