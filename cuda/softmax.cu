// Row softmax / log-softmax over the last dim of [N, C], and their backward. One block per
// row; the forward finds the row max and the sum of exponentials in one pass (online: each
// thread rescales its running sum when its max grows), then writes in a second pass.
#include "kernel_util.cuh"
#include "lizard/cuda/softmax.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void softmax_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t N,
                                   int64_t C, bool log_out) {
  __shared__ float shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* xr = x + n * C;
    float m = -INFINITY, s = 0.f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = load_f(xr[c]);
      if (v > m) {
        s = s * expf(m - v) + 1.f;  // expf(-inf) = 0 on the first element
        m = v;
      } else {
        s += expf(v - m);
      }
    }
    const float M = block_max(m, shm);
    const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M), shm);
    const float lse = M + logf(S), inv = 1.f / S;
    T* yr = y + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = load_f(xr[c]);
      yr[c] = Store<T>::from(log_out ? v - lse : expf(v - M) * inv);
    }
  }
}

// softmax: dx = y (dy - sum(dy y)); log-softmax: dx = dy - exp(y) sum(dy).
// The row sum is accumulated and subtracted in double: when one probability is near 1,
// dy_i - sum(dy y) cancels almost completely, and an f32 sum would leave only its own
// rounding error (relative error 1e-4 on a 7-wide row of scores in +-30, measured).
template <class T>
__global__ void softmax_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ y,
                                   T* __restrict__ dx, int64_t N, int64_t C, bool log_out) {
  __shared__ double shm[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* gr = dy + n * C;
    const T* yr = y + n * C;
    double acc = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      acc += log_out ? double(load_f(gr[c])) : double(load_f(gr[c])) * double(load_f(yr[c]));
    acc = block_sum_f64(acc, shm);
    T* dr = dx + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const double g = load_f(gr[c]), yv = load_f(yr[c]);
      dr[c] = Store<T>::from(static_cast<float>(log_out ? g - exp(yv) * acc : yv * (g - acc)));
    }
  }
}

int row_blocks(int64_t N) { return static_cast<int>(std::min<int64_t>(N, 65535 * 16)); }

}  // namespace

void softmax_forward(const Tensor& x, bool log, Tensor& y, void* stream) {
  require_contiguous(x, "cuda::softmax_forward", "x");
  require_contiguous(y, "cuda::softmax_forward", "y");
  LZ_CHECK(x.dim() >= 1 && y.shape() == x.shape() && y.dtype() == x.dtype(),
           "cuda::softmax_forward: y ", y.desc(), " vs x ", x.desc());
  const int64_t C = x.size(-1), N = C > 0 ? x.numel() / C : 0;
  if (N == 0) return;
  visit_storage(x.dtype(), "cuda::softmax_forward", [&](auto z) {
    using T = decltype(z);
    softmax_fwd_kernel<T><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
        static_cast<const T*>(x.raw()), static_cast<T*>(y.raw()), N, C, log);
  });
  check_last_error("cuda::softmax_forward");
}

void softmax_backward(const Tensor& dy, const Tensor& y, bool log, Tensor& dx, void* stream) {
  const char* op = "cuda::softmax_backward";
  require_contiguous(dy, op, "dy");
  require_contiguous(y, op, "y");
  require_contiguous(dx, op, "dx");
  LZ_CHECK(y.dim() >= 1 && dy.shape() == y.shape() && dx.shape() == y.shape() &&
               dy.dtype() == y.dtype() && dx.dtype() == y.dtype(),
           op, ": dy ", dy.desc(), ", dx ", dx.desc(), " vs y ", y.desc());
  const int64_t C = y.size(-1), N = C > 0 ? y.numel() / C : 0;
  if (N == 0) return;
  visit_storage(y.dtype(), op, [&](auto z) {
    using T = decltype(z);
    softmax_bwd_kernel<T><<<row_blocks(N), kThreads, 0, as_stream(stream)>>>(
        static_cast<const T*>(dy.raw()), static_cast<const T*>(y.raw()), static_cast<T*>(dx.raw()),
        N, C, log);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
