#include "lizard/ops/mse.h"

#include "lizard/ops/elementwise.h"
#include "lizard/ops/reduce.h"

namespace lizard::ops {

Tensor mse(const Tensor& a, const Tensor& b) {
  LZ_CHECK(a.shape() == b.shape(), "mse: ", a.desc(), " against ", b.desc(),
           " (shapes must match, no broadcasting)");
  Tensor d = sub(a, b);
  return mean(mul(d, d));
}

Tensor mse_backward(const Tensor& dloss, const Tensor& a, const Tensor& b) {
  LZ_CHECK(dloss.numel() == 1, "mse_backward: dloss must have one element, got ", dloss.desc());
  const double n = static_cast<double>(a.numel());
  // dloss may live on the GPU: multiply as a broadcast scalar rather than reading it back.
  Tensor g = dloss.reshape({}).to(a.dtype());
  return mul(affine(sub(a, b), n > 0 ? 2.0 / n : 0.0), g);
}

}  // namespace lizard::ops
