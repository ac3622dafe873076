#include "lizard/ops/swiglu.h"

#include <cmath>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/swiglu.h"

namespace lizard::ops {

namespace {
void check(const Tensor& gate, const Tensor& up, const char* op) {
  LZ_CHECK(gate.shape() == up.shape() && gate.dtype() == up.dtype(), op, ": gate ", gate.desc(),
           " and up ", up.desc(), " must match");
  cpu::check_same_device(op, {&gate, &up});
}
template <class T>
T sigmoid(T x) {  // both branches stable: exp of a non-positive number only
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
}
}  // namespace

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check(gate, up, "swiglu");
  Tensor y = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  if (gate.is_cuda()) {
    LZ_CUDA_ONLY(cuda::swiglu_forward(gate.contiguous(), up.contiguous(), y, cuda::stream_of(y)));
    return y;
  }
  cpu::visit_float(gate.dtype(), "swiglu", [&](auto z) {
    using T = decltype(z);
    const Tensor g = gate.contiguous(), u = up.contiguous();
    const T* pg = g.data<T>();
    const T* pu = u.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < y.numel(); ++i) py[i] = pg[i] * sigmoid(pg[i]) * pu[i];
  });
  return y;
}

SwigluGrads swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check(gate, up, "swiglu_backward");
  LZ_CHECK(dy.shape() == gate.shape(), "swiglu_backward: dy ", dy.desc(), " for ", gate.desc());
  SwigluGrads r{Tensor::empty(gate.shape(), gate.dtype(), gate.device()),
                Tensor::empty(gate.shape(), gate.dtype(), gate.device())};
  if (gate.is_cuda()) {
    LZ_CUDA_ONLY(cuda::swiglu_backward(dy.contiguous(), gate.contiguous(), up.contiguous(),
                                       r.dgate, r.dup, cuda::stream_of(dy)));
    return r;
  }
  cpu::visit_float(gate.dtype(), "swiglu_backward", [&](auto z) {
    using T = decltype(z);
    const Tensor g = gate.contiguous(), u = up.contiguous(), d = dy.contiguous();
    const T* pg = g.data<T>();
    const T* pu = u.data<T>();
    const T* pd = d.data<T>();
    T* dg = r.dgate.data<T>();
    T* du = r.dup.data<T>();
    for (int64_t i = 0; i < g.numel(); ++i) {
      const T s = sigmoid(pg[i]);
      du[i] = pd[i] * pg[i] * s;
      dg[i] = pd[i] * pu[i] * s * (T(1) + pg[i] * (T(1) - s));
    }
  });
  return r;
}

}  // namespace lizard::ops
