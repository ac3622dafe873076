// RMSNorm forward and backward. x viewed as [N, D] rows; one block per row (rows are a few
// thousand wide, so a block streams a row with coalesced loads and reduces in shared memory).
// The weight gradient is a column sum over N: per-block partial sums over a fixed slice of
// rows, then an ordered sum of the partials, so dw is deterministic without atomics.
#include <type_traits>

#include "kernel_util.cuh"
#include "lizard/cuda/rmsnorm.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerPart = 64;  // rows per dw partial: enough work per block, few partials

// Row loops over d: with kVec (D a multiple of the 16-byte pack width of T and the row
// operands 16-byte aligned: `vec_rows`) a thread takes whole packs of x / dy / y / dx, the
// weight read element by element (small, cached); otherwise one element at a time. Element
// loads of 2-byte bf16 ran these kernels at a quarter of HBM speed.
template <bool kVec, class T, class F>
__device__ __forceinline__ void for_row(int64_t D, F&& f) {
  if constexpr (kVec) {
    constexpr int N = Pack<T>::N;
    for (int64_t d = int64_t(threadIdx.x) * N; d < D; d += int64_t(blockDim.x) * N)
      f(d, std::integral_constant<int, N>{});
  } else {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) f(d, std::integral_constant<int, 1>{});
  }
}

/// Elements d .. d + K - 1 of p as floats (K = 1, or the pack width: one 16-byte load).
template <int K, class T>
__device__ __forceinline__ void load_run(const T* p, int64_t d, float (&o)[K]) {
  if constexpr (K > 1) {
    static_assert(K == Pack<T>::N, "a run is one element or one pack");
    const Pack<T> v = *reinterpret_cast<const Pack<T>*>(p + d);
#pragma unroll
    for (int j = 0; j < K; ++j) o[j] = load_f(v.v[j]);
  } else {
    o[0] = load_f(p[d]);
  }
}
template <int K, class T>
__device__ __forceinline__ void store_run(T* p, int64_t d, const float (&o)[K]) {
  if constexpr (K > 1) {
    Pack<T> v;
#pragma unroll
    for (int j = 0; j < K; ++j) v.v[j] = Store<T>::from(o[j]);
    *reinterpret_cast<Pack<T>*>(p + d) = v;
  } else {
    p[d] = Store<T>::from(o[0]);
  }
}

// y[n] = x[n] * rstd[n] * w; rstd[n] = 1/sqrt(mean(x[n]^2) + eps).
template <bool kVec, class T, class W>
__global__ void rmsnorm_fwd_kernel(const T* __restrict__ x, const W* __restrict__ w,
                                   T* __restrict__ y, float* __restrict__ rstd, int64_t N,
                                   int64_t D, float eps) {
  pdl_enter();
  __shared__ float shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * D;
    float ss = 0.f;
    for_row<kVec, T>(D, [&](int64_t d, auto k) {
      constexpr int K = decltype(k)::value;
      float v[K];
      load_run(xr, d, v);
#pragma unroll
      for (int j = 0; j < K; ++j) ss += v[j] * v[j];
    });
    ss = block_sum(ss, shm);
    const float r = rsqrtf(ss / static_cast<float>(D) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    T* yr = y + n * D;
    for_row<kVec, T>(D, [&](int64_t d, auto k) {
      constexpr int K = decltype(k)::value;
      float v[K];
      load_run(xr, d, v);
#pragma unroll
      for (int j = 0; j < K; ++j) v[j] = v[j] * r * load_f(w[d + j]);
      store_run(yr, d, v);
    });
  }
}

// dx[n] = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)) [+ acc[n]]. acc (may be null) is the
// running gradient sum of x the autograd engine holds (the residual stream's share): added in
// fp32 before dx's one rounding, so no separate add kernel reads dx back (one read of acc
// instead of two reads and a write).
template <bool kVec, class T, class W>
__global__ void rmsnorm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                  const W* __restrict__ w, const float* __restrict__ rstd,
                                  const T* __restrict__ acc, T* __restrict__ dx, int64_t N,
                                  int64_t D) {
  pdl_enter();
  __shared__ float shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * D;
    const T* gr = dy + n * D;
    float dot = 0.f;
    for_row<kVec, T>(D, [&](int64_t d, auto k) {
      constexpr int K = decltype(k)::value;
      float xv[K], gv[K];
      load_run(xr, d, xv);
      load_run(gr, d, gv);
#pragma unroll
      for (int j = 0; j < K; ++j) dot += gv[j] * load_f(w[d + j]) * xv[j];
    });
    dot = block_sum(dot, shm);
    const float r = rstd[n];
    const float c = r * r * dot / static_cast<float>(D);
    T* dxr = dx + n * D;
    const T* ar = acc ? acc + n * D : nullptr;
    for_row<kVec, T>(D, [&](int64_t d, auto k) {
      constexpr int K = decltype(k)::value;
      float xv[K], gv[K];
      load_run(xr, d, xv);
      load_run(gr, d, gv);
#pragma unroll
      for (int j = 0; j < K; ++j) xv[j] = r * (load_f(w[d + j]) * gv[j] - xv[j] * c);
      if (ar) {  // uniform over the launch: no divergence
        float av[K];
        load_run(ar, d, av);
#pragma unroll
        for (int j = 0; j < K; ++j) xv[j] += av[j];
      }
      store_run(dxr, d, xv);
    });
  }
}

// partial[p, d] = sum over rows p*rows_per_part .. +rows_per_part of dy*x*rstd.
// One thread per column d (consecutive threads, consecutive columns: coalesced).
template <class T>
__global__ void rmsnorm_dw_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const float* __restrict__ rstd, float* __restrict__ partial,
                                          int64_t N, int64_t D, int64_t rows_per_part) {
  pdl_enter();
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t p = blockIdx.y;
  if (d >= D) return;
  const int64_t n0 = p * rows_per_part, n1 = min(N, n0 + rows_per_part);
  float acc = 0.f;
  for (int64_t n = n0; n < n1; ++n) acc += load_f(dy[n * D + d]) * load_f(x[n * D + d]) * rstd[n];
  partial[p * D + d] = acc;
}

__global__ void column_sum_kernel(const float* __restrict__ partial, float* __restrict__ out,
                                  int64_t parts, int64_t D) {
  pdl_enter();
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  float acc = 0.f;
  for (int64_t p = 0; p < parts; ++p) acc += partial[p * D + d];
  out[d] = acc;
}

/// Whether rows of width D can be walked in 16-byte packs of T: D a multiple of the pack width
/// and every row operand's base 16-byte aligned (so is every row start).
template <class T>
bool vec_rows(int64_t D, std::initializer_list<const void*> ps) {
  return D % Pack<T>::N == 0 && all_aligned16(ps);
}

int row_blocks(int64_t N) { return static_cast<int>(std::min<int64_t>(N, 65535 * 16)); }

void check_rms(const char* op, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  require_contiguous(x, op, "x");
  require_contiguous(w, op, "w");
  require_contiguous(rstd, op, "rstd");
  const int64_t D = x.size(-1);
  LZ_CHECK(w.numel() == D, op, ": weight ", w.desc(), " does not match the last dim of ", x.desc());
  LZ_CHECK(rstd.dtype() == DType::F32 && rstd.numel() == x.numel() / std::max<int64_t>(D, 1), op,
           ": rstd must be f32 with one value per row of ", x.desc(), ", got ", rstd.desc());
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd,
                     void* stream) {
  check_rms("cuda::rmsnorm_forward", x, w, rstd);
  require_contiguous(y, "cuda::rmsnorm_forward", "y");
  LZ_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "cuda::rmsnorm_forward: y ", y.desc(),
           " vs x ", x.desc());
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (N == 0) return;
  visit_storage(x.dtype(), "cuda::rmsnorm_forward", [&](auto zx) {
    using T = decltype(zx);
    visit_storage(w.dtype(), "cuda::rmsnorm_forward weight", [&](auto zw) {
      using W = decltype(zw);
      auto launch = [&](auto vec) {
        pdl_launch("rmsnorm", rmsnorm_fwd_kernel<decltype(vec)::value, T, W>, row_blocks(N),
                   kThreads, 0, as_stream(stream), static_cast<const T*>(x.raw()),
                   static_cast<const W*>(w.raw()), static_cast<T*>(y.raw()), rstd.data<float>(), N,
                   D, static_cast<float>(eps));
      };
      if (vec_rows<T>(D, {x.raw(), y.raw()})) launch(std::true_type{});
      else launch(std::false_type{});
    });
  });
  check_last_error("cuda::rmsnorm_forward");
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw, void* stream, const Tensor& acc) {
  const char* op = "cuda::rmsnorm_backward";
  check_rms(op, x, w, rstd);
  require_contiguous(dy, op, "dy");
  LZ_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype(), op, ": dy ", dy.desc(),
           " must match x ", x.desc());
  if (dx.defined()) {
    require_contiguous(dx, op, "dx");
    LZ_CHECK(dx.shape() == x.shape() && dx.dtype() == x.dtype(), op, ": dx ", dx.desc(),
             " must match x ", x.desc());
  }
  if (acc.defined()) {
    LZ_CHECK(dx.defined(), op, ": acc ", acc.desc(), " given without dx");
    require_contiguous(acc, op, "acc");
    LZ_CHECK(acc.shape() == x.shape() && acc.dtype() == x.dtype(), op, ": acc ", acc.desc(),
             " must match x ", x.desc());
    LZ_CHECK(acc.raw() != dx.raw(), op, ": acc must not be dx (it is read while dx is written)");
  }
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (dw.defined()) {
    require_contiguous(dw, op, "dw");
    LZ_CHECK(dw.dtype() == DType::F32 && dw.numel() == D, op, ": dw must be f32 [", D, "], got ",
             dw.desc());
  }
  if (D == 0) return;
  if (N == 0) {
    if (dw.defined()) dw.fill_(0.0);
    return;
  }
  // kRowsPerPart rows per partial sum, more when N would need more than the grid's 65535
  // y-blocks (4M+ rows: long sequences x large micro-batches); fixed order either way.
  const int64_t rows_per_part = std::max<int64_t>(kRowsPerPart, (N + 65534) / 65535);
  const int64_t parts = (N + rows_per_part - 1) / rows_per_part;
  Tensor partial;
  if (dw.defined()) partial = Tensor::empty({parts, D}, DType::F32, x.device());
  visit_storage(x.dtype(), op, [&](auto zx) {
    using T = decltype(zx);
    visit_storage(w.dtype(), "cuda::rmsnorm_backward weight", [&](auto zw) {
      using W = decltype(zw);
      if (!dx.defined()) return;
      const T* pa = acc.defined() ? static_cast<const T*>(acc.raw()) : nullptr;
      auto launch = [&](auto vec) {
        pdl_launch("rmsnorm dx", rmsnorm_dx_kernel<decltype(vec)::value, T, W>, row_blocks(N),
                   kThreads, 0, as_stream(stream), static_cast<const T*>(dy.raw()),
                   static_cast<const T*>(x.raw()), static_cast<const W*>(w.raw()),
                   rstd.data<float>(), pa, static_cast<T*>(dx.raw()), N, D);
      };
      // A null acc is aligned (address 0): the pack test covers it either way.
      if (vec_rows<T>(D, {dy.raw(), x.raw(), dx.raw(), pa})) launch(std::true_type{});
      else launch(std::false_type{});
    });
    if (dw.defined()) {
      dim3 grid(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(parts));
      rmsnorm_dw_partial_kernel<T><<<grid, 128, 0, as_stream(stream)>>>(
          static_cast<const T*>(dy.raw()), static_cast<const T*>(x.raw()), rstd.data<float>(),
          partial.data<float>(), N, D, rows_per_part);
      column_sum_kernel<<<static_cast<unsigned>((D + 255) / 256), 256, 0, as_stream(stream)>>>(
          partial.data<float>(), dw.data<float>(), parts, D);
    }
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
