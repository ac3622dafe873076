// Elementwise kernels: binary ops over broadcast (any-stride) operands, unary ops and their
// derivatives, and affine. Storage f32/bf16/f16, math in fp32. Op codes are those of
// ops::BinaryOp {Add, Sub, Mul, Div} and ops::UnaryOp {Exp, Log, LogSigmoid, Sigmoid, Silu,
// Neg, Square, Sqrt, Abs}. Contiguous operands take a 16-byte vector path (memory bound).
#include "kernel_util.cuh"
#include "lizard/cuda/copy.h"
#include "lizard/cuda/elementwise.h"

namespace lizard::cuda {
namespace {

enum : int { kAdd = 0, kSub, kMul, kDiv };
enum : int { kExp = 0, kLog, kLogSigmoid, kSigmoid, kSilu, kNeg, kSquare, kSqrt, kAbs };

__device__ __forceinline__ float apply_binary(int op, float a, float b) {
  switch (op) {
    case kAdd: return a + b;
    case kSub: return a - b;
    case kMul: return a * b;
    default: return a / b;
  }
}

// sigmoid without overflow: exp of a non-positive argument only.
__device__ __forceinline__ float sigmoid_f(float x) {
  const float e = expf(-fabsf(x));
  return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

__device__ __forceinline__ float apply_unary(int op, float x) {
  switch (op) {
    case kExp: return expf(x);
    case kLog: return logf(x);
    // log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): never log of an underflowed sigmoid.
    case kLogSigmoid: return fminf(x, 0.f) - log1pf(expf(-fabsf(x)));
    case kSigmoid: return sigmoid_f(x);
    case kSilu: return x * sigmoid_f(x);
    case kNeg: return -x;
    case kSquare: return x * x;
    case kSqrt: return sqrtf(x);
    default: return fabsf(x);
  }
}

__device__ __forceinline__ float unary_deriv(int op, float x) {
  switch (op) {
    case kExp: return expf(x);
    case kLog: return 1.f / x;
    case kLogSigmoid: return sigmoid_f(-x);
    case kSigmoid: {
      const float s = sigmoid_f(x);
      return s * (1.f - s);
    }
    case kSilu: {
      const float s = sigmoid_f(x);
      return s * (1.f + x * (1.f - s));
    }
    case kNeg: return -1.f;
    case kSquare: return 2.f * x;
    case kSqrt: return 0.5f / sqrtf(x);
    default: return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
  }
}

// Three operands sharing one shape, each with its own element strides.
struct Layout3 {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t sa[kMaxDims], sb[kMaxDims], so[kMaxDims];
};

template <class T>
__global__ void binary_strided_kernel(int op, const T* __restrict__ a, const T* __restrict__ b,
                                      T* out, Layout3 l, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0, oo = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % l.shape[d];
      rem /= l.shape[d];
      oa += idx * l.sa[d];
      ob += idx * l.sb[d];
      oo += idx * l.so[d];
    }
    out[oo] = Store<T>::from(apply_binary(op, load_f(a[oa]), load_f(b[ob])));
  }
}

// Contiguous operands: packs of 16 bytes, then a scalar tail. kScalar 0: a and b both
// contiguous, same layout; 1: b a broadcast scalar (every stride 0: a loss scale, a 0-d
// factor), a contiguous; 2: a the scalar, b contiguous. The scalar is read once a thread: the
// strided kernel's 64-bit div/mod per dim and element took 80 us for a [2048, 4096] bf16
// multiply by a 0-d gradient on an H200 (the distillation loss's backward, 32 a step). The
// same apply_binary on the same values as the strided kernel: its bits.
template <class T, int kScalar>
__global__ void binary_vec_kernel(int op, const T* a, const T* b, T* out, int64_t n) {
  using P = Pack<T>;
  const float sa = kScalar == 2 ? load_f(*a) : 0.f, sb = kScalar == 1 ? load_f(*b) : 0.f;
  const int64_t np = n / P::N;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < np; i += stride) {
    P pa{}, pb{}, po;
    if constexpr (kScalar != 2) pa = reinterpret_cast<const P*>(a)[i];
    if constexpr (kScalar != 1) pb = reinterpret_cast<const P*>(b)[i];
#pragma unroll
    for (int j = 0; j < P::N; ++j)
      po.v[j] = Store<T>::from(apply_binary(op, kScalar == 2 ? sa : load_f(pa.v[j]),
                                            kScalar == 1 ? sb : load_f(pb.v[j])));
    reinterpret_cast<P*>(out)[i] = po;
  }
  for (int64_t i = np * P::N + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    out[i] = Store<T>::from(apply_binary(op, kScalar == 2 ? sa : load_f(a[i]),
                                         kScalar == 1 ? sb : load_f(b[i])));
}

// mode 0: out = f(x); mode 1: out = dy * f'(x); mode 2: out = alpha * x + beta.
template <class T, int kMode>
__global__ void map_kernel(int op, const T* x, const T* dy, T* out, float alpha, float beta,
                           int64_t n) {
  using P = Pack<T>;
  auto f = [&](float xv, float dv) {
    if constexpr (kMode == 0) return apply_unary(op, xv);
    else if constexpr (kMode == 1) return dv * unary_deriv(op, xv);
    else return alpha * xv + beta;
  };
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const bool vec = (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out) |
                    (kMode == 1 ? reinterpret_cast<uintptr_t>(dy) : 0)) % 16 == 0;
  int64_t done = 0;
  if (vec) {
    const int64_t np = n / P::N;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < np; i += stride) {
      P px = reinterpret_cast<const P*>(x)[i], pd, po;
      if constexpr (kMode == 1) pd = reinterpret_cast<const P*>(dy)[i];
#pragma unroll
      for (int j = 0; j < P::N; ++j)
        po.v[j] = Store<T>::from(f(load_f(px.v[j]), kMode == 1 ? load_f(pd.v[j]) : 0.f));
      reinterpret_cast<P*>(out)[i] = po;
    }
    done = np * P::N;
  }
  for (int64_t i = done + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    out[i] = Store<T>::from(f(load_f(x[i]), kMode == 1 ? load_f(dy[i]) : 0.f));
}

template <class T>
void launch_map(int mode, int op, const Tensor& x, const Tensor* dy, Tensor& out, float alpha,
                float beta, void* stream) {
  const int64_t n = x.numel();
  const T* px = static_cast<const T*>(x.raw());
  const T* pd = dy ? static_cast<const T*>(dy->raw()) : nullptr;
  T* po = static_cast<T*>(out.raw());
  const int grid = grid_for((n + Pack<T>::N - 1) / Pack<T>::N);
  if (mode == 0) map_kernel<T, 0><<<grid, 256, 0, as_stream(stream)>>>(op, px, pd, po, alpha, beta, n);
  else if (mode == 1) map_kernel<T, 1><<<grid, 256, 0, as_stream(stream)>>>(op, px, pd, po, alpha, beta, n);
  else map_kernel<T, 2><<<grid, 256, 0, as_stream(stream)>>>(op, px, pd, po, alpha, beta, n);
}

void check_map_operands(const char* op, const Tensor& x, const Tensor& out, const Tensor* dy) {
  require_contiguous(x, op, "x");
  require_contiguous(out, op, "out");
  LZ_CHECK(x.shape() == out.shape() && x.dtype() == out.dtype(), op, ": x ", x.desc(),
           " and out ", out.desc(), " differ");
  if (dy) {
    require_contiguous(*dy, op, "dy");
    LZ_CHECK(dy->shape() == x.shape() && dy->dtype() == x.dtype(), op, ": dy ", dy->desc(),
             " vs x ", x.desc());
  }
}

}  // namespace

void binary(int op, const Tensor& a, const Tensor& b, Tensor& out, void* stream) {
  require_cuda(a, "cuda::binary", "a");
  require_cuda(b, "cuda::binary", "b");
  require_cuda(out, "cuda::binary", "out");
  LZ_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), "cuda::binary: operands ",
           a.desc(), ", ", b.desc(), " not expanded to out ", out.desc());
  LZ_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "cuda::binary: dtypes of ",
           a.desc(), ", ", b.desc(), ", ", out.desc(), " differ");
  LZ_CHECK(op >= kAdd && op <= kDiv, "cuda::binary: unknown op ", op);
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_storage(out.dtype(), "cuda::binary", [&](auto z) {
    using T = decltype(z);
    const T* pa = static_cast<const T*>(a.raw());
    const T* pb = static_cast<const T*>(b.raw());
    T* po = static_cast<T*>(out.raw());
    const int vgrid = grid_for((n + Pack<T>::N - 1) / Pack<T>::N);
    auto vec = [&](auto kernel) {
      kernel<<<vgrid, 256, 0, as_stream(stream)>>>(op, pa, pb, po, n);
    };
    if (a.is_contiguous() && b.is_contiguous() && out.is_contiguous() && aligned16(pa) &&
        aligned16(pb) && aligned16(po)) {
      vec(binary_vec_kernel<T, 0>);
      return;
    }
    // a scalar broadcast against a contiguous operand (every stride of the scalar 0)
    auto scalar = [&](const Tensor& t) {
      for (int64_t d = 0; d < out.dim(); ++d)
        if (out.shape()[d] != 1 && t.strides()[d] != 0) return false;
      return true;
    };
    if (out.is_contiguous() && aligned16(po)) {
      if (scalar(b) && a.is_contiguous() && aligned16(pa)) {
        vec(binary_vec_kernel<T, 1>);
        return;
      }
      if (scalar(a) && b.is_contiguous() && aligned16(pb)) {
        vec(binary_vec_kernel<T, 2>);
        return;
      }
    }
    // Drop size-1 dims (their strides never matter) and check the rank fits the layout.
    Layout3 l{};
    for (int64_t d = 0; d < out.dim(); ++d) {
      if (out.shape()[d] == 1) continue;
      LZ_CHECK(l.ndim < kMaxDims, "cuda::binary: more than ", kMaxDims, " non-unit dims in ",
               out.desc());
      l.shape[l.ndim] = out.shape()[d];
      l.sa[l.ndim] = a.strides()[d];
      l.sb[l.ndim] = b.strides()[d];
      l.so[l.ndim] = out.strides()[d];
      ++l.ndim;
    }
    binary_strided_kernel<T><<<grid_for(n), 256, 0, as_stream(stream)>>>(op, pa, pb, po, l, n);
  });
  check_last_error("cuda::binary");
}

void unary(int op, const Tensor& x, Tensor& out, void* stream) {
  check_map_operands("cuda::unary", x, out, nullptr);
  LZ_CHECK(op >= kExp && op <= kAbs, "cuda::unary: unknown op ", op);
  if (x.numel() == 0) return;
  visit_storage(x.dtype(), "cuda::unary", [&](auto z) {
    launch_map<decltype(z)>(0, op, x, nullptr, out, 0.f, 0.f, stream);
  });
  check_last_error("cuda::unary");
}

void unary_backward(int op, const Tensor& x, const Tensor& dy, Tensor& dx, void* stream) {
  check_map_operands("cuda::unary_backward", x, dx, &dy);
  LZ_CHECK(op >= kExp && op <= kAbs, "cuda::unary_backward: unknown op ", op);
  if (x.numel() == 0) return;
  visit_storage(x.dtype(), "cuda::unary_backward", [&](auto z) {
    launch_map<decltype(z)>(1, op, x, &dy, dx, 0.f, 0.f, stream);
  });
  check_last_error("cuda::unary_backward");
}

void affine(const Tensor& x, Tensor& out, double alpha, double beta, void* stream) {
  check_map_operands("cuda::affine", x, out, nullptr);
  if (x.numel() == 0) return;
  visit_storage(x.dtype(), "cuda::affine", [&](auto z) {
    launch_map<decltype(z)>(2, 0, x, nullptr, out, static_cast<float>(alpha),
                            static_cast<float>(beta), stream);
  });
  check_last_error("cuda::affine");
}

}  // namespace lizard::cuda
