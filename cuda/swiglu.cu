// SwiGLU gating, y = silu(gate) * up, and its backward; elementwise, fp32 math, one thread
// per element (memory bound: 3 tensors forward, 5 backward).
#include "kernel_util.cuh"
#include "lizard/cuda/swiglu.h"

namespace lizard::cuda {
namespace {

__device__ __forceinline__ float sigmoid_s(float x) {
  const float e = expf(-fabsf(x));  // exp of a non-positive number: never overflows
  return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ g, const T* __restrict__ u,
                                  T* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gv = load_f(g[i]);
    y[i] = Store<T>::from(gv * sigmoid_s(gv) * load_f(u[i]));
  }
}

// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ g,
                                  const T* __restrict__ u, T* dg, T* du, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gv = load_f(g[i]), uv = load_f(u[i]), d = load_f(dy[i]);
    const float s = sigmoid_s(gv);
    dg[i] = Store<T>::from(d * uv * s * (1.f + gv * (1.f - s)));
    du[i] = Store<T>::from(d * gv * s);
  }
}

void check_same(const char* op, const Tensor& ref, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    require_contiguous(*t, op, "operand");
    LZ_CHECK(t->shape() == ref.shape() && t->dtype() == ref.dtype(), op, ": ", t->desc(),
             " does not match ", ref.desc());
  }
}

}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& y, void* stream) {
  check_same("cuda::swiglu_forward", gate, {&gate, &up, &y});
  const int64_t n = gate.numel();
  if (n == 0) return;
  visit_storage(gate.dtype(), "cuda::swiglu_forward", [&](auto z) {
    using T = decltype(z);
    swiglu_fwd_kernel<T><<<grid_for(n), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(gate.raw()), static_cast<const T*>(up.raw()), static_cast<T*>(y.raw()), n);
  });
  check_last_error("cuda::swiglu_forward");
}

void swiglu_backward(const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup, void* stream) {
  check_same("cuda::swiglu_backward", gate, {&dy, &gate, &up, &dgate, &dup});
  const int64_t n = gate.numel();
  if (n == 0) return;
  visit_storage(gate.dtype(), "cuda::swiglu_backward", [&](auto z) {
    using T = decltype(z);
    swiglu_bwd_kernel<T><<<grid_for(n), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(dy.raw()), static_cast<const T*>(gate.raw()),
        static_cast<const T*>(up.raw()), static_cast<T*>(dgate.raw()), static_cast<T*>(dup.raw()), n);
  });
  check_last_error("cuda::swiglu_backward");
}

}  // namespace lizard::cuda
