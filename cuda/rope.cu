// Rotary position embedding, Hugging Face rotate_half layout: dims i and i + D/2 form a pair
// rotated by the angle of (token position, i). One thread per pair; the cos/sin tables are
// f32 [T, D/2] (precomputed on the host side with llama3 scaling, so this kernel knows
// nothing of the scaling rule).
#include "kernel_util.cuh"
#include "lizard/cuda/rope.h"

namespace lizard::cuda {
namespace {

// x, y [B, T, H, D]; pair index p enumerates (b, t, h, i < D/2).
template <class T>
__global__ void rope_kernel(const T* x, const float* __restrict__ cos_t,
                            const float* __restrict__ sin_t, T* y, int64_t T_, int64_t H,
                            int64_t half, float sign, int64_t pairs) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % half;
    const int64_t row = p / half;  // (b, t, h)
    const int64_t t = (row / H) % T_;
    const float c = cos_t[t * half + i], s = sign * sin_t[t * half + i];
    const int64_t base = row * 2 * half;
    const float x1 = load_f(x[base + i]), x2 = load_f(x[base + i + half]);
    y[base + i] = Store<T>::from(x1 * c - x2 * s);
    y[base + i + half] = Store<T>::from(x2 * c + x1 * s);
  }
}

// The same rotation, Pack<T>::N consecutive pairs a thread (half a multiple of N, every
// pointer 16-byte aligned: the launch checks): 16-byte loads and stores of x and y, float4
// loads of the tables, one index computation per pack. One pair a thread with 2-byte accesses
// and three 64-bit div/mod ran the teacher's q at about 1.3 TB/s on an H200 (25 us a call at
// [1, 2048, 32, 128] bf16). The same expressions per element.
template <class T>
__global__ void rope_pack_kernel(const T* x, const float* __restrict__ cos_t,
                                 const float* __restrict__ sin_t, T* y, int64_t T_, int64_t H,
                                 int64_t half, float sign, int64_t packs) {
  using P = Pack<T>;
  constexpr int N = P::N;
  static_assert(N % 4 == 0, "float4 table loads");
  const int64_t per_row = half / N;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < packs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = (p % per_row) * N;
    const int64_t row = p / per_row;  // (b, t, h)
    const int64_t t = (row / H) % T_;
    const int64_t base = row * 2 * half;
    const P a = *reinterpret_cast<const P*>(x + base + i);
    const P b = *reinterpret_cast<const P*>(x + base + i + half);
    float cv[N], sv[N];
#pragma unroll
    for (int j = 0; j < N; j += 4) {
      const float4 c4 = __ldg(reinterpret_cast<const float4*>(cos_t + t * half + i + j));
      const float4 s4 = __ldg(reinterpret_cast<const float4*>(sin_t + t * half + i + j));
      cv[j] = c4.x, cv[j + 1] = c4.y, cv[j + 2] = c4.z, cv[j + 3] = c4.w;
      sv[j] = s4.x, sv[j + 1] = s4.y, sv[j + 2] = s4.z, sv[j + 3] = s4.w;
    }
    P oa, ob;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float c = cv[j], s = sign * sv[j];
      const float x1 = load_f(a.v[j]), x2 = load_f(b.v[j]);
      oa.v[j] = Store<T>::from(x1 * c - x2 * s);
      ob.v[j] = Store<T>::from(x2 * c + x1 * s);
    }
    *reinterpret_cast<P*>(y + base + i) = oa;
    *reinterpret_cast<P*>(y + base + i + half) = ob;
  }
}

}  // namespace

void rope_apply(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& y,
                void* stream) {
  const char* op = "cuda::rope_apply";
  require_contiguous(x, op, "x");
  require_contiguous(y, op, "y");
  require_contiguous(cos, op, "cos");
  require_contiguous(sin, op, "sin");
  LZ_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, op, ": x must be [B, T, H, D] with even D, got ",
           x.desc());
  LZ_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), op, ": y ", y.desc(), " vs x ", x.desc());
  const int64_t T_ = x.size(1), H = x.size(2), half = x.size(3) / 2;
  LZ_CHECK(cos.dtype() == DType::F32 && sin.dtype() == DType::F32 && cos.numel() == T_ * half &&
               sin.numel() == T_ * half,
           op, ": cos/sin must be f32 [", T_, ", ", half, "], got ", cos.desc(), ", ", sin.desc());
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  visit_storage(x.dtype(), op, [&](auto z) {
    using T = decltype(z);
    constexpr int N = Pack<T>::N;
    if (half % N == 0 && all_aligned16({x.raw(), y.raw(), cos.raw(), sin.raw()})) {
      const int64_t packs = pairs / N;
      rope_pack_kernel<T><<<grid_for(packs), 256, 0, as_stream(stream)>>>(
          static_cast<const T*>(x.raw()), cos.data<float>(), sin.data<float>(),
          static_cast<T*>(y.raw()), T_, H, half, inverse ? -1.f : 1.f, packs);
      return;
    }
    rope_kernel<T><<<grid_for(pairs), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(x.raw()), cos.data<float>(), sin.data<float>(),
        static_cast<T*>(y.raw()), T_, H, half, inverse ? -1.f : 1.f, pairs);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
