// Fused multi-tensor AdamW step (fp32 master weights and moments, bf16/f16/f32 params and
// grads) and the deterministic global sum of squares used for gradient-norm clipping.
//
// Both walk a list of tensors in one launch: the tensor descriptors travel in the kernel's
// parameters (CUDA 12.1+ allows 32,764 bytes of them on sm_70+), so a step costs no
// host-to-device copy. Each tensor owns a fixed run of the grid's blocks; a block finds its
// tensor by a binary search over the runs' first blocks, then grid-strides over that tensor
// alone exactly as a launch of its own with that many blocks would.
#include <cmath>
#include <type_traits>

#include "kernel_util.cuh"
#include "lizard/cuda/adamw.h"

namespace lizard::cuda {
namespace {

constexpr int kThreads = 256;
/// Tensors per launch: 256 AdamW descriptors are 16 KB of kernel parameters, and the 8B
/// LoRA step's 192 trainable tensors (or any model's few hundred) take one or two launches.
constexpr int kMaxTensors = 256;
/// Blocks one tensor's sum of squares is split into: a function of its size alone, so the
/// partial sums (and the f32 result) do not depend on the other tensors of the list.
constexpr int kMaxSumBlocks = 1024;
/// Blocks one tensor's AdamW update takes at most (one element per thread below that); the
/// update is element-wise, so this only sizes the grid.
constexpr int kMaxStepBlocks = 4096;

/// Storage type codes of the descriptors (a block branches on them uniformly).
enum : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

/// The code of a float dtype kernels accept (visit_storage's check and message otherwise).
int32_t storage_code(DType t, const char* op) {
  return visit_storage(t, op, [](auto z) -> int32_t {
    using T = decltype(z);
    return std::is_same_v<T, float> ? kF32 : std::is_same_v<T, bf16> ? kBF16 : kF16;
  });
}

/// f(T{}) with T the storage type of `code` (device side of visit_storage).
template <class F>
__device__ __forceinline__ void visit_code(int32_t code, F&& f) {
  if (code == kF32) f(float{});
  else if (code == kBF16) f(bf16{});
  else f(f16{});
}

struct SumSlot {
  const void* x;
  int64_t n;
  int32_t block0;   // first block of this tensor in its launch
  int32_t nblocks;  // its blocks: the grid-stride of its loop
  int32_t dtype;
};
struct SumBatch {
  SumSlot t[kMaxTensors];
  int32_t count;
};

struct StepSlot {
  void* param;  // may alias master (f32)
  float* master;
  float* m;
  float* v;
  const void* g;
  int64_t n;
  float wd;
  int32_t block0;
  int32_t nblocks;
  int32_t pdtype, gdtype;
};
struct StepBatch {
  StepSlot t[kMaxTensors];
  int32_t count;
};
static_assert(sizeof(StepBatch) + 64 <= 32764, "AdamW descriptors exceed the kernel parameter limit");
static_assert(sizeof(SumBatch) + 64 <= 32764, "sum-of-squares descriptors exceed the parameter limit");

struct StepScalars {
  float lr, b1, b2, eps, bc1, bc2, clip_scale;
};

/// The descriptor whose run of blocks holds this block (runs ascend and cover the grid).
template <class Batch>
__device__ __forceinline__ int slot_of(const Batch& b) {
  const int blk = static_cast<int>(blockIdx.x);
  int lo = 0, hi = b.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (b.t[mid].block0 <= blk) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <class T>
__device__ __forceinline__ float sum_squares_of(const SumSlot& s) {
  const T* __restrict__ x = static_cast<const T*>(s.x);
  float acc = 0.f;
  for (int64_t i = (int64_t(blockIdx.x) - s.block0) * blockDim.x + threadIdx.x; i < s.n;
       i += int64_t(s.nblocks) * blockDim.x) {
    const float v = load_f(x[i]);
    acc += v * v;
  }
  return acc;
}

// partial[blockIdx.x] = sum of squares of the elements this block's tensor gives it.
__global__ void __launch_bounds__(kThreads) sum_squares_partial_kernel(const SumBatch batch,
                                                                       float* __restrict__ partial) {
  __shared__ float shm[32];
  const SumSlot s = batch.t[slot_of(batch)];  // by value: a few param loads, no local copy
  float acc = 0.f;
  visit_code(s.dtype, [&](auto z) { acc = sum_squares_of<decltype(z)>(s); });
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

template <class P, class G>
__device__ __forceinline__ void adamw_of(const StepSlot& s, const StepScalars& c) {
  P* param = static_cast<P*>(s.param);
  float* master = s.master;
  float* __restrict__ m = s.m;
  float* __restrict__ v = s.v;
  const G* __restrict__ g = static_cast<const G*>(s.g);
  const float cs = c.clip_scale, b1 = c.b1, b2 = c.b2, lr = c.lr, wd = s.wd;
  for (int64_t i = (int64_t(blockIdx.x) - s.block0) * blockDim.x + threadIdx.x; i < s.n;
       i += int64_t(s.nblocks) * blockDim.x) {
    const float gi = load_f(g[i]) * cs;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float w = master[i];
    w -= lr * ((mi / c.bc1) / (sqrtf(vi / c.bc2) + c.eps) + wd * w);
    master[i] = w;
    param[i] = Store<P>::from(w);  // param may alias master (f32): same thread, same element
  }
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const StepBatch batch, const StepScalars c) {
  const StepSlot s = batch.t[slot_of(batch)];
  visit_code(s.pdtype, [&](auto zp) {
    visit_code(s.gdtype, [&](auto zg) { adamw_of<decltype(zp), decltype(zg)>(s, c); });
  });
}

int sum_blocks_of(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads * 4 - 1) / (kThreads * 4), kMaxSumBlocks));
}
int step_blocks_of(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxStepBlocks));
}

}  // namespace

void sum_squares(const std::vector<Tensor>& grads, Tensor& out, void* stream) {
  const char* op = "cuda::sum_squares";
  require_contiguous(out, op, "out");
  LZ_CHECK(out.dtype() == DType::F32 && out.numel() == 1, op, ": out must be f32 [1], got ", out.desc());
  int64_t total = 0;
  for (const Tensor& g : grads) {
    require_contiguous(g, op, "gradient");
    LZ_CHECK(g.device() == out.device(), op, ": gradient ", g.desc(), " is not on out's device ",
             out.desc());
    if (g.numel() > 0) total += sum_blocks_of(g.numel());
  }
  if (total == 0) {
    out.fill_(0.0);
    return;
  }
  Tensor partial = Tensor::empty({total}, DType::F32, out.device());
  // Launches of up to kMaxTensors tensors, each writing its blocks' partials after the
  // previous launch's: the partials sit in list order, as the sum below expects.
  SumBatch b{};
  int64_t at = 0;
  auto launch = [&] {
    if (b.count == 0) return;
    const SumSlot& last = b.t[b.count - 1];
    const int blocks = last.block0 + last.nblocks;
    sum_squares_partial_kernel<<<blocks, kThreads, 0, as_stream(stream)>>>(b, partial.data<float>() + at);
    at += blocks;
    b.count = 0;
  };
  for (const Tensor& g : grads) {
    if (g.numel() == 0) continue;
    if (b.count == kMaxTensors) launch();
    SumSlot& s = b.t[b.count];
    s.x = g.raw();
    s.n = g.numel();
    s.block0 = b.count == 0 ? 0 : b.t[b.count - 1].block0 + b.t[b.count - 1].nblocks;
    s.nblocks = sum_blocks_of(g.numel());
    s.dtype = storage_code(g.dtype(), op);
    ++b.count;
  }
  launch();
  sum_partials_kernel<<<1, 1024, 0, as_stream(stream)>>>(partial.data<float>(), total, out.data<float>());
  check_last_error(op);
}

void adamw_step(const std::vector<AdamWTensor>& ts, const AdamWHyper& h, void* stream) {
  const char* op = "cuda::adamw_step";
  LZ_CHECK(h.step >= 1, op, ": step counts from 1, got ", h.step);
  StepScalars c{};
  c.lr = static_cast<float>(h.lr);
  c.b1 = static_cast<float>(h.beta1);
  c.b2 = static_cast<float>(h.beta2);
  c.eps = static_cast<float>(h.eps);
  c.bc1 = static_cast<float>(1.0 - std::pow(h.beta1, static_cast<double>(h.step)));
  c.bc2 = static_cast<float>(1.0 - std::pow(h.beta2, static_cast<double>(h.step)));
  c.clip_scale = static_cast<float>(h.clip_scale);
  StepBatch b{};
  int64_t blocks = 0;
  auto launch = [&] {
    if (b.count == 0) return;
    adamw_kernel<<<static_cast<int>(blocks), kThreads, 0, as_stream(stream)>>>(b, c);
    b.count = 0;
    blocks = 0;
  };
  for (const AdamWTensor& t : ts) {
    for (const Tensor* x : {&t.param, &t.master, &t.m, &t.v, &t.grad}) require_contiguous(*x, op, "operand");
    const int64_t n = t.master.numel();
    LZ_CHECK(t.param.numel() == n && t.m.numel() == n && t.v.numel() == n && t.grad.numel() == n,
             op, ": sizes differ: param ", t.param.desc(), ", master ", t.master.desc(), ", m ",
             t.m.desc(), ", v ", t.v.desc(), ", g ", t.grad.desc());
    LZ_CHECK(t.master.dtype() == DType::F32 && t.m.dtype() == DType::F32 && t.v.dtype() == DType::F32,
             op, ": master, m, v must be f32, got ", t.master.desc(), ", ", t.m.desc(), ", ", t.v.desc());
    const Device d = t.master.device();
    LZ_CHECK(t.param.device() == d && t.m.device() == d && t.v.device() == d && t.grad.device() == d &&
                 (ts[0].master.device() == d),
             op, ": every operand must be on one GPU, got master ", t.master.desc(), " and ",
             ts[0].master.desc());
    if (n == 0) continue;
    if (b.count == kMaxTensors) launch();
    StepSlot& s = b.t[b.count];
    s.param = t.param.raw();
    s.master = t.master.data<float>();
    s.m = t.m.data<float>();
    s.v = t.v.data<float>();
    s.g = t.grad.raw();
    s.n = n;
    s.wd = static_cast<float>(t.weight_decay);
    s.block0 = static_cast<int32_t>(blocks);
    s.nblocks = step_blocks_of(n);
    s.pdtype = storage_code(t.param.dtype(), op);
    s.gdtype = storage_code(t.grad.dtype(), op);
    blocks += s.nblocks;
    ++b.count;
  }
  launch();
  check_last_error(op);
}

}  // namespace lizard::cuda
