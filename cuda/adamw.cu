// Fused AdamW step (fp32 master weights and moments, bf16 or f32 params/grads) and the
// deterministic global sum of squares used for gradient-norm clipping. The clip scale is read
// from device memory, so clipping never waits on the host.
#include <cmath>

#include "kernel_util.cuh"
#include "lizard/cuda/adamw.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksPerTensor = 1024;

template <class P, class G>
__global__ void adamw_kernel(P* param, float* master, float* __restrict__ m, float* __restrict__ v,
                             const G* __restrict__ g, const float* __restrict__ clip_scale,
                             float lr, float b1, float b2, float eps, float wd, float bc1,
                             float bc2, int64_t n) {
  const float cs = *clip_scale;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = load_f(g[i]) * cs;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float w = master[i];
    w -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * w);
    master[i] = w;
    param[i] = Store<P>::from(w);  // param may alias master (f32): same thread, same element
  }
}

// partial[block0 + b] = sum of squares of the elements block b of this launch covers. The
// block count depends only on n, so the partition (and the result) is fixed.
template <class T>
__global__ void sum_squares_partial_kernel(const T* __restrict__ x, int64_t n,
                                           float* __restrict__ partial) {
  __shared__ float shm[32];
  float acc = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = load_f(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc, shm);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_partials_kernel(const float* __restrict__ partial, int64_t n, float* out) {
  __shared__ float shm[32];
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, shm);
  if (threadIdx.x == 0) *out = acc;
}

int blocks_of(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads * 4 - 1) / (kThreads * 4), kMaxBlocksPerTensor));
}

}  // namespace

void sum_squares(const std::vector<Tensor>& grads, Tensor& out, void* stream) {
  const char* op = "cuda::sum_squares";
  require_contiguous(out, op, "out");
  LZ_CHECK(out.dtype() == DType::F32 && out.numel() == 1, op, ": out must be f32 [1], got ", out.desc());
  int64_t total = 0;
  for (const Tensor& g : grads) {
    require_contiguous(g, op, "gradient");
    if (g.numel() > 0) total += blocks_of(g.numel());
  }
  if (total == 0) {
    out.fill_(0.0);
    return;
  }
  Tensor partial = Tensor::empty({total}, DType::F32, out.device());
  int64_t at = 0;
  for (const Tensor& g : grads) {
    if (g.numel() == 0) continue;
    const int b = blocks_of(g.numel());
    visit_storage(g.dtype(), op, [&](auto z) {
      using T = decltype(z);
      sum_squares_partial_kernel<T><<<b, kThreads, 0, as_stream(stream)>>>(
          static_cast<const T*>(g.raw()), g.numel(), partial.data<float>() + at);
    });
    at += b;
  }
  sum_partials_kernel<<<1, 1024, 0, as_stream(stream)>>>(partial.data<float>(), total, out.data<float>());
  check_last_error(op);
}

void adamw_step(Tensor& param, Tensor& master, Tensor& m, Tensor& v, const Tensor& g,
                const Tensor& clip_scale, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step, void* stream) {
  const char* op = "cuda::adamw_step";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &master, &m, &v, &g})
    require_contiguous(*t, op, "operand");
  require_contiguous(clip_scale, op, "clip_scale");
  const int64_t n = master.numel();
  LZ_CHECK(param.numel() == n && m.numel() == n && v.numel() == n && g.numel() == n, op,
           ": sizes differ: param ", param.desc(), ", master ", master.desc(), ", m ", m.desc(),
           ", v ", v.desc(), ", g ", g.desc());
  LZ_CHECK(master.dtype() == DType::F32 && m.dtype() == DType::F32 && v.dtype() == DType::F32, op,
           ": master, m, v must be f32");
  LZ_CHECK(clip_scale.dtype() == DType::F32 && clip_scale.numel() == 1, op,
           ": clip_scale must be f32 [1], got ", clip_scale.desc());
  LZ_CHECK(step >= 1, op, ": step counts from 1, got ", step);
  if (n == 0) return;
  const float bc1 = static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(step)));
  const float bc2 = static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(step)));
  visit_storage(param.dtype(), op, [&](auto zp) {
    using P = decltype(zp);
    visit_storage(g.dtype(), op, [&](auto zg) {
      using G = decltype(zg);
      adamw_kernel<P, G><<<grid_for(n), kThreads, 0, as_stream(stream)>>>(
          static_cast<P*>(param.raw()), master.data<float>(), m.data<float>(), v.data<float>(),
          static_cast<const G*>(g.raw()), clip_scale.data<float>(), static_cast<float>(lr),
          static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(eps),
          static_cast<float>(weight_decay), bc1, bc2, n);
    });
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
