// Lizard attention forward on the GPU (contract: include/lizard/cuda/lizard_attention.h).
// bf16 inputs of the shapes tc_supported() covers take the tensor-core global branch
// (cuda/lizard_attention_tc.cu); f32 inputs and other shapes take the f32 CUDA-core kernels
// below. Both write the same saved tensors, so one backward serves both. The chunked gate is
// log-space and chunk-local so every exponent is <= 0 (DESIGN.md section 3).
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "lizard/core/dispatch.h"

#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard_attention_common.cuh"
#include "lizard_attention_tc.cuh"
#include "side_stream.cuh"

namespace lizard::cuda {
using namespace lizard_detail;

namespace lizard_detail {

/// z[b,g,t] = x[b,t,:] . w_g[g,:] + b_g[g]; a = logsigmoid(z) = min(z,0) - log1p(exp(-|z|)).
/// One warp per (b, t, g). vec (bf16 x, dm a multiple of 8, x and w_g 16-byte aligned: the
/// launch decides): a lane takes 8 consecutive inputs a step, x in 16-byte and w_g in two
/// 16-byte loads (the 2-byte loads a lane of the scalar form ran at about 1.3 TB/s: 13 us at
/// B 1, T 2048, dm 4096 on an H200, on the forward's critical path). The f32 sum then adds in
/// another order (a few ulp of z).
template <class T>
__global__ void gate_fwd_kernel(const T* __restrict__ x, const float* __restrict__ wg,
                                const float* __restrict__ bg, float* __restrict__ z,
                                float* __restrict__ a, bool vec, Dims d) {
  pdl_enter();
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= int64_t(d.B) * d.T * d.Hg) return;
  const int g = warp % d.Hg;
  const int64_t bt = warp / d.Hg;
  const int b = bt / d.T, t = bt % d.T;
  float s = 0;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (vec) {
      const uint4* xr = reinterpret_cast<const uint4*>(x + bt * d.dm);
      const float4* wr = reinterpret_cast<const float4*>(wg + int64_t(g) * d.dm);
#pragma unroll 4
      for (int k = lane; k < d.dm / 8; k += 32) {
        const uint4 u = __ldg(xr + k);
        const float4 w0 = __ldg(wr + 2 * k), w1 = __ldg(wr + 2 * k + 1);
        const uint32_t uw[4] = {u.x, u.y, u.z, u.w};
        const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&uw[i]));
          s = __fmaf_rn(xv.x, wv[2 * i], s);
          s = __fmaf_rn(xv.y, wv[2 * i + 1], s);
        }
      }
    }
  }
  if (!vec)
    for (int j = lane; j < d.dm; j += 32) s += ld(x + bt * d.dm + j) * wg[int64_t(g) * d.dm + j];
  s = warp_sum(s);
  if (lane == 0) {
    const float zz = s + bg[g];
    const int64_t o = (int64_t(b) * d.Hg + g) * d.T + t;
    z[o] = zz;
    a[o] = fminf(zz, 0.f) - log1pf(expf(-fabsf(zz)));
  }
}

/// bl = chunk-local inclusive cumulative sum of a, in place. One warp per (b, g, chunk) (a
/// chunk is a warp's 32 lanes): a shuffle scan, 5 steps. One thread per chunk walked its 32
/// tokens as a chain of dependent global loads and stores (5 us at B 1, T 2048 on an H200, on
/// the forward's critical path). The partial sums then add in another order (a few ulp of bl).
__global__ void chunk_cumsum_kernel(float* __restrict__ a, Dims d) {
  pdl_enter();
  static_assert(kChunk == 32, "a chunk per warp, a token per lane");
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= int64_t(d.B) * d.Hg * d.NC) return;  // warp-uniform
  const int c = int(w % d.NC), t = c * kChunk + lane;
  float* row = a + (w / d.NC) * d.T;
  float v = t < d.T ? row[t] : 0.f;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  if (t < d.T) row[t] = v;
}

/// phi[b,h,t,:] = map(x[b,t,h/rep,:] W[h]) (width 2F) and u = x W when u != nullptr.
/// One CTA per (b, t, h); F is looped over the threads.
template <class T>
__global__ void features_kernel(const T* __restrict__ x, const float* __restrict__ W, int Hx,
                                float* __restrict__ phi, float* __restrict__ u_out, Dims d) {
  pdl_enter();
  extern __shared__ float sh[];  // u [F], red [blockDim]
  float* u = sh;
  float* red = sh + d.F;
  const int64_t blk = blockIdx.x;
  const int h = blk % d.H;
  const int64_t bt = blk / d.H;
  const int b = bt / d.T, t = bt % d.T;
  const T* xv = x + (bt * Hx + h / (d.H / Hx)) * d.D;
  const float* Wh = W + int64_t(h) * d.D * d.F;
  for (int f = threadIdx.x; f < d.F; f += blockDim.x) {
    float s = 0;
    for (int i = 0; i < d.D; ++i) s += ld(xv + i) * Wh[int64_t(i) * d.F + f];
    u[f] = s;
  }
  __syncthreads();
  auto reduce = [&](float v, bool is_max) { return block_reduce(v, is_max, red); };
  float* out = phi + ((int64_t(b) * d.H + h) * d.T + t) * 2 * d.F;
  if (d.act_exp) {
    float m = 0;
    for (int f = threadIdx.x; f < d.F; f += blockDim.x) m = fmaxf(m, fabsf(u[f]));
    m = reduce(m, true);
    for (int f = threadIdx.x; f < d.F; f += blockDim.x) {
      out[f] = expf(u[f] - m);
      out[d.F + f] = expf(-u[f] - m);
    }
  } else {
    float mp = -INFINITY, mn = -INFINITY;
    for (int f = threadIdx.x; f < d.F; f += blockDim.x) mp = fmaxf(mp, u[f]), mn = fmaxf(mn, -u[f]);
    mp = reduce(mp, true);
    mn = reduce(mn, true);
    float sp = 0, sn = 0;
    for (int f = threadIdx.x; f < d.F; f += blockDim.x) sp += expf(u[f] - mp), sn += expf(-u[f] - mn);
    sp = reduce(sp, false);
    sn = reduce(sn, false);
    for (int f = threadIdx.x; f < d.F; f += blockDim.x) {
      out[f] = expf(u[f] - mp) / sp;
      out[d.F + f] = expf(-u[f] - mn) / sn;
    }
  }
  if (u_out)
    for (int f = threadIdx.x; f < d.F; f += blockDim.x)
      u_out[((int64_t(b) * d.H + h) * d.T + t) * d.F + f] = u[f];
}

/// Global branch, forward. CTA (b*H + h, column block cb) walks the chunks in order with its
/// kCols-column slice of [S|z] (2F x kCols, f32) in shared memory, plus its own copy of z
/// (2F). Column D of [V|1] is the ones column (the denominator). Writes numden [B,H,T,D+1] =
/// [M | den] with M_t = num_t - den_t v_t = sum_s w_ts (v_s - v_t), accumulated term by term
/// so that the self term drops out exactly (g = v_t + M/den; the backward's self-pair gradient
/// -dg.M/den^2 is then exact even when the token attends almost only to itself: T = 1, gates
/// near 0). When states != nullptr, the slice of the state before every chunk goes to
/// states [B,H,NC,2F,D+1] (the per-chunk layout of state_index).
template <class T>
__global__ void __launch_bounds__(kGlobalThreads) global_fwd_kernel(
    const float* __restrict__ phiq, const float* __restrict__ phik, const T* __restrict__ v,
    const float* __restrict__ bl_all, float* __restrict__ numden, float* __restrict__ states,
    Dims d) {
  pdl_enter();
  extern __shared__ float sh[];
  const int F2 = 2 * d.F, D1 = d.D + 1;
  float* sq = sh;                      // [C, 2F]
  float* sk = sq + kChunk * F2;        // [C, 2F]
  float* S = sk + kChunk * F2;         // [2F, kCols]
  float* V = S + F2 * kCols;           // [C, kCols]
  float* P = V + kChunk * kCols;       // [C, C]
  float* bl = P + kChunk * kChunk;     // [C]
  float* Sz = bl + kChunk;             // [2F] the z column of the state
  float* qz = Sz + F2;                 // [C] phi_q . z
  const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H, kvh = h / (d.H / d.Hkv);
  const int gh = d.Hg == 1 ? 0 : h;
  const int c0 = blockIdx.y * kCols;
  const int tid = threadIdx.x, nt = blockDim.x;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < F2 * kCols; i += nt) S[i] = 0.f;
  for (int i = tid; i < F2; i += nt) Sz[i] = 0.f;
  for (int c = 0; c < d.NC; ++c) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    __syncthreads();
    for (int i = tid; i < kChunk * F2; i += nt) {
      const int r = i / F2, f = i % F2;
      const int64_t o = ((int64_t(bh)) * d.T + t0 + r) * F2 + f;
      sq[i] = r < n ? phiq[o] : 0.f;
      sk[i] = r < n ? phik[o] : 0.f;
    }
    for (int i = tid; i < kChunk * kCols; i += nt) {
      const int r = i / kCols, col = c0 + i % kCols;
      float val = 0.f;
      if (r < n) {
        if (col < d.D) val = ld(v + ((int64_t(b) * d.T + t0 + r) * d.Hkv + kvh) * d.D + col);
        else if (col == d.D) val = 1.f;
      }
      V[i] = val;
    }
    for (int i = tid; i < kChunk; i += nt) bl[i] = i < n ? blr[t0 + i] : 0.f;
    if (states) {
      float* so = states + state_chunk(bh, c, d.NC, d.D, F2);
      for (int i = tid; i < F2 * kCols; i += nt) {
        const int col = c0 + i % kCols;
        if (col < D1) so[state_index(i / kCols, col, d.D, F2)] = S[i];
      }
    }
    __syncthreads();
    // P = (phi_q phi_k^T) * exp(bl_i - bl_j), causal, exponent <= 0
    for (int i = tid; i < kChunk * kChunk; i += nt) {
      const int r = i / kChunk, s = i % kChunk;
      float acc = 0.f;
      if (s <= r && r < n) {
        for (int f = 0; f < F2; ++f) acc += sq[r * F2 + f] * sk[s * F2 + f];
        acc *= __expf(bl[r] - bl[s]);
      }
      P[i] = acc;
    }
    for (int r = tid; r < kChunk; r += nt) {
      float acc = 0.f;
      for (int f = 0; f < F2; ++f) acc += sq[r * F2 + f] * Sz[f];
      qz[r] = acc;
    }
    __syncthreads();
    // M = exp(bl_t) (phi_q S - (phi_q z) v_t) + P (V - v_t); den = exp(bl_t) phi_q z + P 1
    for (int i = tid; i < kChunk * kCols; i += nt) {
      const int r = i / kCols, cc = i % kCols, col = c0 + cc;
      if (r >= n || col >= D1) continue;
      const float vr = col < d.D ? V[r * kCols + cc] : 0.f;
      float inter = 0.f, intra = 0.f;
      for (int f = 0; f < F2; ++f) inter += sq[r * F2 + f] * S[f * kCols + cc];
      if (col < d.D) inter -= qz[r] * vr;
      for (int s = 0; s <= r; ++s) intra += P[r * kChunk + s] * (V[s * kCols + cc] - vr);
      numden[(int64_t(bh) * d.T + t0 + r) * D1 + col] = __expf(bl[r]) * inter + intra;
    }
    __syncthreads();
    // S <- exp(bl_end) S + (phi_k exp(bl_end - bl_s))^T V
    const float bend = bl[n - 1], eend = __expf(bend);
    for (int i = tid; i < F2 * kCols; i += nt) {
      const int f = i / kCols, cc = i % kCols;
      float acc = 0.f;
      for (int s = 0; s < n; ++s) acc += sk[s * F2 + f] * __expf(bend - bl[s]) * V[s * kCols + cc];
      S[i] = eend * S[i] + acc;
    }
    for (int f = tid; f < F2; f += nt) {
      float acc = 0.f;
      for (int s = 0; s < n; ++s) acc += sk[s * F2 + f] * __expf(bend - bl[s]);
      Sz[f] = eend * Sz[f] + acc;
    }
  }
}

/// Window branch and combine. One warp per row (b, t, h): scores over t-w < s <= t (RoPE on
/// the fly with window_rope) and the sinks, row max over both; y = combine(g, l).
/// wstats [B,H,T,2] = (row max, denominator) for the backward.
template <class T>
__global__ void window_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                  const T* __restrict__ v, const float* __restrict__ cosb,
                                  const float* __restrict__ sinb, const float* __restrict__ tau,
                                  const float* __restrict__ alpha_p,
                                  const float* __restrict__ numden, T* __restrict__ y,
                                  float* __restrict__ wstats, Dims d) {
  pdl_enter();
  extern __shared__ float sh[];
  const int wib = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int W = max(d.w, 1);
  float* qs = sh + wib * (d.D + W);  // q~ [D]
  float* ps = qs + d.D;              // scores / probabilities [w]
  const int64_t row = int64_t(blockIdx.x) * kRowWarps + wib;  // (b, t, h) with h fastest
  if (row >= int64_t(d.B) * d.T * d.H) return;
  const int h = row % d.H;
  const int64_t bt = row / d.H;
  const int b = bt / d.T, t = bt % d.T, kvh = h / (d.H / d.Hkv), hD = d.D / 2;
  const float alpha = alpha_p[0];
  const int D1 = d.D + 1;
  const float* nd = numden + ((int64_t(b) * d.H + h) * d.T + t) * D1;
  const T* vt = v + ((int64_t(b) * d.T + t) * d.Hkv + kvh) * d.D;
  T* yr = y + row * d.D;
  if (d.w == 0) {
    for (int j = lane; j < d.D; j += 32) st(yr + j, global_out(nd, ld(vt + j), j, d));
    return;
  }
  const T* qr = q + row * d.D;
  for (int j = lane; j < d.D; j += 32)
    qs[j] = d.rope ? rope_at(qr, j, hD, cosb + int64_t(t) * hD, sinb + int64_t(t) * hD) : ld(qr + j);
  __syncwarp();
  const int n = min(d.w, t + 1);
  float mx = -INFINITY;
  for (int i = lane; i < n; i += 32) {
    const int s = t - n + 1 + i;
    const T* kr = k + ((int64_t(b) * d.T + s) * d.Hkv + kvh) * d.D;
    float c = 0.f;
    for (int j = 0; j < d.D; ++j)
      c += qs[j] * (d.rope ? rope_at(kr, j, hD, cosb + int64_t(s) * hD, sinb + int64_t(s) * hD)
                           : ld(kr + j));
    c *= d.scale;
    ps[i] = c;
    mx = fmaxf(mx, c);
  }
  const float* tr = d.m ? tau + (d.Ht == 1 ? 0 : h) * d.m : nullptr;
  for (int j = lane; j < d.m; j += 32) mx = fmaxf(mx, tr[j]);
  mx = warp_max(mx);
  float den = 0.f;
  __syncwarp();
  for (int i = lane; i < n; i += 32) den += (ps[i] = __expf(ps[i] - mx));
  for (int j = lane; j < d.m; j += 32) den += __expf(tr[j] - mx);
  den = warp_sum(den);
  __syncwarp();
  const float inv = 1.f / den;
  const bool convex = d.combine_convex;
  const float A = convex ? fabsf(alpha) : alpha;
  for (int j = lane; j < d.D; j += 32) {
    float l = 0.f;
    for (int i = 0; i < n; ++i)
      l += ps[i] * ld(v + ((int64_t(b) * d.T + t - n + 1 + i) * d.Hkv + kvh) * d.D + j);
    l *= inv;
    const float g = global_out(nd, ld(vt + j), j, d);
    st(yr + j, convex ? (g + A * l) / (1.f + A) : g + alpha * l);
  }
  if (lane == 0) {
    float* ws = wstats + ((int64_t(b) * d.H + h) * d.T + t) * 2;
    ws[0] = mx;
    ws[1] = den;
  }
}

Dims make_dims(const ops::LizardConfig& cfg, const ops::LizardDims& ld) {
  Dims d;
  d.B = int(ld.B), d.T = int(ld.T), d.H = int(ld.H), d.Hkv = int(ld.Hkv), d.D = int(ld.D);
  d.F = int(ld.F), d.dm = int(ld.dm), d.Hg = int(ld.Hg), d.Ht = int(ld.Ht), d.m = int(ld.m);
  d.w = int(ld.w), d.NC = int((ld.T + kChunk - 1) / kChunk);
  d.combine_convex = cfg.combine == ops::Combine::Convex && ld.w > 0;
  d.rope = cfg.use_window_rope() && ld.w > 0;
  d.act_exp = cfg.feature_activation == ops::FeatureActivation::Exp;
  d.eps = float(cfg.eps);
  d.scale = 1.f / sqrtf(float(ld.D));
  return d;
}

size_t global_smem_bytes(const Dims& d, bool backward) {
  const size_t F2 = 2 * d.F;
  if (!backward)
    return sizeof(float) * (2 * kChunk * F2 + F2 * kCols + kChunk * kCols + kChunk * kChunk +
                            2 * kChunk + F2);
  return sizeof(float) * (2 * kChunk * F2 + 2 * F2 * kCols + 2 * kChunk * kCols +
                          2 * kChunk * kChunk + 3 * kChunk);
}

int grid_for(int64_t n, int per_block) { return int((n + per_block - 1) / per_block); }

/// Feature maps without u (the backward recomputes phi with this).
template <class T>
void features_fwd_launch(const T* x, const float* W, int Hx, float* phi, const Dims& d,
                         int threads, size_t smem, cudaStream_t s) {
  features_kernel<T><<<int(int64_t(d.B) * d.T * d.H), threads, smem, s>>>(x, W, Hx, phi, nullptr, d);
}
template void features_fwd_launch<float>(const float*, const float*, int, float*, const Dims&, int,
                                         size_t, cudaStream_t);
template void features_fwd_launch<__nv_bfloat16>(const __nv_bfloat16*, const float*, int, float*,
                                                 const Dims&, int, size_t, cudaStream_t);

}  // namespace lizard_detail

namespace {
Tensor f32_on(const Tensor& t, Device dev) {
  return t.defined() ? t.to(dev, DType::F32).contiguous() : Tensor();
}
bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0; }
}  // namespace

LizardKernelPath lizard_attention_kernel_path(const ops::LizardConfig& cfg,
                                              const ops::LizardInputs& in,
                                              const ops::LizardParams& p, bool training) {
  const Dims d = make_dims(cfg, ops::lizard_check_dims(cfg, in, p));
  LizardKernelPath r;
  // contiguous() copies are freshly allocated (aligned); views keep their own pointer
  auto ok = [](const Tensor& t) { return !t.is_contiguous() || aligned16(t); };
  r.global_tc = in.q.dtype() == DType::BF16 && tc_enabled(training) && tc_supported(d) && ok(in.q) &&
                ok(in.k) && ok(in.v);
  r.window_tc = r.global_tc && tc_window_supported(d);
  r.state_rows = r.global_tc && state_mma_selected(d) ? state_mma_rows(d) : 0;
  return r;
}

void lizard_attention_forward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                              const ops::LizardParams& p, Tensor& y, ops::LizardSaved* saved,
                              void* stream) {
  const ops::LizardDims ldim = ops::lizard_check_dims(cfg, in, p);
  const Dims d = make_dims(cfg, ldim);
  const Device dev = in.q.device();
  auto s = static_cast<cudaStream_t>(stream);
  const DType dt = in.q.dtype();
  LZ_INPUT_CHECK(dt == DType::BF16 || dt == DType::F32, "lizard attention (CUDA): q must be bf16 or f32, got ", dtype_name(dt));
  for (const Tensor* t : {&in.k, &in.v, &in.x})
    LZ_INPUT_CHECK(t->dtype() == dt && t->is_cuda(), "lizard attention (CUDA): q, k, v, x must share dtype and device");
  const Tensor q = in.q.contiguous(), k = in.k.contiguous(), v = in.v.contiguous(), x = in.x.contiguous();
  const Tensor wq = f32_on(p.wq, dev), wk = f32_on(p.wk, dev), wg = f32_on(p.w_g, dev),
               bg = f32_on(p.b_g, dev), tau = f32_on(p.tau, dev), alpha = f32_on(p.alpha, dev);
  const Tensor cs = d.rope ? f32_on(in.cos, dev) : Tensor(), sn = d.rope ? f32_on(in.sin, dev) : Tensor();
  const int64_t BHT = int64_t(d.B) * d.H * d.T, F2 = 2 * d.F, D1 = d.D + 1;

  Tensor z = Tensor::empty({d.B, d.Hg, d.T}, DType::F32, dev);
  Tensor bl = Tensor::empty({d.B, d.Hg, d.T}, DType::F32, dev);
  // tensor cores: bf16, whole 16x16 tiles, 16-byte aligned rows (uint4 loads)
  const bool tc = dt == DType::BF16 && tc_enabled(saved != nullptr) && tc_supported(d) &&
                  aligned16(q) && aligned16(k) && aligned16(v);
  const DType phi_dt = tc ? DType::BF16 : DType::F32;
  Tensor phiq = Tensor::empty({d.B, d.H, d.T, F2}, phi_dt, dev);
  Tensor phik = Tensor::empty({d.B, d.H, d.T, F2}, phi_dt, dev);
  Tensor numden = Tensor::empty({d.B, d.H, d.T, D1}, DType::F32, dev);
  Tensor wstats = Tensor::empty({d.B, d.H, d.T, 2}, DType::F32, dev);
  // the tensor-core output kernel reads the states even without `saved`; [B,H,NC,2F,D+1] by
  // size, each chunk's block laid out as state_index says (S rows of D, then z)
  Tensor states;
  if (saved || tc) states = Tensor::empty({d.B, d.H, d.NC, F2, D1}, DType::F32, dev);
  y = Tensor::empty(in.q.shape(), dt, dev);
  if (saved) *saved = ops::LizardSaved{};  // every field set below, or left undefined

  visit_dtype(dt, [&](auto z0) {
    using T0 = decltype(z0);
    if constexpr (std::is_same_v<T0, float> || std::is_same_v<T0, bf16>) {
      using T = std::conditional_t<std::is_same_v<T0, float>, float, __nv_bfloat16>;
      const int64_t gw = int64_t(d.B) * d.T * d.Hg;
      // Tensor cores. Training (saved): the backward's precision. phi from W as a bf16 hi + lo
      // pair (u = x W to about 2^-16), phi itself as a hi + lo pair (phi + phi_lo: the f32 map
      // to about 2^-17, issue #5; bit-identical to the tensor-core backward's recompute) and
      // the state/output products on split operands, so states and numden are f32-accurate
      // (about 2^-16 relative) functions of the f32 phi: the backward's recomputed weights
      // and the saved statistics agree, and its cancelling sums (gate gradients) are those of
      // the f32 phi. Expected against the f32 oracle: y within bf16 output rounding (2^-9),
      // states and numden about 1e-5 relative, gradients within about 1e-3 (dv, dphi from
      // bf16 E, P; da f32-level). With keep_states the pair phi, phi_lo of q and k is kept for
      // the backward (4 x [B,H,T,2F] bf16, a quarter of the states' bytes; the backward's
      // recompute cost 2 of the 4 feature launches); without, it lives only during this
      // forward and the backward recomputes it. Inference keeps bf16 W, bf16 phi and bf16
      // operands (y to about 1e-3 relative, half the mma's, no phi_lo).
      const bool split = saved != nullptr;
      Tensor wqb, wkb, wql, wkl, phiql, phikl;  // allocated before the fork (side_stream.cuh)
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc && split) {
          for (auto [src, hi, lo] : {std::tuple{&wq, &wqb, &wql}, std::tuple{&wk, &wkb, &wkl}}) {
            *hi = Tensor::empty(src->shape(), DType::BF16, dev);
            *lo = Tensor::empty(src->shape(), DType::BF16, dev);
          }
          phiql = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
          phikl = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
        } else if (tc) {
          wqb = p.wq.to(dev, DType::BF16).contiguous();
          wkb = p.wk.to(dev, DType::BF16).contiguous();
        }
      }
      [[maybe_unused]] auto bp = [](const Tensor& t) { return static_cast<__nv_bfloat16*>(t.raw()); };
      [[maybe_unused]] auto lo = [&](const Tensor& t) { return t.defined() ? bp(t) : nullptr; };
      // The weights' splits first, on this stream (two small launches; the key's used to queue
      // behind the query's feature map on the side stream and start its own map late).
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc && split) {
          split_bf16_launch(wq.data<float>(), bp(wqb), bp(wql), wq.numel(), s);
          split_bf16_launch(wk.data<float>(), bp(wkb), bp(wkl), wk.numel(), s);
        }
      }
      // The query's feature map runs on the side stream, beside the gate, the key's feature
      // map and the state sweep (at one token per row the sweep fills a fraction of the GPU);
      // joined before the output kernel, its reader. (Tried and dropped, 2026-11-28: the
      // window kernel there too, writing its term of y in f32 for the output kernel to
      // combine: the same bits, but slower at every shape, docs/benchmarks/step.md.)
      StreamFork fork(s, dev.index, tc && side_streams_enabled());
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc)
          features_tc_launch(bp(q), d.H, bp(wqb), lo(wql), bp(phiq), lo(phiql), d, fork.side());
      }
      const bool gvec =
          std::is_same_v<T, __nv_bfloat16> && d.dm % 8 == 0 && aligned16(x) && aligned16(wg);
      pdl_launch("lizard gate", gate_fwd_kernel<T>, grid_for(gw * 32, 256), 256, 0, s,
                 static_cast<const T*>(x.raw()), wg.data<float>(), bg.data<float>(),
                 z.data<float>(), bl.data<float>(), gvec, d);
      pdl_launch("lizard gate cumsum", chunk_cumsum_kernel,
                 grid_for(int64_t(d.B) * d.Hg * d.NC * 32, 256), 256, 0, s, bl.data<float>(), d);
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc) {
          features_tc_launch(bp(k), d.Hkv, bp(wkb), lo(wkl), bp(phik), lo(phikl), d, s);
          state_tc_launch(bp(phik), lo(phikl), bp(v), bl.data<float>(), states.data<float>(),
                          split, d, s);
          fork.join();
          out_tc_launch(bp(phiq), lo(phiql), bp(phik), lo(phikl), bp(v), bl.data<float>(),
                        states.data<float>(), numden.data<float>(), split, d, s);
          if (split && cfg.keep_states) {  // the bits the backward would recompute (same kernels)
            saved->phiq = phiq, saved->phiq_lo = phiql, saved->phik = phik, saved->phik_lo = phikl;
            saved->wq_hi = wqb, saved->wq_lo = wql, saved->wk_hi = wkb, saved->wk_lo = wkl;
          }
        }
      }
      if (!tc) {
        const int ft = 128;
        const size_t fsm = sizeof(float) * (d.F + ft);
        features_kernel<T><<<int(int64_t(d.B) * d.T * d.H), ft, fsm, s>>>(
            static_cast<const T*>(q.raw()), wq.data<float>(), d.H, phiq.data<float>(), nullptr, d);
        features_kernel<T><<<int(int64_t(d.B) * d.T * d.H), ft, fsm, s>>>(
            static_cast<const T*>(k.raw()), wk.data<float>(), d.Hkv, phik.data<float>(), nullptr, d);
        const size_t gsm = global_smem_bytes(d, false);
        cudaFuncSetAttribute(global_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(gsm));
        dim3 gg(d.B * d.H, (D1 + kCols - 1) / kCols);
        global_fwd_kernel<T><<<gg, kGlobalThreads, gsm, s>>>(
            phiq.data<float>(), phik.data<float>(), static_cast<const T*>(v.raw()), bl.data<float>(),
            numden.data<float>(), states.defined() ? states.data<float>() : nullptr, d);
      }
      const float* csp = cs.defined() ? cs.data<float>() : nullptr;
      const float* snp = sn.defined() ? sn.data<float>() : nullptr;
      const float* taup = tau.defined() ? tau.data<float>() : nullptr;
      bool window_done = false;
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc && tc_window_supported(d)) {
          window_tc_launch(static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
                           static_cast<const T*>(v.raw()), csp, snp, taup, alpha.data<float>(),
                           numden.data<float>(), static_cast<T*>(y.raw()), wstats.data<float>(),
                           saved != nullptr, d, s);
          window_done = true;
        }
      }
      if (!window_done) {  // also the w = 0 case: y = g
        const size_t wsm = sizeof(float) * kRowWarps * (d.D + std::max(d.w, 1));
        cudaFuncSetAttribute(window_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wsm));
        window_fwd_kernel<T><<<grid_for(BHT, kRowWarps), kRowWarps * 32, wsm, s>>>(
            static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
            static_cast<const T*>(v.raw()), csp, snp, taup, alpha.data<float>(),
            numden.data<float>(), static_cast<T*>(y.raw()), wstats.data<float>(), d);
      }
    } else {
      throw Error("lizard attention (CUDA): unsupported dtype");
    }
  });
  check_last_error("lizard_attention_forward");
  if (saved) {
    // keep_states false (RecomputeMode::States): the tensor-core backward reruns the sweep
    // (the same bits); the f32 kernels' backward has no such path and keeps them
    saved->states = cfg.keep_states || !tc ? states : Tensor();
    saved->numden = numden;
    saved->wstats = wstats;
    saved->bl = bl;
    saved->z = z;
  }
}

}  // namespace lizard::cuda
