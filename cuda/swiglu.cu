// SwiGLU gating, y = silu(gate) * up, and its backward; elementwise, fp32 math, 16-byte packs
// per thread where the operands allow (memory bound: 3 tensors forward, 5 backward).
#include "kernel_util.cuh"
#include "lizard/cuda/swiglu.h"

namespace lizard::cuda {
namespace {

__device__ __forceinline__ float sigmoid_s(float x) {
  const float e = expf(-fabsf(x));  // exp of a non-positive number: never overflows
  return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

/// y = silu(g) * u of one element, f32 math (the rounding to T is the caller's store).
__device__ __forceinline__ float swiglu_f(float gv, float uv) { return gv * sigmoid_s(gv) * uv; }

// Elements [0, np N) as np 16-byte packs (np = 0 unless every operand is 16-byte aligned:
// packs_for), then the rest one by one. One element per thread moved 2-byte bf16
// words and ran at about 1 TB/s; the packs make the kernels HBM-bound.
template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ g, const T* __restrict__ u,
                                  T* __restrict__ y, int64_t n, int64_t np) {
  pdl_enter();
  using P = Pack<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = tid; i < np; i += stride) {
    const P pg = reinterpret_cast<const P*>(g)[i], pu = reinterpret_cast<const P*>(u)[i];
    P py;
#pragma unroll
    for (int j = 0; j < P::N; ++j) py.v[j] = Store<T>::from(swiglu_f(load_f(pg.v[j]), load_f(pu.v[j])));
    reinterpret_cast<P*>(y)[i] = py;
  }
  for (int64_t i = np * P::N + tid; i < n; i += stride)
    y[i] = Store<T>::from(swiglu_f(load_f(g[i]), load_f(u[i])));
}

/// dg, du of one element from dy, g, u: silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
__device__ __forceinline__ void swiglu_grad(float d, float gv, float uv, float& dg, float& du) {
  const float s = sigmoid_s(gv);
  dg = d * uv * s * (1.f + gv * (1.f - s));
  du = d * gv * s;
}

template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ g,
                                  const T* __restrict__ u, T* dg, T* du, int64_t n, int64_t np) {
  pdl_enter();
  using P = Pack<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = tid; i < np; i += stride) {
    const P pd = reinterpret_cast<const P*>(dy)[i], pg = reinterpret_cast<const P*>(g)[i],
            pu = reinterpret_cast<const P*>(u)[i];
    P pdg, pdu;
#pragma unroll
    for (int j = 0; j < P::N; ++j) {
      float a, b;
      swiglu_grad(load_f(pd.v[j]), load_f(pg.v[j]), load_f(pu.v[j]), a, b);
      pdg.v[j] = Store<T>::from(a);
      pdu.v[j] = Store<T>::from(b);
    }
    reinterpret_cast<P*>(dg)[i] = pdg;
    reinterpret_cast<P*>(du)[i] = pdu;
  }
  for (int64_t i = np * P::N + tid; i < n; i += stride) {
    float a, b;
    swiglu_grad(load_f(dy[i]), load_f(g[i]), load_f(u[i]), a, b);
    dg[i] = Store<T>::from(a);
    du[i] = Store<T>::from(b);
  }
}

/// Packs of a launch over n elements: n / N when every operand is 16-byte aligned (a view may
/// start anywhere), else 0 and every element takes the scalar loop.
template <class T>
int64_t packs_for(int64_t n, std::initializer_list<const void*> ps) {
  return all_aligned16(ps) ? n / Pack<T>::N : 0;
}

/// Blocks of 256 threads for np packs and a scalar rest of n - np N elements.
template <class T>
int pack_blocks(int64_t n, int64_t np) { return grid_for(np > 0 ? np + Pack<T>::N : n); }
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
    const int64_t np = packs_for<T>(n, {gate.raw(), up.raw(), y.raw()});
    pdl_launch("swiglu", swiglu_fwd_kernel<T>, pack_blocks<T>(n, np), 256, 0, as_stream(stream),
               static_cast<const T*>(gate.raw()), static_cast<const T*>(up.raw()),
               static_cast<T*>(y.raw()), n, np);
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
    const int64_t np = packs_for<T>(n, {dy.raw(), gate.raw(), up.raw(), dgate.raw(), dup.raw()});
    pdl_launch("swiglu backward", swiglu_bwd_kernel<T>, pack_blocks<T>(n, np), 256, 0,
               as_stream(stream), static_cast<const T*>(dy.raw()),
               static_cast<const T*>(gate.raw()), static_cast<const T*>(up.raw()),
               static_cast<T*>(dgate.raw()), static_cast<T*>(dup.raw()), n, np);
  });
  check_last_error("cuda::swiglu_backward");
}

}  // namespace lizard::cuda
