// The fragment-level building blocks of the feature-map kernels on mma.sync, shared by the
// forward and the backward of cuda/lizard_features_tc.cu and the split backward of
// cuda/lizard_features_bwd_mma.cu (moved here unchanged so both backward kernels recompute u
// and the map's statistics with the same instructions: the same bits).
// Fragment layouts: cuda/mma_util.cuh (lane = 4 g + q).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lizard/core/error.h"
#include "mma_util.cuh"

namespace lizard::cuda::lizard_detail {

using bf = __nv_bfloat16;
constexpr int kUnit = 16;       // tokens per warp unit (one m-tile)
constexpr int kMaxNT = 16;      // 8-column tiles of u: F <= 128 (tc_supported: 2F <= 256)
constexpr int kMaxDT = 16;      // 8-column tiles of dx: D <= 128

/// Shared-memory row strides (bf16 elements): 16 bytes of padding put the 8 rows an
/// ldmatrix reads (and the 8 rows of a quad-layout store) in distinct banks.
__host__ __device__ constexpr int pad_ld(int n) { return n + 8; }

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

/// sum over one row of val(j).x, val(j).y (this thread's elements of the row: columns
/// 8j + 2q and 8j + 2q + 1, n-tile j < nt) with exactly the rounding of the wmma kernels' row sum: lane L of their warp
/// summed f = L, L+32, L+64, ... from 0 and warp_sum (xor 16, 8, 4, 2, 1) combined the lanes.
/// Lane L = 8m + 2q + e holds n-tiles j = m, m+4, ... (column 8j + 2q + e), all in the thread
/// q of the quad: its partials p[m][e], the xor 16 and 8 steps inside the thread, xor 4 and 2
/// as quad shuffles (lane bits of q), xor 1 inside the thread (fp addition commutes, so each
/// step's operand order does not matter). The quad's 4 threads get the same sum.
template <class Val>
__device__ __forceinline__ float sum_warp_order(int nt, Val val) {
  float p[4][2] = {{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}};
#pragma unroll
  for (int j = 0; j < kMaxNT; ++j)
    if (j < nt) {
      const float2 v = val(j);
      p[j & 3][0] += v.x;
      p[j & 3][1] += v.y;
    }
  float s[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) s[e] = (p[0][e] + p[2][e]) + (p[1][e] + p[3][e]);
#pragma unroll
  for (int e = 0; e < 2; ++e) s[e] += __shfl_xor_sync(0xffffffffu, s[e], 2);
#pragma unroll
  for (int e = 0; e < 2; ++e) s[e] += __shfl_xor_sync(0xffffffffu, s[e], 1);
  return s[0] + s[1];
}

/// Copies 16 token rows of D bf16 (row r at src + r * gstride) into shared rows of ld `ld`
/// at `dst` by cp.async (one warp); rows >= valid become zeros (so u = 0 there). Commits.
__device__ __forceinline__ void load_unit_rows(uint32_t dst, int ld, const bf* src, int64_t gstride,
                                               int valid, int D, int lane) {
  // chunk i = r * vpr + c8 of the 16 x vpr 16-byte chunks, lane-strided; (r, c8) advances by
  // 32 chunks without a division by the runtime vpr in the loop
  const int vpr = D / 8, dr = 32 / vpr, dc = 32 % vpr;
  int r = lane / vpr, c8 = lane % vpr;
  for (; r < kUnit; r += dr, c8 += dc) {
    if (c8 >= vpr) c8 -= vpr, ++r;
    if (r >= kUnit) break;
    const uint32_t a = dst + 2u * uint32_t(r * ld + 8 * c8);
    if (r < valid) cp_async16_u32(a, src + r * gstride + 8 * c8);
    else st_shared_zero16(a);
  }
  cp_async_commit();
}

/// W [D][F] bf16 (one head) into shared rows of ld pad_ld(F) by cp.async (the whole CTA).
/// Commits.
__device__ __forceinline__ void load_weight(uint32_t dst, const bf* src, int D, int F) {
  const int vpr = F / 8, ld = pad_ld(F);
  for (int i = threadIdx.x; i < D * vpr; i += blockDim.x) {
    const int r = i / vpr, c = (i % vpr) * 8;
    cp_async16_u32(dst + 2u * uint32_t(r * ld + c), src + int64_t(r) * F + c);
  }
  cp_async_commit();
}

/// u = x W (+ x Wlo when kWlo) for the warp's 16 rows, f32 accumulate: u[j] is n-tile j
/// (columns 8j..8j+7) in the C layout (u[j][0..1]: row g, columns 8j+2q..+1; u[j][2..3]: row
/// g+8). sx: the rows [16][D] (ld lx), sw/swl: W, Wlo [D][F] (ld lw), shared addresses.
/// Per element the order of the wmma kernels: k-steps ascending, the hi product then the lo.
template <bool kWlo>
__device__ __forceinline__ void warp_u(float (&u)[kMaxNT][4], uint32_t sx, int lx, uint32_t sw,
                                       uint32_t swl, int lw, int D, int F) {
  const int lane = threadIdx.x & 31, nt = F / 8;
#pragma unroll
  for (int j = 0; j < kMaxNT; ++j) u[j][0] = u[j][1] = u[j][2] = u[j][3] = 0.f;
  // A (x, row-major): lanes 0-15 rows 0-15 at k 0, lanes 16-31 rows 0-15 at k 8.
  // B (W stored [k][n]): the transposed load, lanes 0-15 k rows 0-15 at n 0, 16-31 at n 8.
  const uint32_t a_at = sx + 2u * uint32_t((lane & 15) * lx + (lane >> 4) * 8);
  const uint32_t b_off = 2u * uint32_t((lane & 15) * lw + (lane >> 4) * 8);
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, a_at + 32u * kk);
    const uint32_t brow = b_off + 2u * uint32_t(kk * 16 * lw);
#pragma unroll
    for (int jp = 0; jp < kMaxNT / 2; ++jp) {
      if (2 * jp < nt) {
        uint32_t bh[4];
        ldsm_x4_trans(bh, sw + brow + 32u * jp);
        if constexpr (kWlo) {
          uint32_t bl[4];
          ldsm_x4_trans(bl, swl + brow + 32u * jp);
          mma_bf16_x2(u[2 * jp], u[2 * jp + 1], a, bh);
          mma_bf16_x2(u[2 * jp], u[2 * jp + 1], a, bl);
        } else {
          mma_bf16_x2(u[2 * jp], u[2 * jp + 1], a, bh);
        }
      }
    }
  }
}

/// The row statistics of the map for row r (0: g, 1: g+8) of u, as the wmma kernels define
/// them: exp map, m = max(0, max_f |u_f|); softmax, the maxima of u and -u and the inverse
/// sums of exp(u - mp) and exp(-u - mn) (sum_warp_order: the same bits).
struct RowStats {
  float mp, mn, ip, in;
};

/// max(0, max_f |u_f|) over row r (0: g, 1: g+8) of u (n-tiles j < nt), over the quad: the
/// exp map's shift m.
__device__ __forceinline__ float row_abs_max(const float (&u)[kMaxNT][4], int r, int nt) {
  float m = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxNT; ++j)
    if (j < nt) m = fmaxf(m, fmaxf(fabsf(u[j][2 * r]), fabsf(u[j][2 * r + 1])));
  return quad_max(m);
}

/// This thread's maxima of u_f (p) and of -u_f (n) on row r of u (n-tiles j < nt), before the
/// quad_max that makes them the softmax map's shifts. The quad_max is left to the caller: done
/// here, it moved the forward's scaling of the first maximum after the second shuffle (other
/// PTX, same values).
struct RowMax {
  float p, n;
};

__device__ __forceinline__ RowMax row_max_pn(const float (&u)[kMaxNT][4], int r, int nt) {
  float mp = -INFINITY, mn = -INFINITY;
#pragma unroll
  for (int j = 0; j < kMaxNT; ++j)
    if (j < nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) mp = fmaxf(mp, u[j][2 * r + e]), mn = fmaxf(mn, -u[j][2 * r + e]);
  return {mp, mn};
}

template <bool kExp>
__device__ __forceinline__ RowStats row_stats(const float (&u)[kMaxNT][4], int r, int nt) {
  RowStats st{};
  if constexpr (kExp) {
    st.mp = st.mn = row_abs_max(u, r, nt);
    st.ip = st.in = 1.f;
  } else {
    const RowMax mx = row_max_pn(u, r, nt);
    const float mp = st.mp = quad_max(mx.p);
    const float mn = st.mn = quad_max(mx.n);
    st.ip = 1.f / sum_warp_order(nt, [&](int j) {
      return make_float2(expf(u[j][2 * r] - mp), expf(u[j][2 * r + 1] - mp));
    });
    st.in = 1.f / sum_warp_order(nt, [&](int j) {
      return make_float2(expf(-u[j][2 * r] - mn), expf(-u[j][2 * r + 1] - mn));
    });
  }
  return st;
}

/// The sum over a quad (lanes 4g .. 4g+3) of v; every lane of the quad gets it.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// log2(x) by the SFU (lg2.approx.ftz: about 2^-22 absolute for the x >= 1 it gets here).
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

constexpr float kLog2e = 1.4426950408889634f;

/// The map of row r (0: g, 1: g+8) of u as base-2 exponent offsets: phi_f = 2^(u_f log2e +
/// cp), phi_{F+f} = 2^(-u_f log2e + cn), one FFMA and one ex2.approx (fast_exp2) per value
/// instead of expf's 9 instructions (the map was most of the feature kernels' instructions).
/// Exp map: cp = cn = -m log2e, m = max(0, max_f |u_f|); softmax: cp = -mp log2e - log2 Sp
/// with mp = max_f u_f and Sp = sum_f 2^(u_f log2e - mp log2e) (>= 1: the maximum's term),
/// cn alike for -u. Exponents are <= 0, where ex2.approx.ftz is about 2 ulp (underflow to 0
/// as expf); the rounding of u log2e + cp adds about 2^-24 |exponent|: phi is within ~5e-7
/// relative of expf's, far inside a bf16 ulp (and phi + phi_lo's 2^-16).
struct MapExp2 {
  float cp, cn;
};

template <bool kExp>
__device__ __forceinline__ MapExp2 map_exp2(const float (&u)[kMaxNT][4], int r, int nt) {
  if constexpr (kExp) {
    const float c = -row_abs_max(u, r, nt) * kLog2e;
    return {c, c};
  } else {
    const RowMax mx = row_max_pn(u, r, nt);
    const float bp = -quad_max(mx.p) * kLog2e, bn = -quad_max(mx.n) * kLog2e;
    float sp[2] = {0.f, 0.f}, sn[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kMaxNT; ++j)
      if (j < nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          sp[e] += fast_exp2(fmaf(u[j][2 * r + e], kLog2e, bp));
          sn[e] += fast_exp2(fmaf(u[j][2 * r + e], -kLog2e, bn));
        }
    return {bp - fast_log2(quad_sum(sp[0] + sp[1])), bn - fast_log2(quad_sum(sn[0] + sn[1]))};
  }
}

/// dx (f32) += val at p and p+1: a plain read-modify-write where the rows are owned
/// (queries), float2 atomics where heads of a GQA group share them (keys).
__device__ __forceinline__ void add_pair(float* p, float a, float b, bool atomic) {
  if (atomic) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
    atomicAdd(p, a);
    atomicAdd(p + 1, b);
#endif
  } else {
    float2 v = *reinterpret_cast<float2*>(p);
    v.x += a;
    v.y += b;
    *reinterpret_cast<float2*>(p) = v;
  }
}

/// dW_h (f32, head h of dW [H][D][F]) += the warp's accumulated 16x16 tiles wacc (float2
/// atomics: every token tile's block adds into the same dW): unit i of warp w is dW tile
/// wu = w upw + i (wu < nwu) at (i-tile wu / nft, f-tile wu % nft), its two 8-column halves k
/// in the mma accumulator layout (rows g and g+8, columns 2q, 2q+1).
template <int kUnits>
__device__ __forceinline__ void add_dw_units(float* dW, int h, int D, int F,
                                             const float (&wacc)[kUnits][2][4], int warp, int upw,
                                             int nwu, int nft, int g, int q) {
  float* dWh = dW + int64_t(h) * D * F;
#pragma unroll
  for (int i = 0; i < kUnits; ++i) {
    const int wu = warp * upw + i;
    if (i < upw && wu < nwu) {
      const int it = wu / nft, ft = wu % nft;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        float* p = dWh + int64_t(it * 16 + g) * F + ft * 16 + 8 * k + 2 * q;
        add_pair(p, wacc[i][k][0], wacc[i][k][1], true);
        add_pair(p + 8 * F, wacc[i][k][2], wacc[i][k][3], true);
      }
    }
  }
}

template <class K>
inline void grant_smem(K kernel, size_t bytes) {
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) ==
               cudaSuccess,
           "lizard feature maps (CUDA): cannot grant ", bytes, " bytes of shared memory");
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace lizard::cuda::lizard_detail
