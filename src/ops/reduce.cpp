#include "lizard/ops/reduce.h"

#include <algorithm>

#include "cpu_util.h"
#include "lizard/ops/elementwise.h"
#include "lizard/cuda/reduce.h"
#include "lizard/core/cuda_runtime.h"

namespace lizard::ops {

namespace {

std::vector<bool> reduced_mask(const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<bool> m(x.dim(), dims.empty());
  for (int64_t d : dims) {
    int64_t r = d < 0 ? d + x.dim() : d;
    LZ_CHECK(r >= 0 && r < x.dim(), "sum: dim ", d, " out of range for ", x.desc());
    m[r] = true;
  }
  return m;
}

Shape reduced_shape(const Tensor& x, const std::vector<bool>& mask, bool keepdim) {
  Shape s;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (!mask[i])
      s.push_back(x.shape()[i]);
    else if (keepdim)
      s.push_back(1);
  }
  return s;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const std::vector<bool> mask = reduced_mask(x, dims);
  const Shape out_shape = reduced_shape(x, mask, keepdim);
  // Permute kept dims first, reduced dims last; reduce the trailing block of each row.
  std::vector<int64_t> perm;
  int64_t rows = 1, cols = 1;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (!mask[i]) {
      perm.push_back(i);
      rows *= x.shape()[i];
    }
  for (int64_t i = 0; i < x.dim(); ++i)
    if (mask[i]) {
      perm.push_back(i);
      cols *= x.shape()[i];
    }
  Tensor xc = x.permute(perm).contiguous();
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::row_sum(xc, out, rows, cols, cuda::stream_of(out)));
    return out;
  }
  cpu::visit_float(x.dtype(), "sum", [&](auto z) {
    using T = decltype(z);
    const T* px = xc.data<T>();
    T* po = out.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      const T* row = px + r * cols;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(row[c]);
      po[r] = static_cast<T>(acc);
    }
  });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const int64_t total = x.numel();
  Tensor s = sum(x, dims, keepdim);
  const int64_t count = s.numel() > 0 ? total / std::max<int64_t>(s.numel(), 1) : 0;
  return affine(s, count > 0 ? 1.0 / static_cast<double>(count) : 0.0);
}

Tensor sum_backward(const Tensor& dy, const Shape& shape, const std::vector<int64_t>& dims,
                    bool keepdim) {
  Shape kept = shape;
  const int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<bool> mask(nd, dims.empty());
  for (int64_t d : dims) mask[d < 0 ? d + nd : d] = true;
  for (int64_t i = 0; i < nd; ++i)
    if (mask[i]) kept[i] = 1;
  Tensor g = dy.reshape(kept);
  return g.expand(shape).contiguous();
}

}  // namespace lizard::ops
