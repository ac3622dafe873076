// Lizard attention global branch on tensor cores (contract: lizard_attention_tc.cuh). bf16
// operands, f32 accumulators (nvcuda::wmma 16x16x16), the chunked algorithm of DESIGN.md
// section 3 (the feature maps: cuda/lizard_features_tc.cu; the window branch:
// cuda/lizard_window_mma.cu, both mma.sync):
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

/// bf16(v - bf16(v)): the lo half of split2 alone.
__device__ __forceinline__ bf lo_bf16(float v) {
  return __float2bfloat16(v - __bfloat162float(__float2bfloat16(v)));
}

/// A state block f32 (state_index's layout: S [2F][D], then z [2F]; 16-byte aligned: 2F(D+1)
/// is a multiple of 4 when 2F is a multiple of 32) into shared: S as bf16 rows of ld `ldd`,
/// z as f32. D a multiple of 4: no float4 straddles two rows or S and z.
/// float4 loads, kUnroll of them in flight per thread: the output and gradient kernels are
/// bound by this read (128 KiB per CTA at 2F = 256, D = 128), which needs many bytes in flight.
/// dlo (null, or like dst): S - bf16(S) as bf16 (the split products of the training forward).
/// lo_only: dst gets S - bf16(S) instead of S (a second pass of a split product where shared
/// memory holds one copy of S at a time).
__device__ __forceinline__ void load_state(bf* dst, int ldd, float* zdst, const float* src,
                                           int F2, int D, bf* dlo = nullptr,
                                           bool lo_only = false) {
  constexpr int kUnroll = 8;
  const int n4 = int(state_block(D, F2) / 4), nS4 = int(state_z(D, F2) / 4);
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
      const float vals[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
      if (i >= nS4) {  // z
#pragma unroll
        for (int c = 0; c < 4; ++c) zdst[4 * (i - nS4) + c] = vals[c];
        continue;
      }
      const int f = (4 * i) / D, j = 4 * i - f * D;  // 4 i = state_s(f, j, D)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        if (dlo) split2(vals[c], dst[f * ldd + j + c], dlo[f * ldd + j + c]);
        else if (lo_only) dst[f * ldd + j + c] = lo_bf16(vals[c]);
        else dst[f * ldd + j + c] = __float2bfloat16(vals[c]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
/// Grid (ceil(2F / 64), B*H). Warp w owns state rows f0 + 16w .. f0 + 16w + 15 (all D
/// columns, D/16 fragments); thread i < 64 owns the last column (z) of row f0 + i.
/// Forward (kRev false): chunks in order, X <- exp(bl_end) X + (phi_k exp(bl_end - bl_s))^T
/// [V | 1] from phi = phi_k, vals = v bf16 [B,T,Hkv,D]. Backward (kRev true): chunks from the
/// last, dX <- exp(bl_end) dX + (phi_q exp(bl_t))^T dO' from phi = phi_q, dO' f32 [B,H,T,D+1]
/// (its column D is the den column, the counterpart of the ones). Either way the value of X
/// when chunk c is reached (before its own update) goes to out[b,h,c] [2F, D+1] f32 (the
/// per-chunk layout of state_index: S rows of D, then z).
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
  pdl_enter();
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
    float* so = out + state_chunk(bh, c, d.NC, D, F2);
    if (active) {
      float* stw = stage + warp * 16 * LS;
#pragma unroll
      for (int j = 0; j < kMaxDTiles; ++j)
        if (j < nD) wmma::store_matrix_sync(stw + j * 16, acc[j], LS, wmma::mem_row_major);
      __syncwarp();
      for (int r = 0; r < 16; ++r)  // no division: this is the sequential path
        for (int j = lane; j < D; j += 32) so[state_s(f0 + warp * 16 + r, j, D)] = stw[r * LS + j];
    }
    if (tid < kStateRows && f0 + tid < F2) so[state_z(D, F2) + f0 + tid] = zf;
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
  pdl_enter();
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
  const float* so = states + state_chunk(bh, c, d.NC, D, F2);  // contiguous, state_index's layout
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
/// Global branch backward of one chunk (grid (NC, B*H)), the tensor-core form of
/// global_bwd_kernel with the same formulas: kk = phi_q phi_k^T, e = exp(bl_t - bl_s),
/// dA_ts = cself_t + X_ts - X_tt with X = dO'[:D] V^T (mma; exactly cself_t on the diagonal),
/// E = dA e, P = kk e (s <= t);
///   dphi_q = E phi_k + exp(bl_t) [S|z] dO'_t            (S, z: state before the chunk)
///   dphi_k = E^T phi_q + exp(bl_end - bl_s) [dS|dz] [v_s|1]  (dS: gradient of the state after)
///   dv    += P^T dO'[:D] + exp(bl_end - bl_s) phi_k dS   (atomics: GQA heads share v; dv
///            null: not computed)
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
  pdl_enter();
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
  const float* so = states + state_chunk(bh, c, d.NC, D, F2);
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
  const float* dso = dstates + state_chunk(bh, c, d.NC, D, F2);
  load_state(sBig, LV, sz, dso, F2, D, nullptr, true);  // dS - bf16(dS) first, dS after
  {  // L_c = <dX_c, X_c> in f32 (times exp(bl_end) below): pairs from before to after the chunk
    const float4* x4 = reinterpret_cast<const float4*>(so);
    const float4* g4 = reinterpret_cast<const float4*>(dso);
    float part = 0.f;
    // (the same layout both: element by element, whatever it is)
    for (int i = tid; i < state_block(D, F2) / 4; i += nt) {
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
  // dv null (not wanted, issue #11): the decayed phi_k and step 6 serve dv alone (sdb is
  // complete since the last barrier); dv is uniform over the grid: the barriers stay uniform
  if (dv != nullptr) {
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

template <class K>
void set_smem(K kernel, size_t bytes) {
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) ==
               cudaSuccess,
           "lizard attention (CUDA): cannot grant ", bytes, " bytes of shared memory");
}

}  // namespace

bool tc_enabled(bool /*training*/) { return !env_switch("LIZARD_ATTENTION_KERNELS", "tc", "f32"); }

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

void state_tc_launch(const bf* phik, const bf* phik_lo, const bf* v, const float* bl,
                     float* states, bool split, const Dims& d, cudaStream_t s) {
  if (state_mma_selected(d)) return state_mma_launch(phik, phik_lo, v, bl, states, split, d, s);
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

void dstate_tc_launch(const bf* phiq, const bf* phiq_lo, const float* dO, const bf* dO_hi,
                      const bf* dO_lo, const float* bl, float* dstates, const Dims& d,
                      cudaStream_t s) {
  if (state_mma_selected(d))
    return dstate_mma_launch(phiq, phiq_lo, dO, dO_hi, dO_lo, bl, dstates, d, s);
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
  if (out_mma_selected(d)) {
    out_mma_launch(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    return;
  }
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
