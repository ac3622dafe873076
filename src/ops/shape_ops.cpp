#include "lizard/ops/shape_ops.h"

namespace lizard::ops {

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  LZ_CHECK(!xs.empty(), "concat of no tensors");
  const Tensor& f = xs[0];
  const int64_t d = dim < 0 ? dim + f.dim() : dim;
  LZ_CHECK(d >= 0 && d < f.dim(), "concat: dim ", dim, " out of range for ", f.desc());
  Shape out_shape = f.shape();
  out_shape[d] = 0;
  for (const Tensor& x : xs) {
    LZ_CHECK(x.dim() == f.dim() && x.dtype() == f.dtype() && x.device() == f.device(),
             "concat: ", x.desc(), " does not match ", f.desc());
    for (int64_t i = 0; i < f.dim(); ++i)
      LZ_CHECK(i == d || x.shape()[i] == f.shape()[i], "concat along ", d, ": ", x.desc(),
               " does not match ", f.desc());
    out_shape[d] += x.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, f.dtype(), f.device());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    Tensor dst = out.slice(d, at, at + x.shape()[d]);
    dst.copy_(x);
    at += x.shape()[d];
  }
  return out;
}

Tensor slice_backward(const Tensor& dy, const Shape& shape, int64_t dim, int64_t start,
                      int64_t end, int64_t step) {
  Tensor dx = Tensor::zeros(shape, dy.dtype(), dy.device());
  Tensor view = dx.slice(dim, start, end, step);
  view.copy_(dy);
  return dx;
}

}  // namespace lizard::ops
