#include "lizard/ops/elementwise.h"

#include <algorithm>
#include <cmath>

#include "cpu_util.h"
#include "lizard/cuda/elementwise.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/ops/reduce.h"

namespace lizard::ops {

namespace cpu {
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = *ts.begin();
  for (const Tensor* t : ts)
    LZ_CHECK(t->device() == first->device(), op, ": operands on ", first->device().str(), " and ",
             t->device().str());
}
}  // namespace cpu

Shape broadcast_shape(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    LZ_CHECK(da == db || da == 1 || db == 1, "shapes ", shape_str(a), " and ", shape_str(b),
             " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  LZ_CHECK(lead >= 0, "sum_to: ", g.desc(), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  }
  Tensor r = sum(g, dims, true);
  return r.reshape(shape);
}

namespace {

template <class T>
T apply_binary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return T(0);
}

template <class T>
T log_sigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}
template <class T>
T sigmoid(T x) {
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
}

template <class T>
T apply_unary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::LogSigmoid: return log_sigmoid(x);
    case UnaryOp::Sigmoid: return sigmoid(x);
    case UnaryOp::Silu: return x * sigmoid(x);
    case UnaryOp::Neg: return -x;
    case UnaryOp::Square: return x * x;
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Abs: return std::abs(x);
  }
  return x;
}

// d f(x) / dx
template <class T>
T unary_deriv(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::LogSigmoid: return sigmoid(-x);
    case UnaryOp::Sigmoid: {
      T s = sigmoid(x);
      return s * (T(1) - s);
    }
    case UnaryOp::Silu: {
      T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Square: return T(2) * x;
    case UnaryOp::Sqrt: return T(0.5) / std::sqrt(x);
    case UnaryOp::Abs: return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0));
  }
  return T(0);
}

}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  cpu::check_same_device("binary op", {&a, &b});
  LZ_CHECK(a.dtype() == b.dtype(), "binary op on ", a.desc(), " and ", b.desc());
  const Shape out_shape = broadcast_shape(a.shape(), b.shape());
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  const Tensor ea = a.expand(out_shape), eb = b.expand(out_shape);
  if (a.is_cuda()) {
    LZ_CUDA_ONLY(cuda::binary(static_cast<int>(op), ea, eb, out, cuda::stream_of(out)));
    return out;
  }
  cpu::visit_float(a.dtype(), "binary op", [&](auto z) {
    using T = decltype(z);
    const T* pa = static_cast<const T*>(ea.raw());
    const T* pb = static_cast<const T*>(eb.raw());
    T* po = out.data<T>();
    if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
      const int64_t n = out.numel();
      for (int64_t i = 0; i < n; ++i) po[i] = apply_binary(op, pa[i], pb[i]);
      return;
    }
    cpu::for_each3(out_shape, ea.strides(), eb.strides(), out.strides(),
                   [&](int64_t i, int64_t j, int64_t k) { po[k] = apply_binary(op, pa[i], pb[j]); });
  });
  return out;
}

void add_(Tensor& acc, const Tensor& b) {
  LZ_CHECK(acc.shape() == b.shape(), "add_: ", acc.desc(), " += ", b.desc());
  if (acc.is_cuda()) {
    Tensor bb = b.dtype() == acc.dtype() ? b : b.to(acc.dtype());
    LZ_CUDA_ONLY(cuda::binary(static_cast<int>(BinaryOp::Add), acc, bb, acc, cuda::stream_of(acc)));
    return;
  }
  Tensor bb = b.dtype() == acc.dtype() ? b : b.to(acc.dtype());
  cpu::visit_float(acc.dtype(), "add_", [&](auto z) {
    using T = decltype(z);
    T* pa = static_cast<T*>(acc.raw());
    const T* pb = static_cast<const T*>(bb.raw());
    cpu::for_each3(acc.shape(), acc.strides(), bb.strides(), acc.strides(),
                   [&](int64_t i, int64_t j, int64_t) { pa[i] += pb[j]; });
  });
}

Tensor unary(UnaryOp op, const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::unary(static_cast<int>(op), x.contiguous(), out, cuda::stream_of(out)));
    return out;
  }
  Tensor xc = x.contiguous();
  cpu::visit_float(x.dtype(), "unary op", [&](auto z) {
    using T = decltype(z);
    const T* px = xc.data<T>();
    T* po = out.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) po[i] = apply_unary(op, px[i]);
  });
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& dy) {
  LZ_CHECK(x.shape() == dy.shape(), "unary_backward: ", x.desc(), " vs ", dy.desc());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::unary_backward(static_cast<int>(op), x.contiguous(), dy.contiguous(), out,
                                      cuda::stream_of(out)));
    return out;
  }
  Tensor xc = x.contiguous(), dc = dy.contiguous();
  cpu::visit_float(x.dtype(), "unary_backward", [&](auto z) {
    using T = decltype(z);
    const T* px = xc.data<T>();
    const T* pd = dc.data<T>();
    T* po = out.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) po[i] = pd[i] * unary_deriv(op, px[i]);
  });
  return out;
}

Tensor affine(const Tensor& x, double alpha, double beta) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::affine(x.contiguous(), out, alpha, beta, cuda::stream_of(out)));
    return out;
  }
  Tensor xc = x.contiguous();
  cpu::visit_float(x.dtype(), "affine", [&](auto z) {
    using T = decltype(z);
    const T* px = xc.data<T>();
    T* po = out.data<T>();
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    for (int64_t i = 0, n = x.numel(); i < n; ++i) po[i] = a * px[i] + b;
  });
  return out;
}

}  // namespace lizard::ops
