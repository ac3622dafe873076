// Timing harness for `lizard bench ops` (see bench.h). Host code that launches the op
// launchers; lives in cuda/ because it only exists in CUDA builds.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "kernel_util.cuh"
#include "lizard/cuda/adamw.h"
#include "lizard/cuda/bench.h"
#include "lizard/cuda/cross_entropy.h"
#include "lizard/cuda/elementwise.h"
#include "lizard/cuda/embedding.h"
#include "lizard/cuda/flash_attention.h"
#include "lizard/cuda/gemm.h"
#include "lizard/cuda/rmsnorm.h"
#include "lizard/cuda/rope.h"
#include "lizard/cuda/softmax.h"
#include "lizard/cuda/swiglu.h"

namespace lizard::cuda {
namespace {

struct Peaks {
  double gbps, tflops;
};

// Nominal datasheet peaks (dense bf16 tensor rate, HBM bandwidth) by card name; a lead for
// "how far from the floor", not a measured ceiling.
Peaks peaks_of(const std::string& name) {
  if (name.find("H200") != std::string::npos) return {4800, 989};
  if (name.find("H100") != std::string::npos && name.find("PCIe") != std::string::npos) return {2000, 756};
  if (name.find("H100") != std::string::npos) return {3350, 989};
  if (name.find("A100") != std::string::npos) return {2039, 312};
  return {3350, 989};
}

// Median milliseconds of `iters` runs of f after `warm` warm-up runs, timed by events.
double time_ms(const std::function<void()>& f, void* stream, int iters, int warm = 3) {
  auto s = as_stream(stream);
  for (int i = 0; i < warm; ++i) f();
  std::vector<double> ms;
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(a, s);
    f();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  check_last_error("bench");
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor rnd(const Shape& s, DType dt, int device, uint64_t seed, double lo = -1, double hi = 1) {
  return Tensor::uniform(s, lo, hi, seed, 0, dt, Device::cuda(device));
}

std::string shape_of(std::initializer_list<int64_t> dims) {
  std::ostringstream os;
  bool first = true;
  for (int64_t d : dims) {
    os << (first ? "" : "x") << d;
    first = false;
  }
  return os.str();
}

}  // namespace

std::vector<BenchRow> bench_ops(int device, int iters, bool quick) {
  Context& ctx = context(device);
  const Peaks pk = peaks_of(ctx.name);
  void* st = ctx.stream;
  std::vector<BenchRow> rows;
  auto add = [&](const std::string& op, const std::string& shape, const char* dt, double ms,
                 double bytes, double flops) {
    BenchRow r{op, shape, dt, ms, bytes / (ms * 1e-3) / 1e9, flops / (ms * 1e-3) / 1e12, 0};
    r.frac_of_peak = std::max(r.gbps / pk.gbps, r.tflops / pk.tflops);
    rows.push_back(r);
  };
  const int64_t N = quick ? 1024 : 16384, Dm = 4096, F = quick ? 2048 : 14336;

  {  // GEMM: the MLP up projection of Llama-3-8B, [N, 4096] @ [4096, 14336]^T (weights as [out, in]).
    Tensor a = rnd({N, Dm}, DType::BF16, device, 1), w = rnd({F, Dm}, DType::BF16, device, 2);
    Tensor out = Tensor::empty({N, F}, DType::BF16, Device::cuda(device));
    const double ms = time_ms([&] { gemm_batched(a, w, out, false, true, {}, ctx); }, st, iters);
    add("gemm", shape_of({N, Dm, F}), "bf16", ms, 2.0 * (N * Dm + F * Dm + N * F), 2.0 * N * Dm * F);
  }
  {
    Tensor x = rnd({N, Dm}, DType::BF16, device, 3), w = rnd({Dm}, DType::BF16, device, 4, 0.5, 1.5);
    Tensor y = Tensor::empty({N, Dm}, DType::BF16, Device::cuda(device));
    Tensor rs = Tensor::empty({N}, DType::F32, Device::cuda(device));
    double ms = time_ms([&] { rmsnorm_forward(x, w, 1e-5, y, rs, st); }, st, iters);
    add("rmsnorm_fwd", shape_of({N, Dm}), "bf16", ms, 2.0 * 2 * N * Dm, 0);
    Tensor dx = Tensor::empty({N, Dm}, DType::BF16, Device::cuda(device));
    Tensor dw = Tensor::empty({Dm}, DType::F32, Device::cuda(device));
    ms = time_ms([&] { rmsnorm_backward(y, x, w, rs, dx, dw, st); }, st, iters);
    add("rmsnorm_bwd", shape_of({N, Dm}), "bf16", ms, 2.0 * 3 * N * Dm, 0);
  }
  {
    const int64_t B = quick ? 1 : 8, T = 2048, H = 32, D = 128;
    Tensor x = rnd({B, T, H, D}, DType::BF16, device, 5), y = Tensor::empty({B, T, H, D}, DType::BF16, Device::cuda(device));
    Tensor c = rnd({T, D / 2}, DType::F32, device, 6), s = rnd({T, D / 2}, DType::F32, device, 7);
    const double ms = time_ms([&] { rope_apply(x, c, s, false, y, st); }, st, iters);
    add("rope", shape_of({B, T, H, D}), "bf16", ms, 2.0 * 2 * B * T * H * D, 0);
  }
  {
    Tensor g = rnd({N, F}, DType::BF16, device, 8), u = rnd({N, F}, DType::BF16, device, 9);
    Tensor y = Tensor::empty({N, F}, DType::BF16, Device::cuda(device));
    double ms = time_ms([&] { swiglu_forward(g, u, y, st); }, st, iters);
    add("swiglu_fwd", shape_of({N, F}), "bf16", ms, 2.0 * 3 * N * F, 0);
    Tensor dg = Tensor::empty({N, F}, DType::BF16, Device::cuda(device));
    Tensor du = Tensor::empty({N, F}, DType::BF16, Device::cuda(device));
    ms = time_ms([&] { swiglu_backward(y, g, u, dg, du, st); }, st, iters);
    add("swiglu_bwd", shape_of({N, F}), "bf16", ms, 2.0 * 5 * N * F, 0);
    ms = time_ms([&] { binary(0, g, u, y, st); }, st, iters);
    add("add", shape_of({N, F}), "bf16", ms, 2.0 * 3 * N * F, 0);
  }
  {  // Cross-entropy over the Llama-3 vocabulary.
    const int64_t R = quick ? 512 : 8192, V = 128256;
    Tensor logits = rnd({R, V}, DType::BF16, device, 10, -8, 8);
    std::vector<int32_t> tv(R);
    for (int64_t i = 0; i < R; ++i) tv[i] = int32_t((i * 7919) % V);
    Tensor tg = Tensor::from_data(tv, {R}).to(Device::cuda(device));
    Tensor loss = Tensor::empty({R}, DType::F32, Device::cuda(device)), lse = Tensor::empty({R}, DType::F32, Device::cuda(device));
    double ms = time_ms([&] { cross_entropy_forward(logits, tg, loss, lse, st); }, st, iters);
    add("cross_entropy_fwd", shape_of({R, V}), "bf16", ms, 2.0 * R * V, 0);
    Tensor dl = Tensor::empty({R, V}, DType::BF16, Device::cuda(device));
    ms = time_ms([&] { cross_entropy_backward(logits, tg, lse, 1.f / R, dl, st); }, st, iters);
    add("cross_entropy_bwd", shape_of({R, V}), "bf16", ms, 2.0 * 2 * R * V, 0);
    Tensor sm = Tensor::empty({R, V}, DType::BF16, Device::cuda(device));
    ms = time_ms([&] { softmax_forward(logits, false, sm, st); }, st, iters);
    add("softmax_fwd", shape_of({R, V}), "bf16", ms, 2.0 * 2 * R * V, 0);
  }
  {
    const int64_t V = 128256, R = quick ? 1024 : 16384;
    Tensor w = rnd({V, Dm}, DType::BF16, device, 11);
    std::vector<int32_t> iv(R);
    for (int64_t i = 0; i < R; ++i) iv[i] = int32_t((i * 104729) % V);
    Tensor ids = Tensor::from_data(iv, {R}).to(Device::cuda(device));
    Tensor out = Tensor::empty({R, Dm}, DType::BF16, Device::cuda(device));
    double ms = time_ms([&] { embedding_forward(w, ids, out, st); }, st, iters);
    add("embedding_fwd", shape_of({R, Dm}), "bf16", ms, 2.0 * 2 * R * Dm, 0);
    Tensor dw = Tensor::empty({V, Dm}, DType::F32, Device::cuda(device));
    ms = time_ms([&] { embedding_backward(out, ids, dw, st); }, st, iters);
    add("embedding_bwd", shape_of({R, Dm}), "bf16", ms, 2.0 * R * Dm + 4.0 * V * Dm, 0);
  }
  {  // AdamW over 64M parameters (bf16 params and grads, fp32 master and moments).
    const int64_t P = quick ? (1 << 20) : (64 << 20);
    Tensor p = rnd({P}, DType::BF16, device, 12), g = rnd({P}, DType::BF16, device, 13);
    Tensor mw = rnd({P}, DType::F32, device, 14), m = rnd({P}, DType::F32, device, 15);
    Tensor v = rnd({P}, DType::F32, device, 16, 0.001, 0.01);
    AdamWHyper h;
    h.lr = 1e-4;
    const std::vector<AdamWTensor> ts{{p, mw, m, v, g, 0.0}};
    double ms = time_ms([&] { adamw_step(ts, h, st); }, st, iters);
    add("adamw_step", shape_of({P}), "bf16/f32", ms, P * (2.0 + 2 + 3 * 4 * 2), 0);
    Tensor out = Tensor::empty({1}, DType::F32, Device::cuda(device));
    ms = time_ms([&] { sum_squares({g}, out, st); }, st, iters);
    add("sum_squares", shape_of({P}), "bf16", ms, 2.0 * P, 0);
  }
  {  // dtype conversion as Tensor::copy_ runs it: contiguous f32 -> bf16 (the attention
     // gradients' cast; flat vectorised kernel) and the same through a [B, T, H, D] ->
     // [B, H, T, D] transpose (general walk). 6 bytes per element either way.
    const int64_t B = quick ? 1 : 8, T = 2048, H = 32, D = 128, P = B * T * H * D;
    Tensor x = rnd({B, T, H, D}, DType::F32, device, 20);
    Tensor y = Tensor::empty({B, T, H, D}, DType::BF16, Device::cuda(device));
    double ms = time_ms([&] { y.copy_(x); }, st, iters);
    add("convert_f32_bf16", shape_of({P}), "f32->bf16", ms, 6.0 * P, 0);
    Tensor yt = Tensor::empty({B, H, T, D}, DType::BF16, Device::cuda(device));
    ms = time_ms([&] { yt.copy_(x.transpose(1, 2)); }, st, iters);
    add("convert_transpose_f32_bf16", shape_of({B, T, H, D}), "f32->bf16", ms, 6.0 * P, 0);
  }
  // Causal attention, H=32, Hkv=8, D=128 (the anchors' shapes).
  for (auto [B, T] : {std::pair<int64_t, int64_t>{8, 2048}, {2, 8192}}) {
    if (quick) { B = 1; T = 1024; }
    const int64_t H = 32, Hk = 8, D = 128;
    Tensor q = rnd({B, T, H, D}, DType::BF16, device, 17), k = rnd({B, T, Hk, D}, DType::BF16, device, 18);
    Tensor v = rnd({B, T, Hk, D}, DType::BF16, device, 19);
    Tensor o = Tensor::empty({B, T, H, D}, DType::BF16, Device::cuda(device));
    Tensor lse = Tensor::empty({B, H, T}, DType::F32, Device::cuda(device));
    const double scale = 1.0 / std::sqrt(double(D));
    const double fwd_flops = 4.0 * B * H * double(T) * T * D / 2;  // causal: half the square
    const double io = 2.0 * (2 * B * T * H * D + 2 * B * T * Hk * D);
    double ms = 0;
    for (int var = 0; var < flash_attention_forward_variant_count(); ++var) {
      ms = time_ms([&] { flash_attention_forward_variant(q, k, v, scale, 0, o, lse, var, st); },
                   st, iters);
      add(str_cat("flash_attention_fwd_v", var), shape_of({B, T, H, Hk, D}), "bf16", ms, io, fwd_flops);
    }
    ms = time_ms([&] { flash_attention_forward(q, k, v, scale, 0, o, lse, st); }, st, iters);
    add("flash_attention_fwd", shape_of({B, T, H, Hk, D}), "bf16", ms, io, fwd_flops);
    Tensor dq = Tensor::empty(q.shape(), DType::BF16, Device::cuda(device));
    Tensor dk = Tensor::empty(k.shape(), DType::BF16, Device::cuda(device));
    Tensor dv = Tensor::empty(v.shape(), DType::BF16, Device::cuda(device));
    // The backward does 2.5x the forward's matrix work (5 GEMM-like products per tile; our
    // split dq / dkdv kernels recompute S and dP once more, which is not counted).
    ms = time_ms([&] { flash_attention_backward(o, q, k, v, o, lse, scale, 0, dq, dk, dv, st); },
                 st, iters);
    add("flash_attention_bwd", shape_of({B, T, H, Hk, D}), "bf16", ms, 2 * io, 2.5 * fwd_flops);
    if (quick) break;
  }
  return rows;
}

std::string bench_rows_json(const std::vector<BenchRow>& rows, int device) {
  Context& ctx = context(device);
  const Peaks pk = peaks_of(ctx.name);
  std::ostringstream os;
  os << "{\"device\": \"" << ctx.name << "\", \"peak_gbps\": " << pk.gbps
     << ", \"peak_tflops\": " << pk.tflops << ", \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const BenchRow& r = rows[i];
    os << (i ? ",\n  " : "\n  ") << "{\"op\": \"" << r.op << "\", \"shape\": \"" << r.shape
       << "\", \"dtype\": \"" << r.dtype << "\", \"median_ms\": " << r.median_ms
       << ", \"gbps\": " << r.gbps << ", \"tflops\": " << r.tflops
       << ", \"frac_of_peak\": " << r.frac_of_peak << "}";
  }
  os << "\n]}";
  return os.str();
}

}  // namespace lizard::cuda
