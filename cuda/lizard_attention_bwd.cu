// Lizard attention backward on the GPU (contract: include/lizard/cuda/lizard_attention.h).
// Mirrors the chunked CPU backward (src/ops/lizard_attention_chunked.cpp): window backward
// per row, reverse chunk sweep with the state gradient dS for the global branch, then the
// feature maps (recomputing u = x W) and the gate. Gradients accumulate in f32; dq (by the
// split feature backward) and dx (by the gate) leave their last writer in the dtype of q, dk
// and dv (GQA atomics) go through one conversion at the end. bf16 inputs that the forward
// ran on tensor cores (same tc_supported test) take the tensor-core global branch of
// cuda/lizard_attention_tc.cu (dS sweep, then one CTA per chunk).
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "lizard/core/dispatch.h"

#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard_attention_common.cuh"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"  // pack_bf16
#include "side_stream.cuh"

namespace lizard::cuda {
namespace lizard_detail {
size_t global_smem_bytes(const Dims& d, bool backward);
int grid_for(int64_t n, int per_block);
template <class T>
void features_fwd_launch(const T* x, const float* W, int Hx, float* phi, const Dims& d,
                         int threads, size_t smem, cudaStream_t s);

/// Combine and window backward, one warp per row (b, t, h). Writes dO' = [dg/den, dden]
/// [B,H,T,D+1] for the global branch and cself [B,H,T] = dL/dw_tt = dg.(v_t - g_t)/den =
/// -dg.M/den^2 (clamped: dg.v_t/eps), the self pair's weight gradient from M of the forward
/// (no cancellation: it is ~0 when the token attends almost only to itself); adds the window
/// parts of dq (row-owned), dk, dv, dtau, dalpha (atomics: keys and parameters are shared).
template <class T>
__global__ void window_bwd_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                  const T* __restrict__ v, const float* __restrict__ cosb,
                                  const float* __restrict__ sinb, const float* __restrict__ tau,
                                  const float* __restrict__ alpha_p,
                                  const float* __restrict__ numden,
                                  const float* __restrict__ wstats, const T* __restrict__ dy,
                                  float* __restrict__ dO, float* __restrict__ cself,
                                  float* __restrict__ dq,
                                  float* __restrict__ dk, float* __restrict__ dv,
                                  float* __restrict__ dtau, float* __restrict__ dalpha, Dims d) {
  pdl_enter();
  extern __shared__ float sh[];
  const int wib = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* qs = sh + wib * 4 * d.D;  // q~ [D]
  float* ls = qs + d.D;            // l [D]
  float* dls = ls + d.D;           // dl [D]
  float* dqs = dls + d.D;          // dq~ [D]
  const int64_t row = int64_t(blockIdx.x) * kRowWarps + wib;
  if (row >= int64_t(d.B) * d.T * d.H) return;
  const int h = row % d.H;
  const int64_t bt = row / d.H;
  const int b = bt / d.T, t = bt % d.T, kvh = h / (d.H / d.Hkv), hD = d.D / 2, D1 = d.D + 1;
  const int64_t bht = (int64_t(b) * d.H + h) * d.T + t;
  const float* nd = numden + bht * D1;
  const bool clamped = nd[d.D] < d.eps;
  const float den_g = clamped ? d.eps : nd[d.D];
  const float alpha = alpha_p[0];
  const bool convex = d.combine_convex;
  const float A = convex ? fabsf(alpha) : alpha;
  const T* dyr = dy + row * d.D;
  const T* vt = v + ((int64_t(b) * d.T + t) * d.Hkv + kvh) * d.D;
  const int n = d.w > 0 ? min(d.w, t + 1) : 0;
  float mx = 0.f, inv = 0.f;
  if (d.w > 0) {
    const T* qr = q + row * d.D;
    for (int j = lane; j < d.D; j += 32)
      qs[j] = d.rope ? rope_at(qr, j, hD, cosb + int64_t(t) * hD, sinb + int64_t(t) * hD) : ld(qr + j);
    mx = wstats[bht * 2];
    inv = 1.f / wstats[bht * 2 + 1];
  }
  __syncwarp();
  auto key = [&](int s, int j) {
    const T* kr = k + ((int64_t(b) * d.T + s) * d.Hkv + kvh) * d.D;
    return d.rope ? rope_at(kr, j, hD, cosb + int64_t(s) * hD, sinb + int64_t(s) * hD) : ld(kr + j);
  };
  auto prob = [&](int s) {  // p_s from the saved row max and denominator
    float c = 0.f;
    for (int j = lane; j < d.D; j += 32) c += qs[j] * key(s, j);
    c = warp_sum(c) * d.scale;
    return __expf(c - mx) * inv;
  };
  // l (recomputed), then dg, dl, dO'
  for (int j = lane; j < d.D; j += 32) ls[j] = 0.f;
  __syncwarp();
  for (int i = 0; i < n; ++i) {
    const int s = t - n + 1 + i;
    const float pr = prob(s);
    for (int j = lane; j < d.D; j += 32)
      ls[j] += pr * ld(v + ((int64_t(b) * d.T + s) * d.Hkv + kvh) * d.D + j);
  }
  __syncwarp();
  float dgg = 0.f, dal = 0.f, delta = 0.f, cdiag = 0.f;
  for (int j = lane; j < d.D; j += 32) {
    const float vj = ld(vt + j);
    const float dyj = ld(dyr + j), g = global_out(nd, vj, j, d), l = ls[j];
    const float dg = convex ? dyj / (1.f + A) : dyj;
    cdiag += clamped ? dg * vj / den_g : -(dg / den_g) * (nd[j] / den_g);
    const float dl = d.w > 0 ? (convex ? A * dyj / (1.f + A) : alpha * dyj) : 0.f;
    dls[j] = dl;
    dqs[j] = 0.f;
    dgg += dg * g;
    dal += convex ? dyj * (l - g) : dyj * l;
    delta += dl * l;
    dO[bht * D1 + j] = dg / den_g;
  }
  dgg = warp_sum(dgg);
  dal = warp_sum(dal);
  delta = warp_sum(delta);
  cdiag = warp_sum(cdiag);
  if (lane == 0) {
    dO[bht * D1 + d.D] = clamped ? 0.f : -dgg / den_g;
    cself[bht] = cdiag;
    if (d.w > 0 && dalpha)
      atomicAdd(dalpha, convex ? (alpha >= 0.f ? 1.f : -1.f) * dal / ((1.f + A) * (1.f + A)) : dal);
  }
  if (d.w == 0) return;
  __syncwarp();
  for (int i = 0; i < n; ++i) {
    const int s = t - n + 1 + i;
    const float pr = prob(s);
    const int64_t ko = ((int64_t(b) * d.T + s) * d.Hkv + kvh) * d.D;
    float dp = 0.f;
    for (int j = lane; j < d.D; j += 32) {
      dp += dls[j] * ld(v + ko + j);
      atomicAdd(dv + ko + j, pr * dls[j]);
    }
    dp = warp_sum(dp);
    const float dc = pr * (dp - delta) * d.scale;
    const float* cs = cosb + int64_t(s) * hD;
    const float* sn = sinb + int64_t(s) * hD;
    for (int j = lane; j < d.D; j += 32) {
      dqs[j] += dc * key(s, j);
      // dk = R_s^T (dc q~): inverse rotation at position s
      float g = dc * qs[j];
      if (d.rope)
        g = j < hD ? dc * (qs[j] * cs[j] + qs[j + hD] * sn[j])
                   : dc * (qs[j] * cs[j - hD] - qs[j - hD] * sn[j - hD]);
      atomicAdd(dk + ko + j, g);
    }
  }
  if (d.m > 0 && lane < d.m && dtau) {
    const float* tr = tau + (d.Ht == 1 ? 0 : h) * d.m;
    atomicAdd(dtau + (d.Ht == 1 ? 0 : h) * d.m + lane, -__expf(tr[lane] - mx) * inv * delta);
  }
  __syncwarp();
  const float* cs = cosb + int64_t(t) * hD;
  const float* sn = sinb + int64_t(t) * hD;
  for (int j = lane; j < d.D; j += 32) {
    float g = dqs[j];
    if (d.rope)
      g = j < hD ? dqs[j] * cs[j] + dqs[j + hD] * sn[j] : dqs[j] * cs[j - hD] - dqs[j - hD] * sn[j - hD];
    dq[row * d.D + j] += g;
  }
}

/// Global branch backward: CTA (b*H + h, column block) sweeps the chunks from the last with
/// its slice of dS (2F x kCols). dphiq, dphik [B,H,T,2F] and dv get atomics (the column
/// blocks and the heads of a GQA group add into the same entries). Inside a chunk the weight
/// gradient is dA_ts = dO'_t . [v_s - v_t | 0] + cself_t (equal to dO'_t . [v_s | 1], but
/// exactly cself_t on the diagonal, with no O(1) terms cancelling). The gate gradient
/// db [B,Hg,T] = dL/db_t (b = cumulative log-gate) is added pair by pair, w_ts dA_ts to b_t
/// and minus it to b_s for s < t: the diagonal does not depend on the gate, and the identity
/// db_t = phi_q.dphi_q - phi_k.dphi_k would leave its rounding noise (~1e-8) where the true
/// value is 0 (T = 1) or ~1e-6 (gates near 0).
template <class T>
__global__ void __launch_bounds__(kGlobalThreads) global_bwd_kernel(
    const float* __restrict__ phiq, const float* __restrict__ phik, const T* __restrict__ v,
    const float* __restrict__ bl_all, const float* __restrict__ states,
    const float* __restrict__ dO, const float* __restrict__ cself, float* __restrict__ dphiq,
    float* __restrict__ dphik, float* __restrict__ dv, float* __restrict__ db, Dims d) {
  pdl_enter();
  extern __shared__ float sh[];
  const int F2 = 2 * d.F, D1 = d.D + 1;
  float* sq = sh;                       // [C, 2F]
  float* sk = sq + kChunk * F2;         // [C, 2F]
  float* Sp = sk + kChunk * F2;         // [2F, kCols] state before the chunk
  float* dS = Sp + F2 * kCols;          // [2F, kCols]
  float* V = dS + F2 * kCols;           // [C, kCols]
  float* G = V + kChunk * kCols;        // [C, kCols] dO'
  float* P = G + kChunk * kCols;        // [C, C]
  float* E = P + kChunk * kChunk;       // [C, C] dA * e
  float* bl = E + kChunk * kChunk;      // [C]
  float* cs = bl + kChunk;              // [C] cself of the rows (used by the block holding col D)
  float* dbs = cs + kChunk;             // [C] this CTA's part of db for the rows
  const int bh = blockIdx.x, b = bh / d.H, h = bh % d.H, kvh = h / (d.H / d.Hkv);
  const int gh = d.Hg == 1 ? 0 : h;
  const int c0 = blockIdx.y * kCols;
  const bool has_den = c0 <= d.D && d.D < c0 + kCols;
  const int tid = threadIdx.x, nt = blockDim.x;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < F2 * kCols; i += nt) dS[i] = 0.f;
  for (int c = d.NC - 1; c >= 0; --c) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    __syncthreads();
    for (int i = tid; i < kChunk * F2; i += nt) {
      const int r = i / F2;
      const int64_t o = (int64_t(bh) * d.T + t0 + r) * F2 + i % F2;
      sq[i] = r < n ? phiq[o] : 0.f;
      sk[i] = r < n ? phik[o] : 0.f;
    }
    const float* so = states + state_chunk(bh, c, d.NC, d.D, F2);
    for (int i = tid; i < F2 * kCols; i += nt) {
      const int col = c0 + i % kCols;
      Sp[i] = col < D1 ? so[state_index(i / kCols, col, d.D, F2)] : 0.f;
    }
    for (int i = tid; i < kChunk * kCols; i += nt) {
      const int r = i / kCols, col = c0 + i % kCols;
      float val = 0.f, g = 0.f;
      if (r < n && col < D1) {
        val = col < d.D ? ld(v + ((int64_t(b) * d.T + t0 + r) * d.Hkv + kvh) * d.D + col) : 1.f;
        g = dO[(int64_t(bh) * d.T + t0 + r) * D1 + col];
      }
      V[i] = val;
      G[i] = g;
    }
    for (int i = tid; i < kChunk; i += nt) {
      bl[i] = i < n ? blr[t0 + i] : 0.f;
      cs[i] = i < n && has_den ? cself[int64_t(bh) * d.T + t0 + i] : 0.f;
      dbs[i] = 0.f;
    }
    __syncthreads();
    for (int i = tid; i < kChunk * kChunk; i += nt) {
      const int r = i / kChunk, s = i % kChunk;
      float p = 0.f, ea = 0.f;
      if (s <= r && r < n) {
        const float e = __expf(bl[r] - bl[s]);
        float kk = 0.f, da = cs[r];
        for (int f = 0; f < F2; ++f) kk += sq[r * F2 + f] * sk[s * F2 + f];
        // column D: V is 1 for s and r alike, so it adds nothing here (cself carries it)
        for (int cc = 0; cc < kCols; ++cc)
          da += G[r * kCols + cc] * (V[s * kCols + cc] - V[r * kCols + cc]);
        p = kk * e;
        ea = da * e;
        if (s < r) {
          atomicAdd(dbs + r, kk * ea);
          atomicAdd(dbs + s, -kk * ea);
        }
      }
      P[i] = p;
      E[i] = ea;
    }
    __syncthreads();
    const float bend = bl[n - 1], eend = __expf(bend);
    // dphi_q and dphi_k
    for (int i = tid; i < kChunk * F2; i += nt) {
      const int r = i / F2, f = i % F2;
      if (r >= n) continue;
      float aq = 0.f, ak = 0.f, iq = 0.f, ik = 0.f;
      for (int s = 0; s <= r; ++s) aq += E[r * kChunk + s] * sk[s * F2 + f];
      for (int t2 = r; t2 < n; ++t2) ak += E[t2 * kChunk + r] * sq[t2 * F2 + f];
      for (int cc = 0; cc < kCols; ++cc) {
        iq += Sp[f * kCols + cc] * G[r * kCols + cc];
        ik += dS[f * kCols + cc] * V[r * kCols + cc];
      }
      const int64_t o = (int64_t(bh) * d.T + t0 + r) * F2 + f;
      const float xq = __expf(bl[r]) * iq, xk = __expf(bend - bl[r]) * ik;
      atomicAdd(dphiq + o, aq + xq);
      atomicAdd(dphik + o, ak + xk);
      // pairs with earlier chunks (r the query) and later chunks (r the key)
      atomicAdd(dbs + r, sq[r * F2 + f] * xq - sk[r * F2 + f] * xk);
    }
    // dv
    for (int i = tid; i < kChunk * kCols; i += nt) {
      const int r = i / kCols, cc = i % kCols, col = c0 + cc;
      if (r >= n || col >= d.D) continue;
      float a = 0.f, st = 0.f;
      for (int t2 = r; t2 < n; ++t2) a += P[t2 * kChunk + r] * G[t2 * kCols + cc];
      for (int f = 0; f < F2; ++f) st += sk[r * F2 + f] * dS[f * kCols + cc];
      atomicAdd(dv + ((int64_t(b) * d.T + t0 + r) * d.Hkv + kvh) * d.D + col,
                a + __expf(bend - bl[r]) * st);
    }
    __syncthreads();
    for (int r = tid; r < n; r += nt) atomicAdd(db + (int64_t(b) * d.Hg + gh) * d.T + t0 + r, dbs[r]);
    // dS <- exp(bl_end) dS + sum_t exp(bl_t) phi_q_t dO'_t^T
    for (int i = tid; i < F2 * kCols; i += nt) {
      const int f = i / kCols, cc = i % kCols;
      float acc = 0.f;
      for (int r = 0; r < n; ++r) acc += __expf(bl[r]) * sq[r * F2 + f] * G[r * kCols + cc];
      dS[i] = eend * dS[i] + acc;
    }
  }
}

/// Feature-map backward for one (b, t, h) and one side (q or k): recomputes u = x W,
/// du -> dx (atomic: GQA heads share keys), and stores du [B,H,T,F] for the weight gradient.
template <class T>
__global__ void features_bwd_kernel(const T* __restrict__ x, const float* __restrict__ W, int Hx,
                                    const float* __restrict__ phi, const float* __restrict__ dphi,
                                    float* __restrict__ du_out, float* __restrict__ dx, Dims d) {
  pdl_enter();
  extern __shared__ float sh[];  // u [F], du [F], red [blockDim]
  float* u = sh;
  float* du = u + d.F;
  float* red = du + d.F;
  const int h = blockIdx.x % d.H;
  const int64_t bt = blockIdx.x / d.H;
  const int b = bt / d.T, t = bt % d.T;
  const int64_t xo = (bt * Hx + h / (d.H / Hx)) * d.D;
  const float* Wh = W + int64_t(h) * d.D * d.F;
  const int64_t po = ((int64_t(b) * d.H + h) * d.T + t);
  const float* ph = phi + po * 2 * d.F;
  const float* dph = dphi + po * 2 * d.F;
  for (int f = threadIdx.x; f < d.F; f += blockDim.x) {
    float s = 0;
    for (int i = 0; i < d.D; ++i) s += ld(x + xo + i) * Wh[int64_t(i) * d.F + f];
    u[f] = s;
  }
  auto reduce = [&](float v, bool is_max) { return block_reduce(v, is_max, red); };
  __syncthreads();
  float pp = 0.f, pn = 0.f;
  for (int f = threadIdx.x; f < d.F; f += blockDim.x) pp += ph[f] * dph[f], pn += ph[d.F + f] * dph[d.F + f];
  pp = reduce(pp, false);
  pn = reduce(pn, false);
  if (d.act_exp) {
    float best = -1.f;
    int arg = 0;
    for (int f = 0; f < d.F; ++f)  // same first-max tie rule as the CPU
      if (fabsf(u[f]) > best) best = fabsf(u[f]), arg = f;
    for (int f = threadIdx.x; f < d.F; f += blockDim.x)
      du[f] = ph[f] * dph[f] - ph[d.F + f] * dph[d.F + f] - (f == arg ? (u[f] >= 0.f ? 1.f : -1.f) * (pp + pn) : 0.f);
  } else {
    for (int f = threadIdx.x; f < d.F; f += blockDim.x)
      du[f] = ph[f] * (dph[f] - pp) - ph[d.F + f] * (dph[d.F + f] - pn);
  }
  __syncthreads();
  for (int f = threadIdx.x; f < d.F; f += blockDim.x) du_out[po * d.F + f] = du[f];
  for (int i = threadIdx.x; i < d.D; i += blockDim.x) {
    float s = 0.f;
    for (int f = 0; f < d.F; ++f) s += Wh[int64_t(i) * d.F + f] * du[f];
    atomicAdd(dx + xo + i, s);
  }
}

/// dW[h, i, f] = sum_{b,t} x[b,t,h/rep,i] du[b,h,t,f]; one thread per (h, i, f).
template <class T>
__global__ void feature_weight_grad_kernel(const T* __restrict__ x, int Hx,
                                           const float* __restrict__ du, float* __restrict__ dW,
                                           Dims d) {
  pdl_enter();
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= int64_t(d.H) * d.D * d.F) return;
  const int f = id % d.F, i = (id / d.F) % d.D, h = id / (int64_t(d.D) * d.F);
  float s = 0.f;
  for (int b = 0; b < d.B; ++b)
    for (int t = 0; t < d.T; ++t)
      s += ld(x + ((int64_t(b) * d.T + t) * Hx + h / (d.H / Hx)) * d.D + i) *
           du[((int64_t(b) * d.H + h) * d.T + t) * d.F + f];
  dW[id] = s;
}

/// dstates [B,H,NC,2F,D+1] f32 exactly as dstate_tc_launch defines them (the gradient of the
/// state after chunk c; the per-chunk layout of state_index), in f32 on CUDA cores: the
/// bisection counterpart of the tensor-core reverse sweep. One thread per (b, h, f, column)
/// walks the chunks from the last:
/// dX <- exp(bl_end) dX + sum_t exp(bl_t) phi_q[t,f] dO'[t,col]. phiq [B,H,T,2F] (P = f32 or bf16).
template <class P>
__global__ void dstate_f32_kernel(const P* __restrict__ phiq, const float* __restrict__ dO,
                                  const float* __restrict__ bl_all, float* __restrict__ dstates,
                                  Dims d) {
  pdl_enter();
  const int F2 = 2 * d.F, D1 = d.D + 1;
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= int64_t(d.B) * d.H * F2 * D1) return;
  const int col = id % D1, f = (id / D1) % F2;
  const int64_t bh = id / (int64_t(F2) * D1);
  const int b = bh / d.H, h = bh % d.H, gh = d.Hg == 1 ? 0 : h;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  float x = 0.f;
  for (int c = d.NC - 1; c >= 0; --c) {
    // before chunk c's own terms
    dstates[state_chunk(bh, c, d.NC, d.D, F2) + state_index(f, col, d.D, F2)] = x;
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    float acc = 0.f;
    for (int r = 0; r < n; ++r) {
      const int64_t row = bh * d.T + t0 + r;
      acc += __expf(blr[t0 + r]) * ld(phiq + row * F2 + f) * dO[row * D1 + col];
    }
    x = __expf(blr[t0 + n - 1]) * x + acc;
  }
}

/// Threads of gate_scan_kernel: one CTA per (b, g) row, each thread a contiguous segment.
constexpr int kScanThreads = 1024;

/// da = reverse cumsum of db over the whole sequence (when `cumsum`; else db already holds da,
/// as grad_tc_kernel writes it); dz = da * sigmoid(-z), in place in db. One CTA per (b, g):
/// segment sums, a suffix scan of them in shared memory, then each thread rescans its segment
/// from its suffix (T = 32768 takes 32 steps per thread, not 32768).
__global__ void __launch_bounds__(kScanThreads) gate_scan_kernel(float* __restrict__ db,
                                                                 const float* __restrict__ z,
                                                                 bool cumsum, Dims d) {
  pdl_enter();
  __shared__ float seg[kScanThreads];
  float* row = db + int64_t(blockIdx.x) * d.T;
  const float* zr = z + int64_t(blockIdx.x) * d.T;
  const int len = (d.T + kScanThreads - 1) / kScanThreads;
  const int a = min(d.T, threadIdx.x * len), e = min(d.T, a + len);
  auto sig_neg = [](float zz) {  // sigmoid(-z) without overflow
    return zz >= 0.f ? __expf(-zz) / (1.f + __expf(-zz)) : 1.f / (1.f + __expf(zz));
  };
  if (!cumsum) {  // uniform over the CTA: no barrier is skipped by part of it
    for (int t = a; t < e; ++t) row[t] *= sig_neg(zr[t]);
    return;
  }
  float sum = 0.f;
  for (int t = a; t < e; ++t) sum += row[t];
  seg[threadIdx.x] = sum;
  __syncthreads();
  // inclusive suffix scan of seg (Hillis-Steele)
  for (int o = 1; o < kScanThreads; o <<= 1) {
    const float add = threadIdx.x + o < kScanThreads ? seg[threadIdx.x + o] : 0.f;
    __syncthreads();
    seg[threadIdx.x] += add;
    __syncthreads();
  }
  float acc = threadIdx.x + 1 < kScanThreads ? seg[threadIdx.x + 1] : 0.f;  // segments after
  for (int t = e - 1; t >= a; --t) {
    acc += row[t];
    row[t] = acc * sig_neg(zr[t]);
  }
}

/// Shared floats of gate_dx_kernel: Hg rounded up to 4. nvcc reads the row in vector loads of
/// up to 16 bytes; with exactly Hg floats (Hg = 1) compute-sanitizer memcheck flagged those
/// reads past the allocation.
__host__ __device__ constexpr int gate_dx_slots(int hg) { return (hg + 3) / 4 * 4; }

/// Eight consecutive values of a row out: bf16 as one 16-byte store (each value rounded to
/// nearest, as st does), f32 as two.
__device__ __forceinline__ void st8(__nv_bfloat16* p, const float (&v)[8]) {
  *reinterpret_cast<uint4*>(p) = make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]),
                                            pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}
__device__ __forceinline__ void st8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

/// dx[b,t,j] = sum_g dz[b,g,t] w_g[g,j]: one CTA per row (b,t) (grid.x = B*T), the row's Hg
/// values of dz staged in shared memory once, the threads striding over j. The earlier one
/// thread per (b,t,j) paid a 64-bit div/mod per element and ran at ~20% of HBM speed.
/// kVec (dm a multiple of 8, dx and w_g 16-byte aligned: the launch checks): each thread takes
/// 8 consecutive j, w_g in 16-byte loads and dx in 16-byte stores (bf16); the scalar form's
/// 2-byte stores ran at about 1.3 TB/s (103 us at B=8 T=2048 dm=4096 on an H200). The same sum
/// per element (g ascending, the same expression), so the same bits either way.
/// O: the gradient's dtype (that of q). The only writer of dx, so it stores the final value:
/// the f32 sum rounded once to nearest (st), as the f32 buffer and its conversion did, with
/// neither the f32 write nor the conversion pass (0.4 GB at B=8 T=2048 dm=4096).
template <class O, bool kVec>
__global__ void gate_dx_kernel(const float* __restrict__ dz, const float* __restrict__ wg,
                               O* __restrict__ dx, Dims d) {
  pdl_enter();
  extern __shared__ float zrow[];  // [gate_dx_slots(Hg)]: Hg values, zeros after
  const int64_t bt = blockIdx.x;
  const int b = int(bt / d.T), t = int(bt % d.T);
  for (int g = threadIdx.x; g < gate_dx_slots(d.Hg); g += blockDim.x)
    zrow[g] = g < d.Hg ? dz[(int64_t(b) * d.Hg + g) * d.T + t] : 0.f;
  __syncthreads();
  O* out = dx + bt * d.dm;
  if constexpr (kVec) {
    for (int j = 8 * threadIdx.x; j < d.dm; j += 8 * blockDim.x) {
      float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int g = 0; g < d.Hg; ++g) {
        const float4* w = reinterpret_cast<const float4*>(wg + int64_t(g) * d.dm + j);
        const float4 w0 = __ldg(w), w1 = __ldg(w + 1);
        const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) s[i] += zrow[g] * wv[i];
      }
      st8(out + j, s);
    }
  } else {
    for (int j = threadIdx.x; j < d.dm; j += blockDim.x) {
      float s = 0.f;
      for (int g = 0; g < d.Hg; ++g) s += zrow[g] * wg[int64_t(g) * d.dm + j];
      st(out + j, s);
    }
  }
}

/// Token rows per CTA of gate_param_grad_kernel at most (grid.y splits the B*T rows; the
/// launch takes fewer where the grid would be small: gate_param_grad_grid) and gate rows per CTA
/// for per-head gates (grid.z splits Hg; each thread keeps that many sums in registers).
constexpr int kGateRows = 256;
constexpr int kGateG = 8;
/// x rows a thread loads before it adds them (loads in flight per thread).
constexpr int kGateBatch = 8;

/// dw_g[g,j] += sum_{b,t} dz x (j < dm), db_g[g] += sum dz (column j == dm, x taken as 1).
/// Thread: one column j of the `rows_per_cta` rows of its CTA and the kG gates g0.. (grid.z),
/// so each x element is read once per kG gates (kG 8 for per-head gates; 1 for the shared gate,
/// Hg 1, which would otherwise spend 7 of 8 products on zero padding); the CTA's dz block is
/// staged in shared memory. The rows are taken kGateBatch at a time, their x loads issued
/// together: one load in flight per thread left the kernel latency bound wherever the grid
/// did not fill the GPU many times over (B 1 T 2048, dm 4096, Hg 1: 136 CTAs of 256 rows,
/// 64 us against 115 us for 8x the rows at B 8). Each sum still adds its rows in order.
/// Atomics across the row blocks (outputs zeroed).
template <class T, int kG>
__global__ void __launch_bounds__(256, kG == 1 ? 8 : 5)  // 32 and 48 registers, no spills
    gate_param_grad_kernel(const float* __restrict__ dz, const T* __restrict__ x,
                           float* __restrict__ dwg, float* __restrict__ dbg, int rows_per_cta,
                           Dims d) {
  pdl_enter();
  __shared__ float zs[kGateRows][kG];
  const int j = blockIdx.x * blockDim.x + threadIdx.x, g0 = blockIdx.z * kG;
  const int64_t N = int64_t(d.B) * d.T, r0 = int64_t(blockIdx.y) * rows_per_cta;
  const int rows = int(min(int64_t(rows_per_cta), N - r0));
  // B*T < 2^31 (checked at launch): 32-bit division
  for (int i = threadIdx.x; i < rows * kG; i += blockDim.x) {
    const int r = i / kG, gg = i % kG;
    const int bt = int(r0) + r, b = bt / d.T, t = bt - b * d.T;
    zs[r][gg] = g0 + gg < d.Hg ? dz[(int64_t(b) * d.Hg + g0 + gg) * d.T + t] : 0.f;
  }
  __syncthreads();
  if (j > d.dm) return;
  const T* xc = x + r0 * d.dm + j;
  float s[kG] = {};
  int r = 0;
  for (; r + kGateBatch <= rows; r += kGateBatch) {
    float xv[kGateBatch];
#pragma unroll
    for (int u = 0; u < kGateBatch; ++u) xv[u] = j < d.dm ? ld(xc + int64_t(r + u) * d.dm) : 1.f;
#pragma unroll
    for (int u = 0; u < kGateBatch; ++u)
#pragma unroll
      for (int gg = 0; gg < kG; ++gg) s[gg] += zs[r + u][gg] * xv[u];
  }
  for (; r < rows; ++r) {
    const float xv = j < d.dm ? ld(xc + int64_t(r) * d.dm) : 1.f;
#pragma unroll
    for (int gg = 0; gg < kG; ++gg) s[gg] += zs[r][gg] * xv;
  }
#pragma unroll
  for (int gg = 0; gg < kG; ++gg) {
    if (g0 + gg >= d.Hg) break;
    if (j < d.dm) atomicAdd(dwg + int64_t(g0 + gg) * d.dm + j, s[gg]);
    else atomicAdd(dbg + g0 + gg, s[gg]);
  }
}

/// Token rows per CTA of gate_param_grad_kernel<T, kG> (kGateRows, halved down to 16 while
/// the grid has fewer than two full waves of resident CTAs: more CTAs, more loads in flight;
/// each halving doubles the row blocks' atomics, dm Hg of them a block, far fewer than the
/// products) and the grid. B*T < 2^31.
template <class T, int kG>
std::pair<int, dim3> gate_param_grad_grid(const Dims& d, int dev) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gate_param_grad_kernel<T, kG>, 256, 0) !=
          cudaSuccess ||
      per_sm <= 0)
    per_sm = 8;
  int sms = context(dev).sm_count;
  if (sms <= 0) sms = 132;
  const int64_t N = int64_t(d.B) * d.T, resident = int64_t(per_sm) * sms;
  const int64_t cols = grid_for(int64_t(d.dm) + 1, 256), gz = (d.Hg + kG - 1) / kG;
  int rows = kGateRows;
  while (rows > 16 && cols * ((N + rows - 1) / rows) * gz < 2 * resident) rows /= 2;
  const int64_t blocks = (N + rows - 1) / rows;
  LZ_CHECK(blocks <= 65535, "lizard attention: B*T = ", N, " tokens needs ", blocks,
           " row blocks in the gate gradient's grid (at most 65535, i.e. B*T <= ",
           int64_t(65535) * kGateRows, ")");
  return {rows, dim3(unsigned(cols), unsigned(blocks), unsigned(gz))};
}

/// gate_param_grad_kernel for d (kG 1 for the shared gate, kGateG per head).
template <class T>
void gate_param_grad_launch(const float* dz, const T* x, float* dwg, float* dbg, const Dims& d,
                            int dev, cudaStream_t s) {
  if (d.Hg == 1) {
    const auto [rows, grid] = gate_param_grad_grid<T, 1>(d, dev);
    pdl_launch("lizard gate parameter gradient", gate_param_grad_kernel<T, 1>, grid, 256, 0, s, dz,
               x, dwg, dbg, rows, d);
  } else {
    const auto [rows, grid] = gate_param_grad_grid<T, kGateG>(d, dev);
    pdl_launch("lizard gate parameter gradient", gate_param_grad_kernel<T, kGateG>, grid, 256, 0, s,
               dz, x, dwg, dbg, rows, d);
  }
}

}  // namespace lizard_detail

using namespace lizard_detail;

namespace {
Tensor f32_on(const Tensor& t, Device dev) {
  return t.defined() ? t.to(dev, DType::F32).contiguous() : Tensor();
}
__nv_bfloat16* bp16(const Tensor& t) { return static_cast<__nv_bfloat16*>(t.raw()); }
}  // namespace

void lizard_attention_backward(const ops::LizardConfig& cfg, const ops::LizardInputs& in,
                               const ops::LizardParams& p, const ops::LizardSaved& saved,
                               const Tensor& dy_in, ops::LizardGrads& out, void* stream,
                               const ops::LizardWants& want) {
  const ops::LizardDims ldim = ops::lizard_check_dims(cfg, in, p);
  const Dims d = make_dims(cfg, ldim);
  LZ_INPUT_CHECK(saved.numden.defined() && saved.wstats.defined(),
                 "lizard attention (CUDA) backward: `saved` must come from a forward with saved != nullptr");
  LZ_INPUT_CHECK(dy_in.shape() == in.q.shape(), "lizard attention backward: dy must be ", shape_str(in.q.shape()));
  const Device dev = in.q.device();
  auto s = static_cast<cudaStream_t>(stream);
  const DType dt = in.q.dtype();
  const Tensor q = in.q.contiguous(), k = in.k.contiguous(), v = in.v.contiguous(),
               x = in.x.contiguous(), dy = dy_in.to(dt).contiguous();
  const Tensor wq = f32_on(p.wq, dev), wk = f32_on(p.wk, dev), wg = f32_on(p.w_g, dev),
               tau = f32_on(p.tau, dev), alpha = f32_on(p.alpha, dev);
  const Tensor cs = d.rope ? f32_on(in.cos, dev) : Tensor(), sn = d.rope ? f32_on(in.sin, dev) : Tensor();
  const int64_t BHT = int64_t(d.B) * d.H * d.T, F2 = 2 * d.F, D1 = d.D + 1;
  auto aligned16 = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0; };
  const bool tc_aligned = aligned16(q) && aligned16(k) && aligned16(v);

  // tensor cores for the shapes the forward ran there (same test). phi is recomputed exactly
  // as the training forward made it (a bf16 hi + lo pair, from W as a hi + lo pair): the
  // saved statistics are f32-accurate functions of that phi, so every stage must see the
  // same values. The f32 stages of a tensor-core run (LIZARD_ATTENTION_TC_OFF, bisection)
  // read hi + lo widened to f32;
  // every mix is valid: both forms read and write the same tensors (dO', cself, dstates, dphi,
  // db).
  const bool tc = dt == DType::BF16 && tc_enabled(true) && tc_supported(d) && tc_aligned;
  const bool tc_win = tc && tc_window_supported(d) && !tc_stage_off("window_bwd");
  const bool tc_grad = tc && !tc_stage_off("grad");
  const bool tc_dstate = tc_grad && !tc_stage_off("state_bwd");
  const bool tc_fbwd = tc && !tc_stage_off("features_bwd");
  const bool f32_phi = !tc_grad || !tc_dstate || !tc_fbwd;  // some f32 stage reads phi (f32)
  Tensor phiq, phik, du;
  if (f32_phi && !tc) {
    phiq = Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev);
    phik = Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev);
  }
  if (!tc_fbwd) du = Tensor::empty({d.B, d.H, d.T, d.F}, DType::F32, dev);
  Tensor states = saved.states;  // undefined when the forward did not keep them (rebuilt below)
  LZ_CHECK(states.defined() || tc,
           "lizard attention (CUDA) backward: the forward kept no states, and only the tensor-core "
           "backward rebuilds them (did LIZARD_ATTENTION_KERNELS change between forward and backward?)");
  Tensor dO = Tensor::empty({d.B, d.H, d.T, D1}, DType::F32, dev);
  // dO' (without its den column) as the bf16 pair the mma.sync dstate sweep reads: written by
  // the tensor-core window backward beside dO', else split from dO' after the f32 one
  const bool dO_pair = tc_dstate && dt == DType::BF16 && state_mma_selected(d);
  Tensor dOh = dO_pair ? Tensor::empty({d.B, d.H, d.T, d.D}, DType::BF16, dev) : Tensor();
  Tensor dOl = dO_pair ? Tensor::empty({d.B, d.H, d.T, d.D}, DType::BF16, dev) : Tensor();
  __nv_bfloat16* dOhp = dO_pair ? bp16(dOh) : nullptr;
  __nv_bfloat16* dOlp = dO_pair ? bp16(dOl) : nullptr;
  Tensor cself = Tensor::empty({d.B, d.H, d.T}, DType::F32, dev);
  // written whole by the tensor-core kernel, accumulated by atomics in the f32 one
  Tensor dphiq = tc_grad ? Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev)
                         : Tensor::zeros({d.B, d.H, d.T, F2}, DType::F32, dev);
  Tensor dphik = tc_grad ? Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev)
                         : Tensor::zeros({d.B, d.H, d.T, F2}, DType::F32, dev);
  // f32 accumulators of dq, dk, dv: the tensor-core window backward stores its rows into them
  // first (every row, no read), the f32 window kernel adds (atomics) into zeros. The
  // tensor-core kernels skip the work of a gradient nobody wants (distillation wants none of
  // them): the window's query side its dq, its key side entirely when neither dk nor dv is
  // wanted, the global gradient kernel its dv, the feature backward its dx. A buffer is then
  // allocated only where an f32 fallback stage (bisection switches) or a wanted sibling still
  // writes it, and zeroed where it is read before the tensor-core window would write it.
  const bool win_keys = !tc_win || want.dk || want.dv;
  auto grad_f32 = [&](const Tensor& like, bool needed, bool stored) {
    if (!needed) return Tensor();
    return tc_win && stored ? Tensor::empty(like.shape(), DType::F32, dev)
                            : Tensor::zeros(like.shape(), DType::F32, dev);
  };
  const bool f32_stage = !tc_win || !tc_fbwd || !tc_grad;
  Tensor dq = grad_f32(in.q, want.dq || f32_stage, want.dq);
  Tensor dk = grad_f32(in.k, want.dk || want.dv || f32_stage, win_keys);
  Tensor dv = grad_f32(in.v, want.dk || want.dv || f32_stage, win_keys);
  auto ptr = [](Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  auto opt = [&](Tensor& t, bool w) { return w ? ptr(t) : nullptr; };
  // final gradients written by their last writer in the dtype of q, with no f32 -> bf16 pass:
  // dq by the split feature backward (its rows are owned: bf16(window part + du W^T)), when
  // dq is wanted (else that kernel adds into the f32 scratch only); dx by gate_dx_kernel
  const bool dq_direct = want.dq && tc_fbwd;
  Tensor dq_out = dq_direct ? Tensor::empty(in.q.shape(), dt, dev) : Tensor();
  Tensor dx = want.dx ? Tensor::empty(in.x.shape(), dt, dev) : Tensor();
  // db, dtau and dalpha (atomic accumulators) share one zeroed buffer: one memset a call.
  // dtau and dalpha exist only when wanted (frozen sinks and alpha: their atomics are skipped).
  const int64_t n_db = int64_t(d.B) * d.Hg * d.T;
  const int64_t n_tau = want.dsinks && d.m > 0 ? p.tau.numel() : 0, n_al = want.dsinks ? 1 : 0;
  Tensor acc = Tensor::zeros({n_db + n_tau + n_al}, DType::F32, dev);
  Tensor db = acc.slice(0, 0, n_db).view({d.B, d.Hg, d.T});
  // gradients nobody wants stay undefined (null pointers below: their work is skipped)
  auto zeros_if = [&](bool w, const Tensor& like) {
    return w ? Tensor::zeros(like.shape(), DType::F32, dev) : Tensor();
  };
  Tensor dwq = zeros_if(want.dwq, p.wq), dwk = zeros_if(want.dwk, p.wk);
  Tensor dwg = zeros_if(want.dgate, p.w_g), dbg = zeros_if(want.dgate, p.b_g);
  Tensor dtau = n_tau > 0 ? acc.slice(0, n_db, n_db + n_tau).view(p.tau.shape()) : Tensor();
  Tensor dalpha = n_al > 0 ? acc.slice(0, n_db + n_tau, n_db + n_tau + 1) : Tensor();
  float* dalphap = dalpha.defined() ? dalpha.data<float>() : nullptr;

  visit_dtype(dt, [&](auto z0) {
    using T0 = decltype(z0);
    if constexpr (std::is_same_v<T0, float> || std::is_same_v<T0, bf16>) {
      using T = std::conditional_t<std::is_same_v<T0, float>, float, __nv_bfloat16>;
      const T* qp = static_cast<const T*>(q.raw());
      const T* kp = static_cast<const T*>(k.raw());
      const T* vp = static_cast<const T*>(v.raw());
      const T* xp = static_cast<const T*>(x.raw());
      // the feature maps: the tensor-core forward's pair when it kept it, else recomputed
      // (the f32 path: cheaper than storing 2 x [B,H,T,2F] f32)
      const int ft = 128;
      const size_t fsm = sizeof(float) * (d.F + ft);
      // W as a bf16 pair (hi + lo) for the tensor-core phi: the recomputed u = x W to about
      // f32 accuracy, so phi and the exp map's arg-max match the f32 weights (bf16 W alone
      // moved the arg-max at near ties: dk errors of several % with feature_activation exp).
      // The training forward computed its phi the same way (bit-identical bf16 phi).
      Tensor wqb, wkb, wql, wkl, phiqb, phikb, phiql, phikl;
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc && saved.phiq.defined()) {  // kept by the forward (keep_states): these very bits
          wqb = saved.wq_hi, wql = saved.wq_lo, wkb = saved.wk_hi, wkl = saved.wk_lo;
          phiqb = saved.phiq, phiql = saved.phiq_lo, phikb = saved.phik, phikl = saved.phik_lo;
        } else if (tc) {
          for (auto [src, hi, lo] : {std::tuple{&wq, &wqb, &wql}, std::tuple{&wk, &wkb, &wkl}}) {
            *hi = Tensor::empty(src->shape(), DType::BF16, dev);
            *lo = Tensor::empty(src->shape(), DType::BF16, dev);
            split_bf16_launch(src->data<float>(), bp16(*hi), bp16(*lo), src->numel(), s);
          }
          phiqb = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
          phikb = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
          phiql = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
          phikl = Tensor::empty({d.B, d.H, d.T, F2}, DType::BF16, dev);
          features_tc_launch(qp, d.H, bp16(wqb), bp16(wql), bp16(phiqb), bp16(phiql), d, s);
          features_tc_launch(kp, d.Hkv, bp16(wkb), bp16(wkl), bp16(phikb), bp16(phikl), d, s);
        }
      }
      if (f32_phi && tc) {
        // f32 stages of a tensor-core run: the forward's phi, hi + lo widened to f32
        if constexpr (std::is_same_v<T, __nv_bfloat16>) {
          phiq = Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev);
          phik = Tensor::empty({d.B, d.H, d.T, F2}, DType::F32, dev);
          widen_pair_launch(bp16(phiqb), bp16(phiql), phiq.data<float>(), phiq.numel(), s);
          widen_pair_launch(bp16(phikb), bp16(phikl), phik.data<float>(), phik.numel(), s);
        }
      } else if (f32_phi) {
        features_fwd_launch(qp, wq.data<float>(), d.H, phiq.data<float>(), d, ft, fsm, s);
        features_fwd_launch(kp, wk.data<float>(), d.Hkv, phik.data<float>(), d, ft, fsm, s);
      }
      const float* csp = cs.defined() ? cs.data<float>() : nullptr;
      const float* snp = sn.defined() ? sn.data<float>() : nullptr;
      const float* taup = tau.defined() ? tau.data<float>() : nullptr;
      float* dtaup = dtau.defined() ? dtau.data<float>() : nullptr;
      bool window_done = false;
      // The window's key side (dk, dv only) runs on the side stream beside the dstate sweep
      // (at one token per row it fills a fraction of the GPU), joined before the global
      // gradient adds into dv. Every buffer it touches lives in this scope past the join.
      Tensor delta;
      StreamFork keys_fork(s, dev.index, tc_win && tc_grad && win_keys && side_streams_enabled(),
                           /*start=*/false);
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc_win) {
          delta = Tensor::empty({d.B, d.H, d.T}, DType::F32, dev);
          window_bwd_tc_launch(qp, kp, vp, csp, snp, taup, alpha.data<float>(),
                               saved.numden.data<float>(), saved.wstats.data<float>(),
                               static_cast<const T*>(dy.raw()), dO.data<float>(),
                               cself.data<float>(), dOhp, dOlp, delta.data<float>(), opt(dq, want.dq),
                               opt(dk, win_keys), opt(dv, win_keys), dtaup, dalphap, d, s,
                               &keys_fork);
          window_done = true;
        }
      }
      if (!window_done) {  // also w = 0: dO' and cself only
        const size_t wsm = sizeof(float) * kRowWarps * 4 * d.D;
        window_bwd_kernel<T><<<grid_for(BHT, kRowWarps), kRowWarps * 32, wsm, s>>>(
            qp, kp, vp, csp, snp, taup, alpha.data<float>(), saved.numden.data<float>(),
            saved.wstats.data<float>(), static_cast<const T*>(dy.raw()), dO.data<float>(),
            cself.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(), dtaup,
            dalphap, d);
      }
      // 1. global branch: dphi_q, dphi_k, dv, db. Must run before step 2, which reads dphi
      // (with TC_OFF=grad the f32 kernel used to run after the tensor-core features
      // backward, which then read the zeroed dphi: dq, dk, dwq, dwk came out wrong).
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (!states.defined()) {
          // the forward kept no states (LizardConfig::keep_states false): the same sweep on
          // the same recomputed phi_k pair, v and log-gates gives the forward's states bit for
          // bit. Rebuilt here, just before the kernels that read them, so they live only
          // through this backward.
          states = Tensor::empty({d.B, d.H, d.NC, F2, D1}, DType::F32, dev);
          state_tc_launch(bp16(phikb), bp16(phikl), vp, saved.bl.data<float>(), states.data<float>(),
                          true, d, s);
        }
        if (tc_grad) {
          // [B,H,NC,2F,D+1] by size, each chunk's block laid out as state_index says
          Tensor dstates = Tensor::empty({d.B, d.H, d.NC, F2, D1}, DType::F32, dev);
          if (tc_dstate) {
            if (dO_pair && !window_done)  // the f32 window kernel wrote dO' only
              split_rows_launch(dO.data<float>(), dOhp, dOlp, int64_t(d.B) * d.H * d.T, d.D, s);
            dstate_tc_launch(bp16(phiqb), bp16(phiql), dO.data<float>(), dOhp, dOlp,
                             saved.bl.data<float>(), dstates.data<float>(), d, s);
          } else {  // the f32 phi (hi + lo widened), as the tensor-core sweep reads it
            dstate_f32_kernel<float><<<grid_for(int64_t(d.B) * d.H * F2 * D1, 256), 256, 0, s>>>(
                phiq.data<float>(), dO.data<float>(), saved.bl.data<float>(), dstates.data<float>(), d);
          }
          if (want.dstates) out.dstates = dstates;  // kept for the tests' bit comparisons
          keys_fork.join();
          grad_tc_launch(bp16(phiqb), bp16(phiql), bp16(phikb), bp16(phikl), vp, saved.bl.data<float>(),
                         states.data<float>(), dstates.data<float>(), dO.data<float>(),
                         cself.data<float>(), dphiq.data<float>(), dphik.data<float>(),
                         opt(dv, want.dv), db.data<float>(), d, s);
        }
      }
      if (!tc_grad) {
        const size_t gsm = global_smem_bytes(d, true);
        cudaFuncSetAttribute(global_bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(gsm));
        dim3 gg(d.B * d.H, (D1 + kCols - 1) / kCols);
        global_bwd_kernel<T><<<gg, kGlobalThreads, gsm, s>>>(
            phiq.data<float>(), phik.data<float>(), vp, saved.bl.data<float>(),
            states.data<float>(), dO.data<float>(), cself.data<float>(), dphiq.data<float>(),
            dphik.data<float>(), dv.data<float>(), db.data<float>(), d);
      }
      // 2. feature maps: dq, dk (global parts), dwq, dwk from dphi
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if (tc_fbwd) {
          if (want.dq || want.dwq)
            features_bwd_tc_launch(qp, d.H, bp16(wqb), bp16(wql), dphiq.data<float>(),
                                   opt(dq, want.dq), false, ptr(dwq), d, s,
                                   dq_direct ? bp16(dq_out) : nullptr);
          if (want.dk || want.dwk)
            features_bwd_tc_launch(kp, d.Hkv, bp16(wkb), bp16(wkl), dphik.data<float>(),
                                   opt(dk, want.dk), true, ptr(dwk), d, s);
        }
      }
      if (!tc_fbwd) {
        const size_t bsm = sizeof(float) * (2 * d.F + ft);
        const int nblk = int(int64_t(d.B) * d.T * d.H);
        features_bwd_kernel<T><<<nblk, ft, bsm, s>>>(qp, wq.data<float>(), d.H, phiq.data<float>(),
                                                     dphiq.data<float>(), du.data<float>(),
                                                     dq.data<float>(), d);
        if (want.dwq)
          feature_weight_grad_kernel<T><<<grid_for(int64_t(d.H) * d.D * d.F, 256), 256, 0, s>>>(
              qp, d.H, du.data<float>(), dwq.data<float>(), d);
        features_bwd_kernel<T><<<nblk, ft, bsm, s>>>(kp, wk.data<float>(), d.Hkv, phik.data<float>(),
                                                     dphik.data<float>(), du.data<float>(),
                                                     dk.data<float>(), d);
        if (want.dwk)
          feature_weight_grad_kernel<T><<<grid_for(int64_t(d.H) * d.D * d.F, 256), 256, 0, s>>>(
              kp, d.Hkv, du.data<float>(), dwk.data<float>(), d);
      }
      // db holds da already when the tensor-core grad kernel ran (see grad_tc_kernel)
      pdl_launch("lizard gate scan", gate_scan_kernel, d.B * d.Hg, kScanThreads, 0, s,
                 db.data<float>(), saved.z.data<float>(), !tc_grad, d);
      LZ_CHECK(int64_t(d.B) * d.T < (int64_t(1) << 31), "lizard attention: B*T too large");
      if (want.dx) {
        const bool vec = d.dm % 8 == 0 && aligned16(dx) && aligned16(wg);
        const unsigned rows = unsigned(int64_t(d.B) * d.T);
        const size_t zsm = sizeof(float) * gate_dx_slots(d.Hg);
        if (vec)
          pdl_launch("lizard gate dx", gate_dx_kernel<T, true>, rows, 256, zsm, s, db.data<float>(),
                     wg.data<float>(), static_cast<T*>(dx.raw()), d);
        else
          pdl_launch("lizard gate dx", gate_dx_kernel<T, false>, rows, 256, zsm, s,
                     db.data<float>(), wg.data<float>(), static_cast<T*>(dx.raw()), d);
      }
      if (want.dgate)
        gate_param_grad_launch<T>(db.data<float>(), xp, dwg.data<float>(), dbg.data<float>(), d,
                                  dev.index, s);
    } else {
      throw Error("lizard attention (CUDA): unsupported dtype");
    }
  });
  check_last_error("lizard_attention_backward");
  // dk and dv (GQA atomics of the global branch and of the key features) keep f32 + one
  // conversion
  out.dq = dq_direct ? dq_out : want.dq ? dq.to(dt) : Tensor();
  out.dk = want.dk ? dk.to(dt) : Tensor();
  out.dv = want.dv ? dv.to(dt) : Tensor();
  out.dx = dx;
  out.dwq = dwq;
  out.dwk = dwk;
  out.dw_g = dwg;
  out.db_g = dbg;
  out.dtau = dtau;
  out.dalpha = dalpha;
}

}  // namespace lizard::cuda
