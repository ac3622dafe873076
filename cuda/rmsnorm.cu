// RMSNorm forward and backward. x viewed as [N, D] rows; one block per row (rows are a few
// thousand wide, so a block streams a row with coalesced loads and reduces in shared memory).
// The weight gradient is a column sum over N: per-block partial sums over a fixed slice of
// rows, then an ordered sum of the partials, so dw is deterministic without atomics.
#include "kernel_util.cuh"
#include "lizard/cuda/rmsnorm.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerPart = 64;  // rows per dw partial: enough work per block, few partials

// y[n] = x[n] * rstd[n] * w; rstd[n] = 1/sqrt(mean(x[n]^2) + eps).
template <class T, class W>
__global__ void rmsnorm_fwd_kernel(const T* __restrict__ x, const W* __restrict__ w,
                                   T* __restrict__ y, float* __restrict__ rstd, int64_t N,
                                   int64_t D, float eps) {
  __shared__ float shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * D;
    float ss = 0.f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const float v = load_f(xr[d]);
      ss += v * v;
    }
    ss = block_sum(ss, shm);
    const float r = rsqrtf(ss / static_cast<float>(D) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    T* yr = y + n * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      yr[d] = Store<T>::from(load_f(xr[d]) * r * load_f(w[d]));
  }
}

// dx[n] = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)).
template <class T, class W>
__global__ void rmsnorm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                  const W* __restrict__ w, const float* __restrict__ rstd,
                                  T* __restrict__ dx, int64_t N, int64_t D) {
  __shared__ float shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * D;
    const T* gr = dy + n * D;
    float dot = 0.f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      dot += load_f(gr[d]) * load_f(w[d]) * load_f(xr[d]);
    dot = block_sum(dot, shm);
    const float r = rstd[n];
    const float c = r * r * dot / static_cast<float>(D);
    T* dxr = dx + n * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
      dxr[d] = Store<T>::from(r * (load_f(w[d]) * load_f(gr[d]) - load_f(xr[d]) * c));
  }
}

// partial[p, d] = sum over rows p*rows_per_part .. +rows_per_part of dy*x*rstd.
// One thread per column d (consecutive threads, consecutive columns: coalesced).
template <class T>
__global__ void rmsnorm_dw_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                          const float* __restrict__ rstd, float* __restrict__ partial,
                                          int64_t N, int64_t D, int64_t rows_per_part) {
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
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  float acc = 0.f;
  for (int64_t p = 0; p < parts; ++p) acc += partial[p * D + d];
  out[d] = acc;
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
      rmsnorm_fwd_kernel<T, W><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
          static_cast<const T*>(x.raw()), static_cast<const W*>(w.raw()), static_cast<T*>(y.raw()),
          rstd.data<float>(), N, D, static_cast<float>(eps));
    });
  });
  check_last_error("cuda::rmsnorm_forward");
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw, void* stream) {
  const char* op = "cuda::rmsnorm_backward";
  check_rms(op, x, w, rstd);
  require_contiguous(dy, op, "dy");
  require_contiguous(dx, op, "dx");
  LZ_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype() && dx.shape() == x.shape() &&
               dx.dtype() == x.dtype(),
           op, ": dy ", dy.desc(), ", dx ", dx.desc(), " must match x ", x.desc());
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
      rmsnorm_dx_kernel<T, W><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
          static_cast<const T*>(dy.raw()), static_cast<const T*>(x.raw()),
          static_cast<const W*>(w.raw()), rstd.data<float>(), static_cast<T*>(dx.raw()), N, D);
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
