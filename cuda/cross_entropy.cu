// Cross-entropy fused with log-softmax for large vocabularies (Llama-3: 128256). One block per
// row. Forward: one read of the logits, each thread keeping a running (max, sum of exp)
// pair, combined across the block; loss = lse - logit[target]. Backward: one read and one
// write, softmax recomputed from the saved lse. Nothing of size [N, V] in fp32 is ever
// materialised. Rows whose 16-byte alignment allows it are read with 16-byte packs.
#include "kernel_util.cuh"
#include "lizard/cuda/cross_entropy.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ void online_add(float v, float& m, float& s) {
  if (v > m) {
    s = s * expf(m - v) + 1.f;
    m = v;
  } else {
    s += expf(v - m);
  }
}

template <class T>
__global__ void ce_fwd_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                              float* __restrict__ loss, float* __restrict__ lse_out, int64_t N,
                              int64_t V, bool vec) {
  __shared__ float shm[32];
  using P = Pack<T>;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * V;
    float m = -INFINITY, s = 0.f;
    int64_t done = 0;
    if (vec) {
      const int64_t np = V / P::N;
      for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
        const P p = reinterpret_cast<const P*>(row)[i];
#pragma unroll
        for (int j = 0; j < P::N; ++j) online_add(load_f(p.v[j]), m, s);
      }
      done = np * P::N;
    }
    for (int64_t c = done + threadIdx.x; c < V; c += blockDim.x) online_add(load_f(row[c]), m, s);
    const float M = block_max(m, shm);
    const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M), shm);
    if (threadIdx.x == 0) {
      const float lse = M + logf(S);
      lse_out[n] = lse;
      const int32_t t = targets[n];
      // An id outside the vocabulary yields NaN: loud, since a kernel cannot throw.
      loss[n] = t < 0 ? 0.f : (t < V ? lse - load_f(row[t]) : NAN);
    }
  }
}

// No __restrict__ on logits/dlogits: they may alias (each element is read, then written, by
// the same thread).
template <class T>
__global__ void ce_bwd_kernel(const T* logits, const int32_t* __restrict__ targets,
                              const float* __restrict__ lse, float scale, T* dlogits, int64_t N,
                              int64_t V, bool vec) {
  using P = Pack<T>;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * V;
    T* drow = dlogits + n * V;
    const int32_t t = targets[n];
    const float l = lse[n];
    const float sc = t < 0 ? 0.f : scale;
    int64_t done = 0;
    if (vec) {
      const int64_t np = V / P::N;
      for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
        const P p = reinterpret_cast<const P*>(row)[i];
        P o;
#pragma unroll
        for (int j = 0; j < P::N; ++j) {
          const int64_t c = i * P::N + j;
          o.v[j] = Store<T>::from(sc * (expf(load_f(p.v[j]) - l) - (c == t ? 1.f : 0.f)));
        }
        reinterpret_cast<P*>(drow)[i] = o;
      }
      done = np * P::N;
    }
    for (int64_t c = done + threadIdx.x; c < V; c += blockDim.x)
      drow[c] = Store<T>::from(sc * (expf(load_f(row[c]) - l) - (c == t ? 1.f : 0.f)));
  }
}

void check_ce(const char* op, const Tensor& logits, const Tensor& targets, const Tensor& lse) {
  require_contiguous(logits, op, "logits");
  require_contiguous(targets, op, "targets");
  require_contiguous(lse, op, "lse");
  LZ_CHECK(logits.dim() == 2, op, ": logits must be [N, V], got ", logits.desc());
  const int64_t N = logits.size(0);
  LZ_CHECK(targets.dtype() == DType::I32 && targets.numel() == N, op, ": targets must be i32 [",
           N, "], got ", targets.desc());
  LZ_CHECK(lse.dtype() == DType::F32 && lse.numel() == N, op, ": lse must be f32 [", N, "], got ",
           lse.desc());
}

int row_blocks(int64_t N) { return static_cast<int>(std::min<int64_t>(N, 65535 * 16)); }

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss_rows,
                           Tensor& lse, void* stream) {
  const char* op = "cuda::cross_entropy_forward";
  check_ce(op, logits, targets, lse);
  require_contiguous(loss_rows, op, "loss_rows");
  const int64_t N = logits.size(0), V = logits.size(1);
  LZ_CHECK(loss_rows.dtype() == DType::F32 && loss_rows.numel() == N, op,
           ": loss_rows must be f32 [", N, "], got ", loss_rows.desc());
  LZ_CHECK(V > 0, op, ": empty vocabulary in ", logits.desc());
  if (N == 0) return;
  visit_storage(logits.dtype(), op, [&](auto z) {
    using T = decltype(z);
    const bool vec = aligned16(logits.raw()) && (V * sizeof(T)) % 16 == 0;
    ce_fwd_kernel<T><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
        static_cast<const T*>(logits.raw()), targets.data<int32_t>(), loss_rows.data<float>(),
        lse.data<float>(), N, V, vec);
  });
  check_last_error(op);
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float scale, Tensor& dlogits, void* stream) {
  const char* op = "cuda::cross_entropy_backward";
  check_ce(op, logits, targets, lse);
  require_contiguous(dlogits, op, "dlogits");
  LZ_CHECK(dlogits.shape() == logits.shape() && dlogits.dtype() == logits.dtype(), op,
           ": dlogits ", dlogits.desc(), " vs logits ", logits.desc());
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0 || V == 0) return;
  visit_storage(logits.dtype(), op, [&](auto z) {
    using T = decltype(z);
    const bool vec = aligned16(logits.raw()) && aligned16(dlogits.raw()) && (V * sizeof(T)) % 16 == 0;
    ce_bwd_kernel<T><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
        static_cast<const T*>(logits.raw()), targets.data<int32_t>(), lse.data<float>(), scale,
        static_cast<T*>(dlogits.raw()), N, V, vec);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
