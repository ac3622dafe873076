// Lizard attention forward on tensor cores (contract: lizard_attention_tc.cuh). bf16 operands,
// f32 accumulators (nvcuda::wmma 16x16x16), the chunked algorithm of DESIGN.md section 3:
//   features  (the wmma kernels, LIZARD_FEATURES_KERNEL=wmma only: the default is
//             cuda/lizard_features_tc.cu) one CTA per (b, h, 64 tokens): u = x W_h (mma),
//             phi = map(u) in f32, bf16 out (training: its lo half too)
//   state     one CTA per (b, h, 64 rows of the 2F x D state): walks the chunks in order,
//             the state tile lives in accumulator fragments; writes [S|z] before every chunk
//   output    one CTA per (b, h, chunk): P = phi_q phi_k^T (mma), decay exp(bl_t - bl_s) on
//             the strictly causal part, then (phi_q exp(bl_t)) S + P V in one accumulator
// Every exponent is <= 0. Fragments go through shared memory before any elementwise work,
// so no code depends on the (unspecified) fragment-to-thread layout.
//
// Precision: in inference phi, the decayed tiles and the state copy fed to the mma are bf16
// (2^-9 relative); the states, z (the denominator column) and every sum are f32. Training
// splits the operands the saved statistics and the gradients are sensitive to into bf16
// hi + lo pairs (split2; hi*hi + hi*lo + lo*hi, about 2^-16), phi itself included (issue #5):
// the features kernel writes phi and phi_lo = bf16(phi_f32 - phi), u = x W with W as a pair,
// and every global-branch kernel reads phi as hi + lo (the state kernel's forward and reverse
// sweeps, the output kernel's P and phi_q.z, the gradient kernel's kk, Q_r, K_s, E phi_k,
// E^T phi_q). The forward's states, numden and wstats are then f32-accurate functions of the
// f32 phi, the backward recomputes that very pair, so the identities it relies on
// (sum_s w_ts (v_s - g_t) = 0 per row, window weights summing to 1) hold to f32 level and the
// gate gradients, sums of pair terms whose rows cancel, are those of the f32 phi.
// Expected error per quantity against the f32 oracle (training): y 2^-9 (bf16 output);
// states, numden about 1e-5 relative; da, dw_g, db_g, dalpha, dtau about 1e-4 (f32 sums of
// 2^-16-accurate terms); dv, dphi (so dq, dk, dW) a few 1e-3 at most (bf16 E, P, dS and
// decayed phi_k operands, 2^-9 each, uncorrelated). With phi rounded to bf16 (before issue
// #5) db_g of a convex-combine case was off by 0.042 (the exact gradient at a point 2^-9
// away; the f64 CPU reference with bf16 phi moves it by the same 0.0420); with bf16 operands
// throughout, dw_g / db_g reached 0.1-2 (H200, docs/benchmarks/2026-11-27-attention-h200.md).
// Inference keeps plain bf16 operands and no phi_lo.
// The self pair (s = t) stays out of M in f32 (see global_fwd_kernel): M is a sum of
// off-diagonal weights times (v_s - v_t), so it keeps its relative accuracy when a token
// attends almost only to itself (gates near 0).
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

namespace wmma = nvcuda::wmma;
using bf = __nv_bfloat16;

static_assert(kChunk % 16 == 0, "the tensor-core kernels need whole 16-token tiles");

constexpr int kFeatRows = 64;    // tokens per features CTA
constexpr int kFeatWarps = 4;
constexpr int kStateRows = 64;   // state rows (of 2F) per state CTA: 16 per warp
constexpr int kStateWarps = kStateRows / 16;
constexpr int kMaxDTiles = 8;    // D/16 <= 8: accumulator fragments per state warp
constexpr int kOutWarps = 8;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf, wmma::row_major>;
using FragAc = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Padded leading dimensions: bf16 rows + 8 and f32 rows + 4 keep wmma's ldm rule (a multiple
// of 16 bytes) and shift consecutive rows across shared-memory banks.
__host__ __device__ constexpr int ldb(int n) { return n + 8; }
__host__ __device__ constexpr int ldf(int n) { return n + 4; }
__host__ __device__ constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/// Next region of `bytes` from the shared-memory cursor, 128-byte aligned (wmma needs 32).
__device__ __forceinline__ char* carve(char*& p, size_t bytes) {
  char* r = p;
  p += al128(bytes);
  return r;
}

/// acc += sum over the k-steps k0 <= k < k1 of A_k B_k for one 16x16 output tile (the only
/// mma loop of this file). A_k: the k-th 16x16 block of a row-major A from `a` (ld lda),
/// blocks side by side; kAT: `a` holds A^T row-major (blocks stacked down). B_k: the k-th
/// block of a row-major B from `b` (ld ldbb), blocks stacked down; kBT: `b` holds B^T
/// row-major (blocks side by side). alo, blo (null, or laid out like a, b): the lo halves of
/// split operands (see split2), adding alo B + A blo: hi*hi + lo*hi + hi*lo, about 2^-16
/// relative (lo*lo, below that, is dropped).
template <bool kAT = false, bool kBT = false>
__device__ __forceinline__ void mma_acc(FragC& acc, const bf* a, int lda, const bf* b, int ldbb,
                                        int k0, int k1, const bf* alo = nullptr,
                                        const bf* blo = nullptr) {
  using FA = std::conditional_t<kAT, FragAc, FragA>;
  using FB = std::conditional_t<kBT, FragBc, FragB>;
  const int64_t as = kAT ? int64_t(16) * lda : 16, bs = kBT ? 16 : int64_t(16) * ldbb;
  for (int k = k0; k < k1; ++k) {
    FA fa;
    FB fb;
    wmma::load_matrix_sync(fa, a + k * as, lda);
    wmma::load_matrix_sync(fb, b + k * bs, ldbb);
    wmma::mma_sync(acc, fa, fb, acc);
    if (alo) {
      FA fl;
      wmma::load_matrix_sync(fl, alo + k * as, lda);
      wmma::mma_sync(acc, fl, fb, acc);
    }
    if (blo) {
      FB fl;
      wmma::load_matrix_sync(fl, blo + k * bs, ldbb);
      wmma::mma_sync(acc, fa, fl, acc);
    }
  }
}

/// The f32 tile at dst (ld ldd, row-major) = the product mma_acc forms from zero (same
/// operand arguments).
template <bool kAT = false, bool kBT = false>
__device__ __forceinline__ void mma_store(float* dst, int ldd, const bf* a, int lda, const bf* b,
                                          int ldbb, int k0, int k1, const bf* alo = nullptr,
                                          const bf* blo = nullptr) {
  FragC acc;
  wmma::fill_fragment(acc, 0.f);
  mma_acc<kAT, kBT>(acc, a, lda, b, ldbb, k0, k1, alo, blo);
  wmma::store_matrix_sync(dst, acc, ldd, wmma::mem_row_major);
}

/// The f32 tile at dst (ld ldd, row-major) += the product mma_acc forms (same arguments).
template <bool kAT = false, bool kBT = false>
__device__ __forceinline__ void mma_add(float* dst, int ldd, const bf* a, int lda, const bf* b,
                                        int ldbb, int k0, int k1, const bf* alo = nullptr,
                                        const bf* blo = nullptr) {
  FragC acc;
  wmma::load_matrix_sync(acc, dst, ldd, wmma::mem_row_major);
  mma_acc<kAT, kBT>(acc, a, lda, b, ldbb, k0, k1, alo, blo);
  wmma::store_matrix_sync(dst, acc, ldd, wmma::mem_row_major);
}

/// Copies `rows` rows of `n` bf16 (n a multiple of 8) from global (row r at src + r * gstride)
/// into shared (row r at dst + r * ldd); rows >= valid are zero. 16-byte accesses.
__device__ __forceinline__ void load_rows(bf* dst, int ldd, const bf* src, int64_t gstride,
                                          int rows, int valid, int n) {
  const int vpr = n / 8;
  for (int i = threadIdx.x; i < rows * vpr; i += blockDim.x) {
    const int r = i / vpr, c = (i % vpr) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid) val = *reinterpret_cast<const uint4*>(src + r * gstride + c);
    *reinterpret_cast<uint4*>(dst + r * ldd + c) = val;
  }
}

/// hi + lo = v to about 2^-17 relative (hi = bf16(v), lo = bf16(v - hi)): the operand pair of
/// the split products (hi*hi + hi*lo + lo*hi, the dropped lo*lo is below 2^-16 relative).
__device__ __forceinline__ void split2(float v, bf& hi, bf& lo) {
  hi = __float2bfloat16(v);
  lo = __float2bfloat16(v - __bfloat162float(hi));
}

/// bf16(v - bf16(v)): the lo half of split2 alone.
__device__ __forceinline__ bf lo_bf16(float v) {
  return __float2bfloat16(v - __bfloat162float(__float2bfloat16(v)));
}

/// A state [2F][D+1] f32 (contiguous, 16-byte aligned: 2F(D+1) is a multiple of 4 when 2F
/// is a multiple of 32) into shared: S as bf16 rows of ld `ldd`, the last column (z) as f32.
/// float4 loads, kUnroll of them in flight per thread: the output and gradient kernels are
/// bound by this read (128 KiB per CTA at 2F = 256, D = 128), which needs many bytes in flight.
/// dlo (null, or like dst): S - bf16(S) as bf16 (the split products of the training forward).
/// lo_only: dst gets S - bf16(S) instead of S (a second pass of a split product where shared
/// memory holds one copy of S at a time).
__device__ __forceinline__ void load_state(bf* dst, int ldd, float* zdst, const float* src,
                                           int F2, int D, bf* dlo = nullptr,
                                           bool lo_only = false) {
  constexpr int kUnroll = 8;
  const int D1 = D + 1, n4 = F2 * D1 / 4;
  const float4* s4 = reinterpret_cast<const float4*>(src);
  for (int base = threadIdx.x; base < n4; base += kUnroll * blockDim.x) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * blockDim.x;
      if (i < n4) v[u] = s4[i];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * blockDim.x;
      if (i >= n4) continue;
      int f = (4 * i) / D1, j = 4 * i - f * D1;
      const float vals[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        if (j == D) zdst[f] = vals[c];
        else if (dlo) split2(vals[c], dst[f * ldd + j], dlo[f * ldd + j]);
        else if (lo_only) dst[f * ldd + j] = lo_bf16(vals[c]);
        else dst[f * ldd + j] = __float2bfloat16(vals[c]);
        if (++j == D1) j = 0, ++f;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
/// kLo (training): phi_lo gets bf16(phi_f32 - phi) too; inference instantiates without it, so
/// its code is the same as before issue #5.
template <bool kExp, bool kLo>
__global__ void __launch_bounds__(kFeatWarps * 32)
    features_tc_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ W,
                       const bf* __restrict__ Wlo, bf* __restrict__ phi, bf* __restrict__ phi_lo,
                       Dims d) {
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, F = d.F, LX = ldb(D), LW = ldb(F), LU = ldf(F);
  char* cur = smem;
  bf* sx = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kFeatRows * LX));  // [64][D]
  bf* sw = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * D * LW));          // [D][F]
  float* su = reinterpret_cast<float*>(carve(cur, sizeof(float) * kFeatRows * LU));  // [64][F]
  bf* swl = Wlo ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * D * LW)) : nullptr;  // W - W_hi
  const int t0 = blockIdx.x * kFeatRows, h = blockIdx.y, b = blockIdx.z;
  const int hx = h / (d.H / Hx), n = min(kFeatRows, d.T - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_rows(sx, LX, x + ((int64_t(b) * d.T + t0) * Hx + hx) * D, int64_t(Hx) * D, kFeatRows, n, D);
  load_rows(sw, LW, W + int64_t(h) * D * F, F, D, D, F);
  if (Wlo) load_rows(swl, LW, Wlo + int64_t(h) * D * F, F, D, D, F);
  __syncthreads();
  const int ntile = (kFeatRows / 16) * (F / 16);
  for (int tile = warp; tile < ntile; tile += kFeatWarps) {
    const int rt = tile % (kFeatRows / 16), ct = tile / (kFeatRows / 16);
    mma_store(su + rt * 16 * LU + ct * 16, LU, sx + rt * 16 * LX, LX, sw + ct * 16, LW, 0,
              D / 16, nullptr, swl ? swl + ct * 16 : nullptr);
  }
  __syncthreads();
  // the map, one warp per token, in f32 (same formulas as features_kernel)
  for (int r = warp; r < n; r += kFeatWarps) {
    const float* u = su + r * LU;
    const int64_t o = ((int64_t(b) * d.H + h) * d.T + t0 + r) * 2 * F;
    bf* out = phi + o;
    // the f32 value of phi at index f: bf16 into phi, its lo half into phi_lo (training)
    auto put = [&](int f, float val) {
      if constexpr (kLo) split2(val, out[f], phi_lo[o + f]);
      else out[f] = __float2bfloat16(val);
    };
    if (kExp) {
      float m = 0.f;
      for (int f = lane; f < F; f += 32) m = fmaxf(m, fabsf(u[f]));
      m = warp_max(m);
      for (int f = lane; f < F; f += 32) {
        put(f, expf(u[f] - m));
        put(F + f, expf(-u[f] - m));
      }
    } else {
      float mp = -INFINITY, mn = -INFINITY;
      for (int f = lane; f < F; f += 32) mp = fmaxf(mp, u[f]), mn = fmaxf(mn, -u[f]);
      mp = warp_max(mp);
      mn = warp_max(mn);
      float sp = 0.f, sn = 0.f;
      for (int f = lane; f < F; f += 32) sp += expf(u[f] - mp), sn += expf(-u[f] - mn);
      const float ip = 1.f / warp_sum(sp), in = 1.f / warp_sum(sn);
      for (int f = lane; f < F; f += 32) {
        put(f, expf(u[f] - mp) * ip);
        put(F + f, expf(-u[f] - mn) * in);
      }
    }
  }
}

size_t features_smem(const Dims& d, bool split) {
  return al128(sizeof(bf) * kFeatRows * ldb(d.D)) + al128(sizeof(bf) * d.D * ldb(d.F)) * (split ? 2 : 1) +
         al128(sizeof(float) * kFeatRows * ldf(d.F));
}

// ---------------------------------------------------------------------------------------
/// Grid (ceil(2F / 64), B*H). Warp w owns state rows f0 + 16w .. f0 + 16w + 15 (all D
/// columns, D/16 fragments); thread i < 64 owns the last column (z) of row f0 + i.
/// Forward (kRev false): chunks in order, X <- exp(bl_end) X + (phi_k exp(bl_end - bl_s))^T
/// [V | 1] from phi = phi_k, vals = v bf16 [B,T,Hkv,D]. Backward (kRev true): chunks from the
/// last, dX <- exp(bl_end) dX + (phi_q exp(bl_t))^T dO' from phi = phi_q, dO' f32 [B,H,T,D+1]
/// (its column D is the den column, the counterpart of the ones). Either way the value of X
/// when chunk c is reached (before its own update) goes to out[b,h,c] [2F, D+1] f32.
/// kSplit (training): phi read as its hi + lo pair (phi_lo, the features kernel's lo half:
/// phi to about 2^-17, issue #5), the decayed phi split again into a bf16 hi + lo pair, two
/// mma's (v is exact in bf16): the saved states are then f32-accurate functions of the f32
/// phi (about 2^-16 relative per update instead of 2^-9), the same phi the backward
/// recomputes, so the backward's identities (z = sum of the weights that S sums) hold to f32
/// level and the gate gradients see phi itself, not a point 2^-9 away.
template <bool kRev, bool kSplit>
__global__ void __launch_bounds__(kStateWarps * 32)
    state_tc_kernel(const bf* __restrict__ phi, const bf* __restrict__ phi_lo,
                    const bf* __restrict__ v,
                    const float* __restrict__ dO, const float* __restrict__ bl_all,
                    float* __restrict__ out, Dims d) {
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, F2 = 2 * d.F, D1 = D + 1, LK = ldb(kStateRows), LV = ldb(D), LS = ldf(D);
  char* cur = smem;
  bf* sK = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kChunk * LK));  // [C][64] decayed phi
  bf* sV = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kChunk * LV));  // [C][D]
  float* stage = reinterpret_cast<float*>(carve(cur, sizeof(float) * kStateRows * LS));
  float* slast = reinterpret_cast<float*>(carve(cur, sizeof(float) * kChunk));  // 1 or dden
  bf* sKl = kSplit ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kChunk * LK)) : nullptr;  // lo
  // reverse split: dO' (not exact in bf16, unlike v) as a pair too
  bf* sVl = kSplit && kRev ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kChunk * LV)) : nullptr;
  const int f0 = blockIdx.x * kStateRows, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int nD = D / 16;
  const bool active = f0 + warp * 16 < F2;  // F2 is a multiple of 16: whole fragments
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  FragC acc[kMaxDTiles];
#pragma unroll
  for (int j = 0; j < kMaxDTiles; ++j) wmma::fill_fragment(acc[j], 0.f);
  float zf = 0.f;  // last column of row f0 + tid (tid < 64)
  // per-thread shares of one chunk's loads, issued together before the barrier (one round
  // of memory latency per chunk on this sequential path)
  constexpr int kThreads = kStateWarps * 32;
  constexpr int kPhiPer = kChunk * kStateRows / kThreads;      // decayed phi entries
  // v (forward): lane l takes uint4 column l % 16 of rows 2w + l / 16 + 8k, k < kVecPer
  // dO' (backward): rows w + 4k (k < kChunk / 4), columns l + 32m (m < kMaxDTiles / 2)
  constexpr int kVecPer = kChunk / (2 * kStateWarps);
  constexpr int kDoRows = kChunk / kStateWarps, kDoCols = kMaxDTiles / 2;
  constexpr int kDoPer = kDoRows * kDoCols;
  static_assert(kChunk * kStateRows % kThreads == 0 && kChunk % (2 * kStateWarps) == 0 &&
                    kMaxDTiles * 2 <= 16,
                "whole shares per thread");
  const int vpr = D / 8;  // uint4 per row of v
  const int vrow0 = 2 * warp + lane / 16, vcol = lane % 16;  // no division on this path
  for (int it = 0; it < d.NC; ++it) {
    const int c = kRev ? d.NC - 1 - it : it;
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    const float bend = blr[t0 + n - 1], eend = __expf(bend);
    float pr[kPhiPer];
#pragma unroll
    for (int q = 0; q < kPhiPer; ++q) {
      const int i = tid + q * kThreads, r = i / kStateRows, f = i % kStateRows;
      pr[q] = 0.f;
      if (r < n && f0 + f < F2) {
        const int64_t o = (int64_t(bh) * d.T + t0 + r) * F2 + f0 + f;
        float ph = __bfloat162float(phi[o]);
        if constexpr (kSplit) ph += __bfloat162float(phi_lo[o]);
        pr[q] = ph * __expf(kRev ? blr[t0 + r] : bend - blr[t0 + r]);
      }
    }
    uint4 vr[kRev ? 1 : kVecPer];
    float dr[kRev ? kDoPer : 1];
    if constexpr (!kRev) {
      const bf* src = v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * D;
#pragma unroll
      for (int q = 0; q < kVecPer; ++q) {
        const int r = vrow0 + 2 * kStateWarps * q;
        vr[q] = make_uint4(0, 0, 0, 0);
        if (vcol < vpr && r < n)
          vr[q] = *reinterpret_cast<const uint4*>(src + int64_t(r) * d.Hkv * D + vcol * 8);
      }
    } else {
      const float* src = dO + (int64_t(bh) * d.T + t0) * D1;  // n contiguous rows of D+1
#pragma unroll
      for (int q = 0; q < kDoPer; ++q) {
        const int r = warp + kStateWarps * (q / kDoCols), j = lane + 32 * (q % kDoCols);
        dr[q] = j < D && r < n ? src[r * D1 + j] : 0.f;
      }
    }
    const float lastv = tid < n ? (kRev ? dO[(int64_t(bh) * d.T + t0 + tid) * D1 + D] : 1.f) : 0.f;
    // the state before chunk c
    float* so = out + (int64_t(bh) * d.NC + c) * F2 * D1;
    if (active) {
      float* stw = stage + warp * 16 * LS;
#pragma unroll
      for (int j = 0; j < kMaxDTiles; ++j)
        if (j < nD) wmma::store_matrix_sync(stw + j * 16, acc[j], LS, wmma::mem_row_major);
      __syncwarp();
      float* sow = so + int64_t(f0 + warp * 16) * D1;
      for (int r = 0; r < 16; ++r)  // no division: this is the sequential path
        for (int j = lane; j < D; j += 32) sow[r * D1 + j] = stw[r * LS + j];
    }
    if (tid < kStateRows && f0 + tid < F2) so[int64_t(f0 + tid) * D1 + D] = zf;
    __syncthreads();  // every warp is done with sK, sV, slast of the previous chunk
#pragma unroll
    for (int q = 0; q < kPhiPer; ++q) {
      const int i = tid + q * kThreads, o = (i / kStateRows) * LK + i % kStateRows;
      if constexpr (kSplit) split2(pr[q], sK[o], sKl[o]);
      else sK[o] = __float2bfloat16(pr[q]);
    }
    if constexpr (!kRev) {
#pragma unroll
      for (int q = 0; q < kVecPer; ++q)
        if (vcol < vpr) *reinterpret_cast<uint4*>(sV + (vrow0 + 2 * kStateWarps * q) * LV + vcol * 8) = vr[q];
    } else {
#pragma unroll
      for (int q = 0; q < kDoPer; ++q) {
        const int r = warp + kStateWarps * (q / kDoCols), j = lane + 32 * (q % kDoCols);
        if (j >= D) continue;
        if constexpr (kSplit) split2(dr[q], sV[r * LV + j], sVl[r * LV + j]);
        else sV[r * LV + j] = __float2bfloat16(dr[q]);
      }
    }
    if (tid < kChunk) slast[tid] = lastv;
    __syncthreads();
    if (tid < kStateRows) {  // same rounded weights as the fragments (M stays consistent)
      float sz = 0.f;
      for (int r = 0; r < n; ++r) {
        float kv = __bfloat162float(sK[r * LK + tid]);
        if constexpr (kSplit) kv += __bfloat162float(sKl[r * LK + tid]);
        sz += kv * slast[r];
      }
      zf = eend * zf + sz;
    }
    if (active) {
#pragma unroll
      for (int j = 0; j < kMaxDTiles; ++j)
        for (int e = 0; e < acc[j].num_elements; ++e) acc[j].x[e] *= eend;
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        FragAc a, al;  // phi~^T: element (f, r) at sK[r * LK + f], column-major
        wmma::load_matrix_sync(a, sK + kk * 16 * LK + warp * 16, LK);
        if constexpr (kSplit) wmma::load_matrix_sync(al, sKl + kk * 16 * LK + warp * 16, LK);
#pragma unroll
        for (int j = 0; j < kMaxDTiles; ++j)
          if (j < nD) {
            FragB bb;
            wmma::load_matrix_sync(bb, sV + kk * 16 * LV + j * 16, LV);
            wmma::mma_sync(acc[j], a, bb, acc[j]);
            if constexpr (kSplit) wmma::mma_sync(acc[j], al, bb, acc[j]);
            if constexpr (kSplit && kRev) {
              wmma::load_matrix_sync(bb, sVl + kk * 16 * LV + j * 16, LV);
              wmma::mma_sync(acc[j], a, bb, acc[j]);
            }
          }
      }
    }
  }
}

size_t state_smem(const Dims& d, bool split, bool rev) {
  return al128(sizeof(bf) * kChunk * ldb(kStateRows)) * (split ? 2 : 1) +
         al128(sizeof(bf) * kChunk * ldb(d.D)) * (split && rev ? 2 : 1) +
         al128(sizeof(float) * kStateRows * ldf(d.D)) +
         al128(sizeof(float) * kChunk);
}

// ---------------------------------------------------------------------------------------
/// Grid (NC, B*H). Per chunk: P = phi_q phi_k^T; P~ = P exp(bl_t - bl_s) for s < t (bf16);
/// acc = (phi_q exp(bl_t)) S + P~ V; M = acc - (exp(bl_t) phi_q.z + rowsum P~) v_t;
/// den = exp(bl_t) phi_q.z + rowsum P~ + P_tt.
/// kSplit (forward of training): phi_q, phi_k as the features kernel's hi + lo pairs (phiq_lo,
/// phik_lo: P = phi_q phi_k^T in three mma's, phi.z and the diagonal from the f32 phi), P~,
/// phi_q exp(bl_t) and S as bf16 hi + lo pairs (P~ V in two mma's, v exact; (phi_q e) S in
/// three, hi*hi + hi*lo + lo*hi), the row sums from the same pairs. numden is then an
/// f32-accurate function of the f32 phi (about 2^-16 relative, against 2^-9 per weight
/// without the split), the phi the backward recomputes bit for bit:
/// M stays sum_s w_ts (v_s - v_t) with the very weights den sums, which the gate gradients
/// (sums over pairs with heavy cancellation) rely on. Costs about 2.7x the mma's and 87 KiB
/// more shared memory (221.5 KiB at 2F = 256, D = 128: one CTA per SM); inference keeps
/// kSplit false (134.5 KiB there).
template <bool kSplit>
__global__ void __launch_bounds__(kOutWarps * 32)
    out_tc_kernel(const bf* __restrict__ phiq, const bf* __restrict__ phiq_lo,
                  const bf* __restrict__ phik, const bf* __restrict__ phik_lo,
                  const bf* __restrict__ v,
                  const float* __restrict__ bl_all, const float* __restrict__ states,
                  float* __restrict__ numden, Dims d) {
  extern __shared__ __align__(128) char smem[];
  constexpr int C = kChunk, CT = kChunk / 16;
  const int D = d.D, F2 = 2 * d.F, D1 = D + 1;
  const int LQ = ldb(F2), LV = ldb(D), LP = ldf(C), LPb = ldb(C), LA = ldf(D);
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));     // [C][2F] phi_q
  bf* sk = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));     // [C][2F] phi_k
  bf* sv = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LV));     // [C][D]
  bf* sS = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * F2 * LV));    // [2F][D] state
  float* sP = reinterpret_cast<float*>(carve(cur, sizeof(float) * C * LP));  // [C][C]
  bf* sPb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LPb));   // [C][C] P~
  // [C][D] f32 acc; split: first phi_q's lo half [C][2F] bf16, dead before acc is written
  float* sacc = reinterpret_cast<float*>(
      carve(cur, std::max(sizeof(float) * C * LA, kSplit ? sizeof(bf) * C * LQ : size_t(0))));
  float* sz = reinterpret_cast<float*>(carve(cur, sizeof(float) * F2));
  float* sbl = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));
  float* srow = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));
  float* sdiag = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));
  float* sqz = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));
  bf* sSl = kSplit ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * F2 * LV)) : nullptr;  // S lo
  bf* sPl = kSplit ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LPb)) : nullptr;  // P~ lo
  bf* skl = kSplit ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ)) : nullptr;  // phi_k lo
  bf* sqlo = kSplit ? reinterpret_cast<bf*>(sacc) : nullptr;  // phi_q lo (the input's)
  bf* sql = sk;  // lo of phi_q exp(bl_t) (split form): phi_k is dead once P is formed
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int t0 = c * C, n = min(C, d.T - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int64_t row0 = int64_t(bh) * d.T + t0;  // row of token t0 in [B,H,T,*]
  load_rows(sq, LQ, phiq + row0 * F2, F2, C, n, F2);
  load_rows(sk, LQ, phik + row0 * F2, F2, C, n, F2);
  if constexpr (kSplit) {
    load_rows(sqlo, LQ, phiq_lo + row0 * F2, F2, C, n, F2);
    load_rows(skl, LQ, phik_lo + row0 * F2, F2, C, n, F2);
  }
  load_rows(sv, LV, v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * D, int64_t(d.Hkv) * D, C, n, D);
  const float* so = states + (int64_t(bh) * d.NC + c) * F2 * D1;  // contiguous [2F][D+1]
  load_state(sS, LV, sz, so, F2, D, sSl);
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < C; i += blockDim.x) sbl[i] = i < n ? blr[t0 + i] : 0.f;
  __syncthreads();
  // P = phi_q phi_k^T on the lower-triangular tiles (the others are never read)
  for (int tile = warp; tile < CT * CT; tile += kOutWarps) {
    const int rt = tile / CT, st = tile % CT;
    if (st > rt) continue;
    // phi_k^T: element (f, s) at sk[s * LQ + f], column-major
    mma_store<false, true>(sP + rt * 16 * LP + st * 16, LP,
                           sq + rt * 16 * LQ, LQ, sk + st * 16 * LQ, LQ, 0, F2 / 16,
                           kSplit ? sqlo + rt * 16 * LQ : nullptr,
                           kSplit ? skl + st * 16 * LQ : nullptr);
  }
  __syncthreads();
  // per row (one warp): decayed strictly-causal P~ in bf16 and its row sum, the diagonal,
  // phi_q.z; then phi_q scaled by exp(bl_t) in place for the inter-chunk product
  for (int r = warp; r < C; r += kOutWarps) {
    float rs = 0.f, qz = 0.f;
    for (int s = lane; s < C; s += 32) {
      float p = 0.f;
      if (s < r && r < n) p = sP[r * LP + s] * __expf(sbl[r] - sbl[s]);
      const bf pb = __float2bfloat16(p);
      sPb[r * LPb + s] = pb;
      rs += __bfloat162float(pb);  // the same rounded weights as the mma (M consistent)
      if constexpr (kSplit) {
        const bf pl = __float2bfloat16(p - __bfloat162float(pb));
        sPl[r * LPb + s] = pl;
        rs += __bfloat162float(pl);
      }
    }
    // phi_q's f32 value (hi + lo in training)
    auto phq = [&](int f) {
      float ph = __bfloat162float(sq[r * LQ + f]);
      if constexpr (kSplit) ph += __bfloat162float(sqlo[r * LQ + f]);
      return ph;
    };
    for (int f = lane; f < F2; f += 32) qz += phq(f) * sz[f];
    rs = warp_sum(rs);
    qz = warp_sum(qz);
    __syncwarp();
    const float er = __expf(sbl[r]);
    for (int f = lane; f < F2; f += 32) {
      const float qe = phq(f) * er;
      if constexpr (kSplit) split2(qe, sq[r * LQ + f], sql[r * LQ + f]);
      else sq[r * LQ + f] = __float2bfloat16(qe);
    }
    if (lane == 0) {
      srow[r] = rs;
      sdiag[r] = r < n ? sP[r * LP + r] : 0.f;
      sqz[r] = qz;
    }
  }
  __syncthreads();
  // acc = (phi_q exp(bl_t)) S + P~ V
  for (int tile = warp; tile < CT * (D / 16); tile += kOutWarps) {
    const int rt = tile % CT, jt = tile / CT;
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    mma_acc(acc, sq + rt * 16 * LQ, LQ, sS + jt * 16, LV, 0, F2 / 16,
            kSplit ? sql + rt * 16 * LQ : nullptr, kSplit ? sSl + jt * 16 : nullptr);
    // P~ is strictly lower triangular
    mma_acc(acc, sPb + rt * 16 * LPb, LPb, sv + jt * 16, LV, 0, rt + 1,
            kSplit ? sPl + rt * 16 * LPb : nullptr);
    wmma::store_matrix_sync(sacc + rt * 16 * LA + jt * 16, acc, LA, wmma::mem_row_major);
  }
  __syncthreads();
  float* nd = numden + row0 * D1;  // the chunk's n rows are contiguous
  for (int i = tid; i < n * D1; i += blockDim.x) {
    const int r = i / D1, j = i % D1;
    const float dex = __expf(sbl[r]) * sqz[r] + srow[r];  // den without the self pair
    nd[i] = j < D ? sacc[r * LA + j] - dex * __bfloat162float(sv[r * LV + j]) : dex + sdiag[r];
  }
}

size_t out_smem(const Dims& d, bool split) {
  const int C = kChunk, F2 = 2 * d.F;
  const size_t acc = std::max(sizeof(float) * C * ldf(d.D), split ? sizeof(bf) * C * ldb(F2) : 0);
  return al128(sizeof(bf) * C * ldb(F2)) * (split ? 3 : 2) + al128(sizeof(bf) * C * ldb(d.D)) +
         al128(sizeof(bf) * F2 * ldb(d.D)) * (split ? 2 : 1) + al128(sizeof(float) * C * ldf(C)) +
         al128(sizeof(bf) * C * ldb(C)) * (split ? 2 : 1) + al128(acc) +
         al128(sizeof(float) * F2) + 4 * al128(sizeof(float) * C);
}

// ---------------------------------------------------------------------------------------
constexpr int kWinRows = 32;  // queries per window CTA
constexpr int kWinWarps = 4;
constexpr size_t kWinSmemCap = 200 * 1024;  // of the 227 KiB an H100/H200 CTA may take

/// Keys a window CTA can see: t0 - w + 1 .. t0 + kWinRows - 1, rounded up to whole tiles.
__host__ __device__ inline int win_keys(int w) { return (kWinRows + w - 1 + 15) / 16 * 16; }

/// Whether the training window kernels take the RoPE'd q~, k~ of the scores as split hi + lo
/// pairs: only with window RoPE (without it q and k are bf16 inputs, exact as they are).
__host__ __device__ inline bool window_lo_ops(const Dims& d) { return d.rope != 0; }

/// One row of x (bf16 [.., D]) into shared bf16, RoPE'd at `pos` when rope (f32 maths).
/// dst_lo (null, or like dst): the lo half of the RoPE'd f32 row (split2), for score products
/// that must see the rotation at f32 accuracy (a bf16-rounded x~ moves every score by about
/// 2^-9 |c|, which the sinks' dtau, a sum over few rows, does not tolerate).
__device__ __forceinline__ void load_row_rope(bf* dst, const bf* src, int D, bool rope,
                                              const float* cosb, const float* sinb, int pos,
                                              int lane, bf* dst_lo = nullptr) {
  const int hD = D / 2;
  for (int j = lane; j < D; j += 32) {
    const float val = rope ? rope_at(src, j, hD, cosb + int64_t(pos) * hD, sinb + int64_t(pos) * hD)
                           : __bfloat162float(src[j]);
    if (dst_lo) split2(val, dst[j], dst_lo[j]);
    else dst[j] = __float2bfloat16(val);
  }
}

/// Rows i < rows of dst (ld ldd) = row(i) RoPE'd at position pos0 + i for i < valid, zeros
/// after (whole 16-row tiles for the mma); one warp a row, over the kWinWarps warps.
/// dst_lo (null, or like dst): the lo halves too (see load_row_rope).
template <class Row>
__device__ __forceinline__ void load_rows_rope(bf* dst, int ldd, int rows, int valid, Row row,
                                               int pos0, int D, bool rope, const float* cosb,
                                               const float* sinb, bf* dst_lo = nullptr) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = warp; i < rows; i += kWinWarps) {
    if (i < valid) {
      load_row_rope(dst + i * ldd, row(i), D, rope, cosb, sinb, pos0 + i, lane,
                    dst_lo ? dst_lo + i * ldd : nullptr);
    } else {
      for (int j = lane; j < D; j += 32) {
        dst[i * ldd + j] = __float2bfloat16(0.f);
        if (dst_lo) dst_lo[i * ldd + j] = __float2bfloat16(0.f);
      }
    }
  }
}

/// out [kWinRows][cols] f32 (ld ldo) = A B^T for A [kWinRows][D], B [cols][D] bf16 rows (ld
/// lda), cols a multiple of 16: the window kernels' score-shaped products, tiles over the
/// kWinWarps warps. Alo, Blo (both null, or both laid out like A, B): split operands, the
/// product taken as hi*hi + lo*hi + hi*lo (mma_acc).
__device__ __forceinline__ void window_abt(float* out, int ldo, const bf* A, const bf* B,
                                           int lda, int cols, int D, const bf* Alo = nullptr,
                                           const bf* Blo = nullptr) {
  for (int tile = threadIdx.x / 32; tile < (kWinRows / 16) * (cols / 16); tile += kWinWarps) {
    const int rt = tile % (kWinRows / 16), ct = tile / (kWinRows / 16);
    // B^T: element (j, s) at B[s * lda + j], column-major
    mma_store<false, true>(out + rt * 16 * ldo + ct * 16, ldo, A + rt * 16 * lda, lda,
                           B + ct * 16 * lda, lda, 0, D / 16, Alo ? Alo + rt * 16 * lda : nullptr,
                           Blo ? Blo + ct * 16 * lda : nullptr);
  }
}

/// Window branch and combine. Grid (ceil(T / 32), B*H). Scores q k^T / sqrt(D) over
/// t-w < s <= t (mma, RoPE applied while loading), the row max taken over the scores and the
/// sinks, p = exp(c - max) rounded to bf16 (the denominator sums the same rounded values),
/// l = P V / den (mma), y = combine(g, l) with g from numden. wstats = (max, den) as
/// window_fwd_kernel writes them.
/// split (training): p as a bf16 hi + lo pair (P V in two mma's, v exact) and the denominator
/// summed from the f32 p, so wstats is the f32 row max and denominator of the scores the
/// backward recomputes (same bf16 q~, k~, same mma: bit-identical), its normalized weights
/// sum to 1 to about 2^-22 instead of 2^-9 / sqrt(w) (the dtau, dalpha and dq identities
/// sum_s P_ts (dP_ts - delta_t) = 0 need it), and l to about 2^-16. With window RoPE, split
/// also takes the RoPE'd q~, k~ as hi + lo pairs in the scores (window_lo_ops), so the
/// scores are those of the exact rotation to about 2^-16, as the backward kernels recompute
/// them.
__global__ void __launch_bounds__(kWinWarps * 32)
    window_tc_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                     const float* __restrict__ cosb, const float* __restrict__ sinb,
                     const float* __restrict__ tau, const float* __restrict__ alpha_p,
                     const float* __restrict__ numden, bf* __restrict__ y,
                     float* __restrict__ wstats, bool split, Dims d) {
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, D1 = D + 1, NKmax = win_keys(d.w);
  const int LD = ldb(D), LS = ldf(NKmax), LPb = ldb(NKmax), LA = ldf(D);
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD));      // [32][D]
  bf* skv = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NKmax * LD));        // [NK][D] K, then V
  float* sS = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LS));  // scores
  bf* sPb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LPb));    // [32][NK]
  float* sacc = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LA));
  float* sinv = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows));  // 1/den
  bf* sPl = split ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LPb)) : nullptr;
  const bool lo_ops = split && window_lo_ops(d);
  bf* sql = lo_ops ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD)) : nullptr;
  bf* skl = lo_ops ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NKmax * LD)) : nullptr;
  const int t0 = blockIdx.x * kWinRows, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv);
  const int n = min(kWinRows, d.T - t0);
  const int ks = max(0, t0 - d.w + 1), nk = t0 + n - ks, NK = (nk + 15) / 16 * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const bool rope = d.rope;
  auto qrow = [&](int t) { return q + ((int64_t(b) * d.T + t) * d.H + h) * D; };
  auto kvrow = [&](const bf* base, int s) { return base + ((int64_t(b) * d.T + s) * d.Hkv + kvh) * D; };
  load_rows_rope(sq, LD, kWinRows, n, [&](int r) { return qrow(t0 + r); }, t0, D, rope, cosb, sinb, sql);
  load_rows_rope(skv, LD, NK, nk, [&](int i) { return kvrow(k, ks + i); }, ks, D, rope, cosb, sinb, skl);
  __syncthreads();
  window_abt(sS, LS, sq, skv, LD, NK, D, sql, skl);  // scores q k^T
  __syncthreads();
  // V replaces K; the row pass below reads only sS
  load_rows(skv, LD, v + ((int64_t(b) * d.T + ks) * d.Hkv + kvh) * D, int64_t(d.Hkv) * D, NK, nk, D);
  const float* tr = d.m ? tau + (d.Ht == 1 ? 0 : h) * d.m : nullptr;
  for (int r = warp; r < kWinRows; r += kWinWarps) {
    const int t = t0 + r;
    // key i (position ks + i) is in the window of t iff t - w < ks + i <= t
    const int lo = t - d.w + 1 - ks, hi = t - ks;
    float mx = -INFINITY;
    if (r < n) {
      for (int i = lane; i < NK; i += 32)
        if (i >= lo && i <= hi) mx = fmaxf(mx, sS[r * LS + i] * d.scale);
      for (int j = lane; j < d.m; j += 32) mx = fmaxf(mx, tr[j]);
    }
    mx = warp_max(mx);
    float den = 0.f;
    for (int i = lane; i < NK; i += 32) {
      float p = 0.f;
      if (r < n && i >= lo && i <= hi) p = __expf(sS[r * LS + i] * d.scale - mx);
      const bf pb = __float2bfloat16(p);
      sPb[r * LPb + i] = pb;
      if (split) {
        sPl[r * LPb + i] = __float2bfloat16(p - __bfloat162float(pb));
        den += p;
      } else {
        den += __bfloat162float(pb);  // the rounded weights the mma sums
      }
    }
    if (r < n)
      for (int j = lane; j < d.m; j += 32) den += __expf(tr[j] - mx);
    den = warp_sum(den);
    if (lane == 0 && r < n) {
      sinv[r] = 1.f / den;
      float* ws = wstats + ((int64_t(bh)) * d.T + t) * 2;
      ws[0] = mx;
      ws[1] = den;
    }
  }
  __syncthreads();
  for (int tile = warp; tile < (kWinRows / 16) * (D / 16); tile += kWinWarps) {
    const int rt = tile % (kWinRows / 16), jt = tile / (kWinRows / 16);
    mma_store(sacc + rt * 16 * LA + jt * 16, LA, sPb + rt * 16 * LPb, LPb, skv + jt * 16, LD, 0,
              NK / 16, split ? sPl + rt * 16 * LPb : nullptr);
  }
  __syncthreads();
  const float alpha = alpha_p[0];
  const bool convex = d.combine_convex;
  const float A = convex ? fabsf(alpha) : alpha;
  for (int i = tid; i < n * D; i += blockDim.x) {
    const int r = i / D, j = i % D, t = t0 + r;
    const float* nd = numden + (int64_t(bh) * d.T + t) * D1;
    const float vt = __bfloat162float(kvrow(v, t)[j]);
    const float g = global_out(nd, vt, j, d), l = sacc[r * LA + j] * sinv[r];
    y[((int64_t(b) * d.T + t) * d.H + h) * D + j] =
        __float2bfloat16(convex ? (g + A * l) / (1.f + A) : g + alpha * l);
  }
}

size_t window_smem(const Dims& d, bool split) {
  const int NK = win_keys(d.w);
  return (al128(sizeof(bf) * kWinRows * ldb(d.D)) + al128(sizeof(bf) * NK * ldb(d.D))) *
             (split && window_lo_ops(d) ? 2 : 1) +
         al128(sizeof(float) * kWinRows * ldf(NK)) +
         al128(sizeof(bf) * kWinRows * ldb(NK)) * (split ? 2 : 1) +
         al128(sizeof(float) * kWinRows * ldf(d.D)) + al128(sizeof(float) * kWinRows);
}

// ---------------------------------------------------------------------------------------
/// Global branch backward of one chunk (grid (NC, B*H)), the tensor-core form of
/// global_bwd_kernel with the same formulas: kk = phi_q phi_k^T, e = exp(bl_t - bl_s),
/// dA_ts = cself_t + X_ts - X_tt with X = dO'[:D] V^T (mma; exactly cself_t on the diagonal),
/// E = dA e, P = kk e (s <= t);
///   dphi_q = E phi_k + exp(bl_t) [S|z] dO'_t            (S, z: state before the chunk)
///   dphi_k = E^T phi_q + exp(bl_end - bl_s) [dS|dz] [v_s|1]  (dS: gradient of the state after)
///   dv    += P^T dO'[:D] + exp(bl_end - bl_s) phi_k dS   (atomics: GQA heads share v)
///   da    += the gradient of the log-gate a_t itself (atomics: the heads of a shared gate),
///            not of the cumulative b: a_t scales every pair (t', s) with s < t <= t', so
///            da_t = sum of w dA over the pairs crossing t, in four parts: intra-chunk pairs
///            (f32 from kk, e, dA), queries of this chunk at or after t with keys before the
///            chunk (suffix sum of Q_r = phi_q.x_q), keys of this chunk before t with queries
///            after the chunk (prefix sum of K_s = phi_k.x_k), and every pair from before the
///            chunk to after it, L_c = exp(bl_end) <dX_c, X_c> from the f32 states. Nothing
///            is left for a reverse cumsum over the sequence: the per-token db of the f32
///            kernel, reverse-summed, cancels O(T) terms of bf16-level error down to an O(1)
///            result (rel. errors up to 10 in dw_g at T = 4096).
/// dphi_q, dphi_k [B,H,T,2F] f32 are written (not added): this CTA owns those rows.
/// phi enters as its hi + lo pair (phiq_lo, phik_lo from the features kernel; issue #5):
/// kk (three mma's), Q_r, K_s and every other quantity that feeds da take phi to about
/// 2^-17, so da is the gradient at the f32 phi (bf16 phi alone moved db_g of a convex-combine
/// case by 0.042 relative, the gradient at a point 2^-9 away). E phi_k and E^T phi_q (dphi)
/// take the lo halves too (one more mma per k-step, cheap next to the state reads); only the
/// decayed phi_k of dv's inter-chunk term and the bf16 E, P stay rounded (2^-9 per weight,
/// uncorrelated: dv, dphi within a few 1e-3 relative, below the 1e-2 of the tests).
__global__ void __launch_bounds__(kOutWarps * 32)
    grad_tc_kernel(const bf* __restrict__ phiq, const bf* __restrict__ phiq_lo,
                   const bf* __restrict__ phik, const bf* __restrict__ phik_lo,
                   const bf* __restrict__ v,
                   const float* __restrict__ bl_all, const float* __restrict__ states,
                   const float* __restrict__ dstates, const float* __restrict__ dO,
                   const float* __restrict__ cself, float* __restrict__ dphiq,
                   float* __restrict__ dphik, float* __restrict__ dv, float* __restrict__ db,
                   Dims d) {
  extern __shared__ __align__(128) char smem[];
  constexpr int C = kChunk, CT = kChunk / 16;
  const int D = d.D, F2 = 2 * d.F, D1 = D + 1;
  const int LQ = ldb(F2), LV = ldb(D), LP = ldf(C), LPb = ldb(C), LX = ldf(max(F2, D));
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));    // [C][2F] phi_q
  bf* sk = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));    // [C][2F] phi_k (scaled last)
  bf* sv = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LV));    // [C][D] v (scaled in step 5)
  float* sGV = reinterpret_cast<float*>(carve(cur, sizeof(float) * C * LP));  // dO'[:D] V^T
  bf* sGb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LV));   // dO' bf16
  bf* sGs = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LV));   // dO' exp(bl_t) bf16
  float* sP = reinterpret_cast<float*>(carve(cur, sizeof(float) * C * LP));  // kk
  bf* sE = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LPb));
  bf* sPb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LPb));
  bf* sBig = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * F2 * LV));  // [2F][D] S, then dS
  float* sX = reinterpret_cast<float*>(carve(cur, sizeof(float) * C * LX));
  float* sz = reinterpret_cast<float*>(carve(cur, sizeof(float) * F2));  // z, then dz
  float* sbl = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));
  float* sden = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));  // dO' column D
  float* scs = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));   // cself
  float* sdb = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));   // da of the rows
  float* sW = reinterpret_cast<float*>(carve(cur, sizeof(float) * C * LP));  // w dA, s < t, f32
  float* sQs = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));  // Q_r (inter, query)
  float* sKs = reinterpret_cast<float*>(carve(cur, sizeof(float) * C));  // K_s (inter, key)
  float* sL = reinterpret_cast<float*>(carve(cur, sizeof(float) * 1));   // L_c
  // lo halves (split2) of dO' (step 2), dO' exp(bl_t) (step 4) and v exp(bl_end - bl_s)
  // (step 5), one buffer in turn: with S and dS taken in two passes (hi, then lo, one copy
  // in shared memory at a time), the products that feed the gate gradient (X, Q_r, K_s:
  // partial sums of pair terms whose rows cancel) are f32-accurate (about 2^-16) instead of
  // 2^-9 per operand
  bf* sLo = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LV));
  bf* sGbl = sLo;
  bf* sGsl = sLo;
  bf* svl = sLo;
  bf* sql = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));  // [C][2F] phi_q lo
  bf* skl = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * C * LQ));  // [C][2F] phi_k lo
  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int t0 = c * C, n = min(C, d.T - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x, nt = blockDim.x;
  const int64_t row0 = int64_t(bh) * d.T + t0;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < C; i += nt) {
    sbl[i] = i < n ? blr[t0 + i] : 0.f;
    sden[i] = i < n ? dO[(row0 + i) * D1 + D] : 0.f;
    scs[i] = i < n ? cself[row0 + i] : 0.f;
    sdb[i] = sQs[i] = sKs[i] = 0.f;
  }
  if (tid == 0) sL[0] = 0.f;
  load_rows(sq, LQ, phiq + row0 * F2, F2, C, n, F2);
  load_rows(sk, LQ, phik + row0 * F2, F2, C, n, F2);
  load_rows(sql, LQ, phiq_lo + row0 * F2, F2, C, n, F2);
  load_rows(skl, LQ, phik_lo + row0 * F2, F2, C, n, F2);
  load_rows(sv, LV, v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * D, int64_t(d.Hkv) * D, C, n, D);
  const float* so = states + (int64_t(bh) * d.NC + c) * F2 * D1;
  load_state(sBig, LV, sz, so, F2, D);
  // dO'[:D] exp(bl_t), the operand of step 4 (its lo half is formed after step 2)
  auto gs_at = [&](int r, int j) {
    return r < n ? dO[(row0 + r) * D1 + j] * __expf(blr[t0 + r]) : 0.f;
  };
  for (int r = warp; r < C; r += nt / 32) {  // dO'[:D] as bf16, plain and times exp(bl_t)
    for (int j = lane; j < D; j += 32) {
      const float g = r < n ? dO[(row0 + r) * D1 + j] : 0.f;
      split2(g, sGb[r * LV + j], sGbl[r * LV + j]);
      sGs[r * LV + j] = __float2bfloat16(gs_at(r, j));
    }
  }
  __syncthreads();
  // step 2: kk = phi_q phi_k^T and X = dO'[:D] V^T on the lower-triangular tiles
  for (int tile = warp; tile < 2 * CT * CT; tile += kOutWarps) {
    const bool is_x = tile >= CT * CT;
    const int rt = (tile % (CT * CT)) / CT, st = tile % CT;
    if (st > rt) continue;
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    if (!is_x) {
      mma_acc<false, true>(acc, sq + rt * 16 * LQ, LQ, sk + st * 16 * LQ, LQ, 0, F2 / 16,
                           sql + rt * 16 * LQ, skl + st * 16 * LQ);
      wmma::store_matrix_sync(sP + rt * 16 * LP + st * 16, acc, LP, wmma::mem_row_major);
    } else {
      // V^T: element (j, s) at sv[s * LV + j]
      mma_acc<false, true>(acc, sGb + rt * 16 * LV, LV, sv + st * 16 * LV, LV, 0, D / 16,
                           sGbl + rt * 16 * LV);
      wmma::store_matrix_sync(sGV + rt * 16 * LP + st * 16, acc, LP, wmma::mem_row_major);
    }
  }
  __syncthreads();
  // step 3: dA, E, P and the intra-chunk pair gradients w dA (f32, for da)
  for (int i = tid; i < C * C; i += nt) {
    const int r = i / C, s2 = i % C;
    float p = 0.f, ea = 0.f, wda = 0.f;
    if (s2 <= r && r < n) {
      const float e = __expf(sbl[r] - sbl[s2]), kk = sP[r * LP + s2];
      // dA = cself_t + dO'_t.(v_s - v_t): exactly cself_t on the diagonal
      const float da = scs[r] + (s2 < r ? sGV[r * LP + s2] - sGV[r * LP + r] : 0.f);
      p = kk * e;
      ea = da * e;
      if (s2 < r) wda = kk * ea;
    }
    sE[r * LPb + s2] = __float2bfloat16(ea);
    sPb[r * LPb + s2] = __float2bfloat16(p);
    sW[r * LP + s2] = wda;
  }
  for (int r = warp; r < C; r += nt / 32)  // sLo: dO' lo (step 2, done) -> dO' exp(bl_t) lo
    for (int j = lane; j < D; j += 32) sGsl[r * LV + j] = lo_bf16(gs_at(r, j));
  __syncthreads();
  // step 4: dphi_q = exp(bl_t) [S|z] dO'_t + E phi_k
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    // S^T: element (j, f) at sBig[f * LV + j]
    mma_store<false, true>(sX + rt * 16 * LX + ft * 16, LX, sGs + rt * 16 * LV, LV,
                           sBig + ft * 16 * LV, LV, 0, D / 16, sGsl + rt * 16 * LV);
  }
  __syncthreads();
  load_state(sBig, LV, sz, so, F2, D, nullptr, true);  // second pass: S - bf16(S)
  __syncthreads();
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    mma_add<false, true>(sX + rt * 16 * LX + ft * 16, LX, sGs + rt * 16 * LV, LV,
                         sBig + ft * 16 * LV, LV, 0, D / 16);
  }
  __syncthreads();
  for (int r = warp; r < n; r += kOutWarps) {
    const float w = __expf(sbl[r]) * sden[r];
    float qx = 0.f;  // Q_r: the pairs of query r with every key before the chunk
    for (int f = lane; f < F2; f += 32) {
      const float xq = sX[r * LX + f] + w * sz[f];
      sX[r * LX + f] = xq;
      qx += (__bfloat162float(sq[r * LQ + f]) + __bfloat162float(sql[r * LQ + f])) * xq;
    }
    qx = warp_sum(qx);
    if (lane == 0) sQs[r] = qx;
  }
  __syncthreads();
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    mma_add(sX + rt * 16 * LX + ft * 16, LX, sE + rt * 16 * LPb, LPb, sk + ft * 16, LQ, 0, rt + 1,
            nullptr, skl + ft * 16);
  }
  __syncthreads();
  for (int i = tid; i < n * F2; i += nt) dphiq[row0 * F2 + i] = sX[(i / F2) * LX + i % F2];
  __syncthreads();
  // step 5: dphi_k = exp(bl_end - bl_s) [dS|dz] [v_s|1] + E^T phi_q
  const float bend = sbl[n - 1];
  const float* dso = dstates + (int64_t(bh) * d.NC + c) * F2 * D1;
  load_state(sBig, LV, sz, dso, F2, D, nullptr, true);  // dS - bf16(dS) first, dS after
  {  // L_c = <dX_c, X_c> in f32 (times exp(bl_end) below): pairs from before to after the chunk
    const float4* x4 = reinterpret_cast<const float4*>(so);
    const float4* g4 = reinterpret_cast<const float4*>(dso);
    float part = 0.f;
    for (int i = tid; i < F2 * D1 / 4; i += nt) {
      const float4 a = x4[i], g = g4[i];
      part += a.x * g.x + a.y * g.y + a.z * g.z + a.w * g.w;
    }
    part = warp_sum(part);
    if (lane == 0) atomicAdd(sL, part);
  }
  for (int i = tid; i < C * D; i += nt) {
    const int r = i / D, j = i % D;
    split2(__bfloat162float(sv[r * LV + j]) * __expf(bend - sbl[r]), sv[r * LV + j], svl[r * LV + j]);
  }
  __syncthreads();
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    mma_store<false, true>(sX + rt * 16 * LX + ft * 16, LX,
                           sv + rt * 16 * LV, LV, sBig + ft * 16 * LV, LV, 0, D / 16);
  }
  __syncthreads();
  load_state(sBig, LV, sz, dso, F2, D);  // dS (hi), which step 6 uses too
  __syncthreads();
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    mma_add<false, true>(sX + rt * 16 * LX + ft * 16, LX, sv + rt * 16 * LV, LV,
                         sBig + ft * 16 * LV, LV, 0, D / 16, svl + rt * 16 * LV);
  }
  __syncthreads();
  for (int r = warp; r < n; r += kOutWarps) {
    const float w = __expf(bend - sbl[r]);
    float acc = 0.f;
    for (int f = lane; f < F2; f += 32) {
      const float xk = sX[r * LX + f] + w * sz[f];
      sX[r * LX + f] = xk;
      acc += (__bfloat162float(sk[r * LQ + f]) + __bfloat162float(skl[r * LQ + f])) * xk;
    }
    acc = warp_sum(acc);
    if (lane == 0) sKs[r] = acc;  // K_s: the pairs of key r with every query after the chunk
  }
  __syncthreads();
  // da_t: every pair (t', s) with s < t <= t' (t, t', s local; see the kernel's comment)
  for (int r = warp; r < n; r += kOutWarps) {
    float acc = 0.f;
    for (int i = lane; i < (n - r) * r; i += 32) acc += sW[(r + i / r) * LP + i % r];
    for (int i = r + lane; i < n; i += 32) acc += sQs[i];
    for (int i = lane; i < r; i += 32) acc += sKs[i];
    acc = warp_sum(acc);
    if (lane == 0) sdb[r] = acc + __expf(bend) * sL[0];
  }
  for (int tile = warp; tile < CT * (F2 / 16); tile += kOutWarps) {
    const int rt = tile % CT, ft = tile / CT;
    // E^T: element (s, t) at sE[t * LPb + s]
    mma_add<true, false>(sX + rt * 16 * LX + ft * 16, LX, sE + rt * 16, LPb, sq + ft * 16, LQ, rt, CT,
                         nullptr, sql + ft * 16);
  }
  __syncthreads();
  for (int i = tid; i < n * F2; i += nt) dphik[row0 * F2 + i] = sX[(i / F2) * LX + i % F2];
  for (int i = tid; i < C * F2; i += nt) {  // phi_k exp(bl_end - bl_s) for dv
    const int r = i / F2, f = i % F2;
    const float ph = __bfloat162float(sk[r * LQ + f]) + __bfloat162float(skl[r * LQ + f]);
    sk[r * LQ + f] = __float2bfloat16(ph * __expf(bend - sbl[r]));
  }
  __syncthreads();
  // step 6: dv = P^T dO'[:D] + (phi_k exp(bl_end - bl_s)) dS
  const int LA = ldf(D);
  for (int tile = warp; tile < CT * (D / 16); tile += kOutWarps) {
    const int rt = tile % CT, jt = tile / CT;
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    // P^T
    mma_acc<true, false>(acc, sPb + rt * 16, LPb, sGb + jt * 16, LV, rt, CT);
    mma_acc(acc, sk + rt * 16 * LQ, LQ, sBig + jt * 16, LV, 0, F2 / 16);
    wmma::store_matrix_sync(sX + rt * 16 * LA + jt * 16, acc, LA, wmma::mem_row_major);
  }
  __syncthreads();
  for (int i = tid; i < n * D; i += nt) {
    const int r = i / D, j = i % D;
    atomicAdd(dv + ((int64_t(b) * d.T + t0 + r) * d.Hkv + kvh) * D + j, sX[r * LA + j]);
  }
  for (int r = tid; r < n; r += nt) atomicAdd(db + (int64_t(b) * d.Hg + gh) * d.T + t0 + r, sdb[r]);
}

size_t grad_smem(const Dims& d) {
  const int C = kChunk, F2 = 2 * d.F;
  return 2 * al128(sizeof(bf) * C * ldb(F2)) + al128(sizeof(bf) * C * ldb(d.D)) +
         al128(sizeof(float) * C * ldf(C)) + 2 * al128(sizeof(bf) * C * ldb(d.D)) +
         al128(sizeof(float) * C * ldf(C)) + 2 * al128(sizeof(bf) * C * ldb(C)) +
         al128(sizeof(bf) * F2 * ldb(d.D)) + al128(sizeof(float) * C * ldf(std::max(F2, d.D))) +
         al128(sizeof(float) * F2) + 4 * al128(sizeof(float) * C) +
         al128(sizeof(float) * C * ldf(C)) + 2 * al128(sizeof(float) * C) + al128(sizeof(float)) +
         al128(sizeof(bf) * C * ldb(d.D)) + 2 * al128(sizeof(bf) * C * ldb(F2));
}

// ---------------------------------------------------------------------------------------
/// dl = coef dy: the window output's share of dy (sum: alpha; convex: |alpha| / (1 + |alpha|)).
__device__ __forceinline__ float window_coef(float alpha, bool convex) {
  return convex ? fabsf(alpha) / (1.f + fabsf(alpha)) : alpha;
}

/// dx = R^T dx~ for one element: the inverse rotation of rope_at (rotate_half layout).
__device__ __forceinline__ float unrope_at(const float* g, int j, int hD, const float* cs,
                                           const float* sn) {
  return j < hD ? g[j] * cs[j] + g[j + hD] * sn[j] : g[j] * cs[j - hD] - g[j - hD] * sn[j - hD];
}

/// Window and combine backward, query side. Grid (ceil(T / 32), B*H). Per query row, the
/// same quantities as window_bwd_kernel: dO' = [dg/den, dden], cself, the row's parts of
/// dalpha and dtau (summed in the CTA, one atomic each), delta = dl.l (saved for the key
/// side), and dq (window part, row-owned: added without atomics). P (f32) from the saved
/// row max and denominator; dP' = dy V^T on tensor cores from the exact bf16 dy (dl = coef dy
/// is not a bf16 number: rounding it moved dP by 2^-9); dP = coef dP'. l is never formed:
/// dy.l = sum_s P_ts dP'_ts (f32 P and dP'), so dalpha and delta = coef dy.l are f32
/// accurate (both are sums with heavy cancellation: bf16 P in l = P V cost dalpha up to 0.77
/// relative). dq~ = dC K~.
__global__ void __launch_bounds__(kWinWarps * 32)
    window_bwd_q_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                        const float* __restrict__ cosb, const float* __restrict__ sinb,
                        const float* __restrict__ tau, const float* __restrict__ alpha_p,
                        const float* __restrict__ numden, const float* __restrict__ wstats,
                        const bf* __restrict__ dy, float* __restrict__ dO,
                        float* __restrict__ cself, float* __restrict__ delta_out,
                        float* __restrict__ dq, float* __restrict__ dtau,
                        float* __restrict__ dalpha, Dims d) {
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, D1 = D + 1, NKmax = win_keys(d.w), hD = D / 2;
  const int LD = ldb(D), LS = ldf(NKmax), LPb = ldb(NKmax), LA = ldf(D);
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD));     // q~
  bf* skv = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NKmax * LD));       // K~, V, K~
  float* sS = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LS));   // scores, P
  float* sdP = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LS));  // dP
  bf* sPb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LPb));   // P, then dC
  bf* sdl = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD));    // dy (exact)
  float* sacc = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LA));  // dq~
  float* smx = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows));
  float* sinv = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows));
  float* sdelta = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows));
  float* sred = reinterpret_cast<float*>(carve(cur, sizeof(float) * (1 + d.m)));  // dalpha, dtau
  const bool lo_ops = window_lo_ops(d);  // the forward's split scores (window_tc_kernel)
  bf* sql = lo_ops ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD)) : nullptr;
  bf* skl = lo_ops ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NKmax * LD)) : nullptr;
  const int t0 = blockIdx.x * kWinRows, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv);
  const int n = min(kWinRows, d.T - t0);
  const int ks = max(0, t0 - d.w + 1), nk = t0 + n - ks, NK = (nk + 15) / 16 * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const bool rope = d.rope, convex = d.combine_convex;
  const float alpha = alpha_p[0], A = convex ? fabsf(alpha) : alpha, coef = window_coef(alpha, convex);
  auto row_of = [&](int t) { return (int64_t(b) * d.T + t) * d.H + h; };  // [B,T,H,*] row
  auto kvrow = [&](const bf* base, int s) { return base + ((int64_t(b) * d.T + s) * d.Hkv + kvh) * D; };
  auto load_keys = [&](bf* lo) {
    load_rows_rope(skv, LD, NK, nk, [&](int i) { return kvrow(k, ks + i); }, ks, D, rope, cosb, sinb, lo);
  };
  load_rows_rope(sq, LD, kWinRows, n, [&](int r) { return q + row_of(t0 + r) * D; }, t0, D, rope,
                 cosb, sinb, sql);
  load_rows(sdl, LD, dy + row_of(t0) * D, int64_t(d.H) * D, kWinRows, n, D);
  load_keys(skl);
  for (int r = tid; r < kWinRows; r += blockDim.x) {
    const float* ws = wstats + (int64_t(bh) * d.T + t0 + r) * 2;
    smx[r] = r < n ? ws[0] : 0.f;
    sinv[r] = r < n ? 1.f / ws[1] : 0.f;
  }
  for (int i = tid; i < 1 + d.m; i += blockDim.x) sred[i] = 0.f;
  __syncthreads();
  window_abt(sS, LS, sq, skv, LD, NK, D, sql, skl);
  __syncthreads();
  load_rows(skv, LD, v + ((int64_t(b) * d.T + ks) * d.Hkv + kvh) * D, int64_t(d.Hkv) * D, NK, nk, D);
  for (int i = tid; i < kWinRows * NK; i += blockDim.x) {
    const int r = i / NK, c = i % NK, t = t0 + r;
    const bool valid = r < n && c >= t - d.w + 1 - ks && c <= t - ks;
    sS[r * LS + c] = valid ? __expf(sS[r * LS + c] * d.scale - smx[r]) * sinv[r] : 0.f;
  }
  __syncthreads();
  window_abt(sdP, LS, sdl, skv, LD, NK, D);  // dP' = dy V^T
  __syncthreads();
  // per row: the combine backward (formulas of window_bwd_kernel)
  for (int r = warp; r < n; r += kWinWarps) {
    const int t = t0 + r;
    const int64_t bht = int64_t(bh) * d.T + t;
    const float* nd = numden + bht * D1;
    const bool clamped = nd[D] < d.eps;
    const float den_g = clamped ? d.eps : nd[D];
    const bf* vt = kvrow(v, t);
    const bf* dyr = dy + row_of(t) * D;
    float dgg = 0.f, dyg = 0.f, dyl = 0.f, cdiag = 0.f;
    for (int j = lane; j < D; j += 32) {
      const float vj = __bfloat162float(vt[j]), dyj = __bfloat162float(dyr[j]);
      const float g = global_out(nd, vj, j, d);
      const float dg = convex ? dyj / (1.f + A) : dyj;
      cdiag += clamped ? dg * vj / den_g : -(dg / den_g) * (nd[j] / den_g);
      dgg += dg * g;
      dyg += dyj * g;
      dO[bht * D1 + j] = dg / den_g;
    }
    // dy.l = sum_s P_ts dP'_ts from the very (f32) P and dP' that dC = P (coef dP' - delta)
    // uses, so sum_s dC_ts = 0 to f32 rounding (the dq, dk shift invariance and the sinks'
    // dtau rely on it)
    for (int c = lane; c < NK; c += 32) dyl += sS[r * LS + c] * sdP[r * LS + c];
    dgg = warp_sum(dgg);
    dyg = warp_sum(dyg);
    dyl = warp_sum(dyl);
    cdiag = warp_sum(cdiag);
    const float delta = coef * dyl, dal = convex ? dyl - dyg : dyl;
    if (lane == 0) {
      dO[bht * D1 + D] = clamped ? 0.f : -dgg / den_g;
      cself[bht] = cdiag;
      delta_out[bht] = delta;
      sdelta[r] = delta;
      atomicAdd(sred, dal);
    }
    const float* tr = d.m ? tau + (d.Ht == 1 ? 0 : h) * d.m : nullptr;
    for (int j = lane; j < d.m; j += 32) atomicAdd(sred + 1 + j, -__expf(tr[j] - smx[r]) * sinv[r] * delta);
  }
  __syncthreads();
  load_keys(nullptr);  // K~ back for dq~
  for (int i = tid; i < kWinRows * NK; i += blockDim.x) {
    const int r = i / NK, c = i % NK;
    const float p = sS[r * LS + c];  // 0 outside the window and for rows >= n
    sPb[r * LPb + c] = __float2bfloat16(p == 0.f ? 0.f : p * (coef * sdP[r * LS + c] - sdelta[r]) * d.scale);
  }
  __syncthreads();
  for (int tile = warp; tile < (kWinRows / 16) * (D / 16); tile += kWinWarps) {
    const int rt = tile % (kWinRows / 16), jt = tile / (kWinRows / 16);
    mma_store(sacc + rt * 16 * LA + jt * 16, LA,
              sPb + rt * 16 * LPb, LPb, skv + jt * 16, LD, 0, NK / 16);
  }
  __syncthreads();
  for (int i = tid; i < n * D; i += blockDim.x) {
    const int r = i / D, j = i % D, t = t0 + r;
    const float g = rope ? unrope_at(sacc + r * LA, j, hD, cosb + int64_t(t) * hD, sinb + int64_t(t) * hD)
                         : sacc[r * LA + j];
    dq[row_of(t) * D + j] += g;
  }
  if (tid == 0) atomicAdd(dalpha, convex ? (alpha >= 0.f ? 1.f : -1.f) * sred[0] / ((1.f + A) * (1.f + A)) : sred[0]);
  for (int j = tid; j < d.m; j += blockDim.x) atomicAdd(dtau + (d.Ht == 1 ? 0 : h) * d.m + j, sred[1 + j]);
}

size_t window_bwd_q_smem(const Dims& d) {
  const int NK = win_keys(d.w);
  return al128(sizeof(bf) * kWinRows * ldb(d.D)) * (window_lo_ops(d) ? 3 : 2) +
         al128(sizeof(bf) * NK * ldb(d.D)) * (window_lo_ops(d) ? 2 : 1) +
         2 * al128(sizeof(float) * kWinRows * ldf(NK)) + al128(sizeof(bf) * kWinRows * ldb(NK)) +
         al128(sizeof(float) * kWinRows * ldf(d.D)) + 3 * al128(sizeof(float) * kWinRows) +
         al128(sizeof(float) * (1 + d.m));
}

/// Window backward, key side. Grid (ceil(T / 32), B*Hkv): 32 keys s0.. and every query that
/// sees them (s0 .. s0 + 32 + w - 2), for each query head of the GQA group in turn, with dv
/// and dk~ accumulated in fragments: dv = coef P^T dy, dk~ = dC^T q~ with dC = P (coef dP' -
/// delta) scale, dP' = dy V^T from the exact bf16 dy as the query side takes it. dk = R_s^T
/// dk~. Key rows are owned: added without atomics. With window RoPE the scores take split
/// q~, k~ (window_lo_ops); the lo half of q~ shares its buffer with dy, loaded after the
/// scores.
__global__ void __launch_bounds__(kWinWarps * 32)
    window_bwd_k_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                        const float* __restrict__ cosb, const float* __restrict__ sinb,
                        const float* __restrict__ alpha_p, const float* __restrict__ wstats,
                        const float* __restrict__ delta, const bf* __restrict__ dy,
                        float* __restrict__ dk, float* __restrict__ dv, Dims d) {
  extern __shared__ __align__(128) char smem[];
  constexpr int kTiles = (kWinRows / 16) * kMaxDTiles / kWinWarps;  // fragments per warp
  const int D = d.D, NQmax = win_keys(d.w), hD = D / 2;
  const int LD = ldb(D), LS = ldf(NQmax), LPb = ldb(NQmax), LA = ldf(D);
  char* cur = smem;
  bf* sk = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD));    // k~ [32][D]
  bf* sv = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD));    // v [32][D]
  bf* sQ = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NQmax * LD));       // q~ [NQ][D]
  bf* sDL = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * NQmax * LD));      // q~ lo, then dy [NQ][D]
  float* sS = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LS));  // S^T, dP^T
  bf* sPb = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LPb));  // P^T
  bf* sdC = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LPb));  // dC^T
  float* stage = reinterpret_cast<float*>(carve(cur, sizeof(float) * kWinRows * LA));
  float* smx = reinterpret_cast<float*>(carve(cur, sizeof(float) * NQmax));
  float* sinv = reinterpret_cast<float*>(carve(cur, sizeof(float) * NQmax));
  float* sdelta = reinterpret_cast<float*>(carve(cur, sizeof(float) * NQmax));
  const bool lo_ops = window_lo_ops(d);
  bf* skl = lo_ops ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kWinRows * LD)) : nullptr;
  const int s0 = blockIdx.x * kWinRows, bk = blockIdx.y, b = bk / d.Hkv, kvh = bk % d.Hkv;
  const int nkey = min(kWinRows, d.T - s0);
  const int nq = min(d.T, s0 + kWinRows + d.w - 1) - s0, NQ = (nq + 15) / 16 * 16;
  const int warp = threadIdx.x / 32, tid = threadIdx.x;
  const int nD = D / 16, rep = d.H / d.Hkv;
  const bool rope = d.rope;
  const float coef = window_coef(alpha_p[0], d.combine_convex);
  const int64_t kv0 = (int64_t(b) * d.T + s0) * d.Hkv + kvh;  // row of key s0 in [B,T,Hkv,*]
  load_rows_rope(sk, LD, kWinRows, nkey, [&](int r) { return k + (kv0 + int64_t(r) * d.Hkv) * D; },
                 s0, D, rope, cosb, sinb, skl);
  load_rows(sv, LD, v + kv0 * D, int64_t(d.Hkv) * D, kWinRows, nkey, D);
  FragC dvacc[kTiles], dkacc[kTiles];
#pragma unroll
  for (int i = 0; i < kTiles; ++i) wmma::fill_fragment(dvacc[i], 0.f), wmma::fill_fragment(dkacc[i], 0.f);
  for (int hi = 0; hi < rep; ++hi) {
    const int h = kvh * rep + hi;
    const int64_t bh = int64_t(b) * d.H + h;
    __syncthreads();  // the previous head is done with sQ, sDL, sPb, sdC
    const int64_t row0 = (int64_t(b) * d.T + s0) * d.H + h;  // query s0 of head h
    load_rows_rope(sQ, LD, NQ, nq, [&](int i) { return q + (row0 + int64_t(i) * d.H) * D; }, s0, D,
                   rope, cosb, sinb, lo_ops ? sDL : nullptr);
    for (int i = tid; i < NQ; i += blockDim.x) {
      const bool ok = i < nq;
      smx[i] = ok ? wstats[(bh * d.T + s0 + i) * 2] : 0.f;
      sinv[i] = ok ? 1.f / wstats[(bh * d.T + s0 + i) * 2 + 1] : 0.f;
      sdelta[i] = ok ? delta[bh * d.T + s0 + i] : 0.f;
    }
    __syncthreads();
    // S^T = k~ q~^T
    window_abt(sS, LS, sk, sQ, LD, NQ, D, skl, lo_ops ? sDL : nullptr);
    __syncthreads();
    for (int i = tid; i < kWinRows * NQ; i += blockDim.x) {
      const int r = i / NQ, c = i % NQ;  // key s0 + r, query s0 + c: in window iff 0 <= c - r < w
      const bool valid = r < nkey && c < nq && c >= r && c - r < d.w;
      sPb[r * LPb + c] = __float2bfloat16(valid ? __expf(sS[r * LS + c] * d.scale - smx[c]) * sinv[c] : 0.f);
    }
    load_rows(sDL, LD, dy + row0 * D, int64_t(d.H) * D, NQ, nq, D);  // q~ lo is dead
    __syncthreads();
    // dP'^T = v dy^T
    window_abt(sS, LS, sv, sDL, LD, NQ, D);
    __syncthreads();
    for (int i = tid; i < kWinRows * NQ; i += blockDim.x) {
      const int r = i / NQ, c = i % NQ;
      const float p = __bfloat162float(sPb[r * LPb + c]);
      sdC[r * LPb + c] = __float2bfloat16(p == 0.f ? 0.f : p * (coef * sS[r * LS + c] - sdelta[c]) * d.scale);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      const int tile = warp + kWinWarps * i, rt = tile % (kWinRows / 16), jt = tile / (kWinRows / 16);
      if (jt >= nD) continue;
      for (int qt = 0; qt < NQ / 16; ++qt) {
        FragA a;
        FragB bb;
        wmma::load_matrix_sync(a, sPb + rt * 16 * LPb + qt * 16, LPb);
        wmma::load_matrix_sync(bb, sDL + qt * 16 * LD + jt * 16, LD);
        wmma::mma_sync(dvacc[i], a, bb, dvacc[i]);
        wmma::load_matrix_sync(a, sdC + rt * 16 * LPb + qt * 16, LPb);
        wmma::load_matrix_sync(bb, sQ + qt * 16 * LD + jt * 16, LD);
        wmma::mma_sync(dkacc[i], a, bb, dkacc[i]);
      }
    }
  }
  // dv
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const int tile = warp + kWinWarps * i, rt = tile % (kWinRows / 16), jt = tile / (kWinRows / 16);
    if (jt < nD) wmma::store_matrix_sync(stage + rt * 16 * LA + jt * 16, dvacc[i], LA, wmma::mem_row_major);
  }
  __syncthreads();
  for (int i = tid; i < nkey * D; i += blockDim.x) {
    const int r = i / D, j = i % D;
    dv[(kv0 + int64_t(r) * d.Hkv) * D + j] += coef * stage[r * LA + j];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const int tile = warp + kWinWarps * i, rt = tile % (kWinRows / 16), jt = tile / (kWinRows / 16);
    if (jt < nD) wmma::store_matrix_sync(stage + rt * 16 * LA + jt * 16, dkacc[i], LA, wmma::mem_row_major);
  }
  __syncthreads();
  for (int i = tid; i < nkey * D; i += blockDim.x) {
    const int r = i / D, j = i % D, s = s0 + r;
    const float g = rope ? unrope_at(stage + r * LA, j, hD, cosb + int64_t(s) * hD, sinb + int64_t(s) * hD)
                         : stage[r * LA + j];
    dk[(kv0 + int64_t(r) * d.Hkv) * D + j] += g;
  }
}

size_t window_bwd_k_smem(const Dims& d) {
  const int NQ = win_keys(d.w);
  return (window_lo_ops(d) ? 3 : 2) * al128(sizeof(bf) * kWinRows * ldb(d.D)) +
         2 * al128(sizeof(bf) * NQ * ldb(d.D)) +
         al128(sizeof(float) * kWinRows * ldf(NQ)) + 2 * al128(sizeof(bf) * kWinRows * ldb(NQ)) +
         al128(sizeof(float) * kWinRows * ldf(d.D)) + 3 * al128(sizeof(float) * NQ);
}

// ---------------------------------------------------------------------------------------
constexpr int kFbWarps = 8;
constexpr int kMaxWFrags = 8;  // (D/16)(F/16) <= 64 fragments of dW over 8 warps

/// Feature-map backward on tensor cores. Grid (CTAs per head, H); CTA i walks the 64-token
/// tiles i*tpc .. (i+1)*tpc - 1 of the B * ceil(T/64) tiles of head h: recomputes u = x W_h
/// (mma) and the map in f32, du from dphi f32 [B,H,T,2F] (same formulas as
/// features_bwd_kernel), dx += du W_h^T (mma; atomics when `atomic_dx`, since GQA heads share
/// keys; plain adds for queries, whose rows are owned) and dW_h = sum x^T du accumulated in
/// fragments over the CTA's tiles, added to dW [H,D,F] f32 once (atomics across CTAs).
template <bool kExp>
__global__ void __launch_bounds__(kFbWarps * 32)
    features_bwd_tc_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ W,
                           const bf* __restrict__ Wlo, const float* __restrict__ dphi,
                           float* __restrict__ dx,
                           bool atomic_dx, float* __restrict__ dW, int tpc, Dims d) {
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, F = d.F, F2 = 2 * F, LX = ldb(D), LW = ldb(F), LU = ldf(F);
  const int LSt = ldf(max(D, F));
  char* cur = smem;
  bf* sx = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kFeatRows * LX));     // [64][D]
  bf* sw = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * D * LW));             // [D][F]
  float* su = reinterpret_cast<float*>(carve(cur, sizeof(float) * kFeatRows * LU));  // u
  bf* sdu = reinterpret_cast<bf*>(carve(cur, sizeof(bf) * kFeatRows * LW));    // du [64][F]
  float* stage = reinterpret_cast<float*>(carve(cur, sizeof(float) * max(kFeatRows, D) * LSt));
  bf* swl = Wlo ? reinterpret_cast<bf*>(carve(cur, sizeof(bf) * D * LW)) : nullptr;  // W - W_hi
  const int h = blockIdx.y, hx = h / (d.H / Hx);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int tiles_per_b = (d.T + kFeatRows - 1) / kFeatRows;
  const int tile0 = blockIdx.x * tpc, tile1 = min(d.B * tiles_per_b, tile0 + tpc);
  const int nWt = (D / 16) * (F / 16);
  load_rows(sw, LW, W + int64_t(h) * D * F, F, D, D, F);
  if (Wlo) load_rows(swl, LW, Wlo + int64_t(h) * D * F, F, D, D, F);
  FragC wacc[kMaxWFrags];
#pragma unroll
  for (int i = 0; i < kMaxWFrags; ++i) wmma::fill_fragment(wacc[i], 0.f);
  for (int tile = tile0; tile < tile1; ++tile) {
    const int b = tile / tiles_per_b, t0 = (tile % tiles_per_b) * kFeatRows;
    const int n = min(kFeatRows, d.T - t0);
    __syncthreads();  // the previous tile is done with sx, sdu, stage
    load_rows(sx, LX, x + ((int64_t(b) * d.T + t0) * Hx + hx) * D, int64_t(Hx) * D, kFeatRows, n, D);
    __syncthreads();
    for (int tt = warp; tt < (kFeatRows / 16) * (F / 16); tt += kFbWarps) {
      const int rt = tt % (kFeatRows / 16), ct = tt / (kFeatRows / 16);
      mma_store(su + rt * 16 * LU + ct * 16, LU, sx + rt * 16 * LX, LX, sw + ct * 16, LW, 0,
                D / 16, nullptr, swl ? swl + ct * 16 : nullptr);
    }
    __syncthreads();
    // du, one warp per token (rows >= n get du = 0)
    for (int r = warp; r < kFeatRows; r += kFbWarps) {
      bf* dur = sdu + r * LW;
      if (r >= n) {
        for (int f = lane; f < F; f += 32) dur[f] = __float2bfloat16(0.f);
        continue;
      }
      const float* u = su + r * LU;
      const float* dp = dphi + ((int64_t(b) * d.H + h) * d.T + t0 + r) * F2;
      if (kExp) {
        float best = -1.f;
        int arg = 0;
        for (int f = lane; f < F; f += 32)
          if (fabsf(u[f]) > best) best = fabsf(u[f]), arg = f;  // first max of the lane's f
        for (int o = 16; o > 0; o >>= 1) {  // warp arg-max, the smaller index on ties
          const float ob = __shfl_xor_sync(0xffffffffu, best, o);
          const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
          if (ob > best || (ob == best && oa < arg)) best = ob, arg = oa;
        }
        const float m = best;
        float pp = 0.f, pn = 0.f;
        for (int f = lane; f < F; f += 32)
          pp += expf(u[f] - m) * dp[f], pn += expf(-u[f] - m) * dp[F + f];
        pp = warp_sum(pp);
        pn = warp_sum(pn);
        for (int f = lane; f < F; f += 32) {
          float g = expf(u[f] - m) * dp[f] - expf(-u[f] - m) * dp[F + f];
          if (f == arg) g -= (u[f] >= 0.f ? 1.f : -1.f) * (pp + pn);
          dur[f] = __float2bfloat16(g);
        }
      } else {
        float mp = -INFINITY, mn = -INFINITY;
        for (int f = lane; f < F; f += 32) mp = fmaxf(mp, u[f]), mn = fmaxf(mn, -u[f]);
        mp = warp_max(mp);
        mn = warp_max(mn);
        float sp = 0.f, sn = 0.f;
        for (int f = lane; f < F; f += 32) sp += expf(u[f] - mp), sn += expf(-u[f] - mn);
        const float ip = 1.f / warp_sum(sp), in = 1.f / warp_sum(sn);
        float pp = 0.f, pn = 0.f;
        for (int f = lane; f < F; f += 32)
          pp += expf(u[f] - mp) * ip * dp[f], pn += expf(-u[f] - mn) * in * dp[F + f];
        pp = warp_sum(pp);
        pn = warp_sum(pn);
        for (int f = lane; f < F; f += 32)
          dur[f] = __float2bfloat16(expf(u[f] - mp) * ip * (dp[f] - pp) -
                                    expf(-u[f] - mn) * in * (dp[F + f] - pn));
      }
    }
    __syncthreads();
    // dx = du W^T into stage [64][D]; dW += x^T du in the fragments
    for (int tt = warp; tt < (kFeatRows / 16) * (D / 16); tt += kFbWarps) {
      const int rt = tt % (kFeatRows / 16), it = tt / (kFeatRows / 16);
      // W^T: element (f, i) at sw[i * LW + f]
      mma_store<false, true>(stage + rt * 16 * LSt + it * 16, LSt,
                             sdu + rt * 16 * LW, LW, sw + it * 16 * LW, LW, 0, F / 16);
    }
#pragma unroll
    for (int i = 0; i < kMaxWFrags; ++i) {
      const int wt = warp + kFbWarps * i;
      if (wt >= nWt) continue;
      const int it = wt % (D / 16), ft = wt / (D / 16);
      // x^T: element (i, t) at sx[t * LX + i]
      mma_acc<true, false>(wacc[i], sx + it * 16, LX, sdu + ft * 16, LW, 0, kFeatRows / 16);
    }
    __syncthreads();
    float* dxb = dx + ((int64_t(b) * d.T + t0) * Hx + hx) * D;
    for (int i = tid; i < n * D; i += blockDim.x) {
      const int r = i / D, j = i % D;
      float* dst = dxb + int64_t(r) * Hx * D + j;
      if (atomic_dx) atomicAdd(dst, stage[r * LSt + j]);
      else *dst += stage[r * LSt + j];
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kMaxWFrags; ++i) {
    const int wt = warp + kFbWarps * i;
    if (wt >= nWt) continue;
    const int it = wt % (D / 16), ft = wt / (D / 16);
    wmma::store_matrix_sync(stage + it * 16 * LSt + ft * 16, wacc[i], LSt, wmma::mem_row_major);
  }
  __syncthreads();
  if (tile0 < tile1)
    for (int i = tid; i < D * F; i += blockDim.x)
      atomicAdd(dW + int64_t(h) * D * F + i, stage[(i / F) * LSt + i % F]);
}

size_t features_bwd_smem(const Dims& d, bool split) {
  return al128(sizeof(bf) * kFeatRows * ldb(d.D)) + al128(sizeof(bf) * d.D * ldb(d.F)) * (split ? 2 : 1) +
         al128(sizeof(float) * kFeatRows * ldf(d.F)) + al128(sizeof(bf) * kFeatRows * ldb(d.F)) +
         al128(sizeof(float) * std::max(kFeatRows, d.D) * ldf(std::max(d.D, d.F)));
}

template <class K>
void set_smem(K kernel, size_t bytes) {
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) ==
               cudaSuccess,
           "lizard attention (CUDA): cannot grant ", bytes, " bytes of shared memory");
}

}  // namespace

bool tc_enabled(bool /*training*/) {
  const char* e = std::getenv("LIZARD_ATTENTION_KERNELS");
  if (!e || !*e) return true;
  const std::string v(e);
  if (v == "f32") return false;
  if (v == "tc") return true;
  throw InputError("LIZARD_ATTENTION_KERNELS='" + v + "': expected 'tc', 'f32' or unset");
}

bool tc_stage_off(const char* name) {
  const char* e = std::getenv("LIZARD_ATTENTION_TC_OFF");
  if (!e) return false;
  static const char* const kStages[] = {"window_bwd", "state_bwd", "grad", "features_bwd", "bwd"};
  bool off = false;
  const std::string list(e);
  size_t a = 0;
  while (a <= list.size()) {
    size_t z = list.find(',', a);
    if (z == std::string::npos) z = list.size();
    const std::string tok = list.substr(a, z - a);
    a = z + 1;
    if (tok.empty()) continue;
    bool known = false;
    for (const char* k : kStages) known = known || tok == k;
    if (!known)
      throw InputError("LIZARD_ATTENTION_TC_OFF: unknown stage '" + tok +
                       "' (expected a comma list of window_bwd, state_bwd, grad, features_bwd, bwd)");
    off = off || tok == name || tok == "bwd";
  }
  return off;
}

bool tc_supported(const Dims& d) {
  // the largest CTAs, at D = 128, 2F = 256: the split output kernel 226,816 bytes, the
  // gradient kernel 226,176 (phi's lo halves included), both under the 227 KiB a CTA may
  // take on an H100/H200; the check keeps a future buffer from failing at launch instead
  constexpr size_t kSmemMax = 227 * 1024;
  return d.D % 16 == 0 && d.D <= 16 * kMaxDTiles && d.F % 16 == 0 && 2 * d.F <= 256 &&
         out_smem(d, true) <= kSmemMax && grad_smem(d) <= kSmemMax;
}

bool tc_window_supported(const Dims& d) {
  if (!tc_supported(d) || d.w <= 0) return false;
  if (window_mma_selected(d)) return true;
  return window_smem(d, true) <= kWinSmemCap &&
         window_bwd_q_smem(d) <= kWinSmemCap && window_bwd_k_smem(d) <= kWinSmemCap;
}

void window_bwd_tc_launch(const bf* q, const bf* k, const bf* v, const float* cosb,
                          const float* sinb, const float* tau, const float* alpha,
                          const float* numden, const float* wstats, const bf* dy, float* dO,
                          float* cself, float* delta, float* dq, float* dk, float* dv,
                          float* dtau, float* dalpha, const Dims& d, cudaStream_t s) {
  if (window_mma_selected(d)) {
    window_bwd_mma_launch(q, k, v, cosb, sinb, tau, alpha, numden, wstats, dy, dO, cself, delta,
                          dq, dk, dv, dtau, dalpha, d, s);
    return;
  }
  const size_t smq = window_bwd_q_smem(d), smk = window_bwd_k_smem(d);
  set_smem(window_bwd_q_kernel, smq);
  set_smem(window_bwd_k_kernel, smk);
  const int nt = (d.T + kWinRows - 1) / kWinRows;
  window_bwd_q_kernel<<<dim3(nt, d.B * d.H), kWinWarps * 32, smq, s>>>(
      q, k, v, cosb, sinb, tau, alpha, numden, wstats, dy, dO, cself, delta, dq, dtau, dalpha, d);
  window_bwd_k_kernel<<<dim3(nt, d.B * d.Hkv), kWinWarps * 32, smk, s>>>(
      q, k, v, cosb, sinb, alpha, wstats, delta, dy, dk, dv, d);
}

void window_tc_launch(const bf* q, const bf* k, const bf* v, const float* cosb,
                      const float* sinb, const float* tau, const float* alpha,
                      const float* numden, bf* y, float* wstats, bool split, const Dims& d,
                      cudaStream_t s) {
  if (window_mma_selected(d)) {
    window_mma_launch(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, split, d, s);
    return;
  }
  const size_t sm = window_smem(d, split);
  set_smem(window_tc_kernel, sm);
  const dim3 grid((d.T + kWinRows - 1) / kWinRows, d.B * d.H);
  window_tc_kernel<<<grid, kWinWarps * 32, sm, s>>>(q, k, v, cosb, sinb, tau, alpha, numden, y,
                                                    wstats, split, d);
}

void grad_tc_launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo,
                    const bf* v, const float* bl,
                    const float* states, const float* dstates, const float* dO,
                    const float* cself, float* dphiq, float* dphik, float* dv, float* db,
                    const Dims& d, cudaStream_t s) {
  if (grad_mma_selected(d)) {  // the mma.sync kernel (lizard_global_grad_mma.cu), the default
    grad_mma_launch(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik,
                    dv, db, d, s);
    return;
  }
  const size_t sm = grad_smem(d);
  set_smem(grad_tc_kernel, sm);
  grad_tc_kernel<<<dim3(d.NC, d.B * d.H), kOutWarps * 32, sm, s>>>(
      phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, db, d);
}

void features_bwd_wmma_launch(const bf* x, int Hx, const bf* W, const bf* Wlo, const float* dphi,
                              float* dx, bool atomic_dx, float* dW, const Dims& d, cudaStream_t s) {
  const size_t sm = features_bwd_smem(d, Wlo != nullptr);
  const int tiles = d.B * ((d.T + kFeatRows - 1) / kFeatRows);
  // about two CTAs per SM over all heads; fewer CTAs per head means fewer dW atomics
  const int per_head = std::max(1, std::min(tiles, (2 * 132 + d.H - 1) / d.H));
  const int tpc = (tiles + per_head - 1) / per_head;
  const dim3 grid((tiles + tpc - 1) / tpc, d.H);
  if (d.act_exp) {
    set_smem(features_bwd_tc_kernel<true>, sm);
    features_bwd_tc_kernel<true><<<grid, kFbWarps * 32, sm, s>>>(x, Hx, W, Wlo, dphi, dx, atomic_dx, dW, tpc, d);
  } else {
    set_smem(features_bwd_tc_kernel<false>, sm);
    features_bwd_tc_kernel<false><<<grid, kFbWarps * 32, sm, s>>>(x, Hx, W, Wlo, dphi, dx, atomic_dx, dW, tpc, d);
  }
}

void features_wmma_launch(const bf* x, int Hx, const bf* W, const bf* Wlo, bf* phi, bf* phi_lo,
                          const Dims& d, cudaStream_t s) {
  const size_t sm = features_smem(d, Wlo != nullptr);
  const dim3 grid((d.T + kFeatRows - 1) / kFeatRows, d.H, d.B);
  auto go = [&](auto kernel) {
    set_smem(kernel, sm);
    kernel<<<grid, kFeatWarps * 32, sm, s>>>(x, Hx, W, Wlo, phi, phi_lo, d);
  };
  if (d.act_exp) {
    if (phi_lo) go(features_tc_kernel<true, true>);
    else go(features_tc_kernel<true, false>);
  } else {
    if (phi_lo) go(features_tc_kernel<false, true>);
    else go(features_tc_kernel<false, false>);
  }
}

void state_tc_launch(const bf* phik, const bf* phik_lo, const bf* v, const float* bl,
                     float* states, bool split, const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || phik_lo, "lizard attention (CUDA): the split state kernel needs phi_k's lo half");
  const size_t sm = state_smem(d, split, false);
  const dim3 grid((2 * d.F + kStateRows - 1) / kStateRows, d.B * d.H);
  if (split) {
    set_smem(state_tc_kernel<false, true>, sm);
    state_tc_kernel<false, true><<<grid, kStateWarps * 32, sm, s>>>(phik, phik_lo, v, nullptr, bl, states, d);
  } else {
    set_smem(state_tc_kernel<false, false>, sm);
    state_tc_kernel<false, false><<<grid, kStateWarps * 32, sm, s>>>(phik, nullptr, v, nullptr, bl, states, d);
  }
}

void dstate_tc_launch(const bf* phiq, const bf* phiq_lo, const float* dO, const float* bl,
                      float* dstates, const Dims& d, cudaStream_t s) {
  LZ_CHECK(phiq_lo, "lizard attention (CUDA): the dstate kernel needs phi_q's lo half");
  // always split: dstates feed L_c and K_s of the gate gradient, partial sums of pair terms
  // whose rows cancel (2^-9 operand rounding there left dw_g, db_g errors of order 1)
  const size_t sm = state_smem(d, true, true);
  set_smem(state_tc_kernel<true, true>, sm);
  const dim3 grid((2 * d.F + kStateRows - 1) / kStateRows, d.B * d.H);
  state_tc_kernel<true, true><<<grid, kStateWarps * 32, sm, s>>>(phiq, phiq_lo, nullptr, dO, bl, dstates, d);
}

void out_tc_launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo,
                   const bf* v, const float* bl, const float* states, float* numden, bool split,
                   const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || (phiq_lo && phik_lo), "lizard attention (CUDA): the split output kernel needs phi's lo halves");
  const size_t sm = out_smem(d, split);
  const dim3 grid(d.NC, d.B * d.H);
  if (split) {
    set_smem(out_tc_kernel<true>, sm);
    out_tc_kernel<true><<<grid, kOutWarps * 32, sm, s>>>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, d);
  } else {
    set_smem(out_tc_kernel<false>, sm);
    out_tc_kernel<false><<<grid, kOutWarps * 32, sm, s>>>(phiq, nullptr, phik, nullptr, v, bl, states, numden, d);
  }
}

}  // namespace lizard::cuda::lizard_detail
