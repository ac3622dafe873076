// Feature maps of the Lizard attention on tensor cores, forward (phi = map(x W_h)) and
// backward (dx += du W_h^T, dW_h += x^T du), contracts in lizard_attention_tc.cuh
// (features_tc_launch, features_bwd_tc_launch, split_bf16_launch, widen_pair_launch).
//
// Layout of the work (issue #5: the wmma kernels took 2.3 ms per training call and 6 ms for
// the backward at B=8 T=2048 H=32 D=F=128, for 0.54 GB of output per forward call):
//   * a warp owns 16 tokens (one mma m-tile) and all F columns of u = x W: mma.sync m16n8k16
//     with u in registers (F/8 accumulator tiles), x and W through ldmatrix; W's lo half
//     (training) is a second mma into the same accumulator right after the hi one;
//   * W (and Wlo) stay in shared memory for the CTA's life; a CTA walks many token units of
//     one head (persistent), so W is read from L2 once per CTA, not once per 64 tokens;
//   * the map works on the fragment layout: a row's F values sit in the 4 lanes of a quad,
//     the row max by 2 quad shuffles; phi and phi_lo leave through a small per-warp staging
//     buffer as 16-byte row stores;
//   * backward: the same u, du from dphi (f32) in the fragment layout, to bf16 in shared;
//     dx = du W^T per warp; dW = x^T du over a 128-token tile from shared x and du,
//     accumulated in registers over all the CTA's tiles and added to dW once per CTA
//     (atomics across the few CTAs of a head).
//
// Bit-exactness. u is accumulated in the wmma kernels' order (per output element: k-steps
// ascending, hi then lo per step, the same HMMA.16816 instruction), and the backward's
// recompute shares warp_u (the same bits of u). The forward's map takes its exponentials as
// 2^(u log2e + c) on the SFU (map_exp2: ~5e-7 relative of expf, inside phi + phi_lo's 2^-16;
// the wmma kernels, removed after the GPU runs confirmed the same bits, used expf). The fused
// backward below still recomputes the statistics with expf (row_stats, sum_warp_order); the
// split backward (lizard_features_bwd_mma.cu) uses ex2 as the forward does.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lizard/core/error.h"
#include "lizard/core/tensor.h"
#include "lizard/cuda/copy.h"
#include "lizard_attention_tc.cuh"
#include "lizard_features_mma.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

constexpr int kFwdWarps = 8;    // forward CTA; 2 CTAs per SM (shared: W, Wlo, 8 x 4.3 KiB)
// backward CTA: 1 per SM (shared: W, Wlo, x and du of a tile), a tile of 128 tokens per step;
// 8 warps leave 255 registers (u, dW accumulators, dphi in flight: 209-235 used, no spills),
// 16 warps (128 registers) spilled 0.5-2 KB per thread
constexpr int kBwdWarps = 8;
constexpr int kBwdTile = kBwdWarps * kUnit;
constexpr int kMaxWUnits = 64 / kBwdWarps;  // 16x16 tiles of dW per warp: (D/16)(F/16) <= 64

// ---------------------------------------------------------------------------------------
/// Forward. Grid (CTAs per head, H); warp w of CTA i takes the 16-token units i*kFwdWarps + w,
/// stepping by gridDim.x * kFwdWarps, of the B * ceil(T/16) units of head h. Shared: W, Wlo
/// (kWlo) [D][pad F], then per warp a buffer of [16][pad max(D, F)] bf16: the unit's x rows,
/// then (once u is in registers) the staging of phi (rows 0-7) and phi_lo (rows 8-15) for the
/// 8 rows of one half (row g or g+8, positive or negative half) at a time.
/// k128: D = F = 128 at compile time (the model's shape: the n-tile guards fold).
template <bool kExp, bool kLo, bool kWlo, bool k128>
__global__ void __launch_bounds__(kFwdWarps * 32, 2)
    features_mma_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ W,
                        const bf* __restrict__ Wlo, bf* __restrict__ phi,
                        bf* __restrict__ phi_lo, Dims d) {
  pdl_enter();
  extern __shared__ __align__(128) char smem[];
  const int D = k128 ? 128 : d.D, F = k128 ? 128 : d.F, nt = F / 8, LW = pad_ld(F), LB = pad_ld(max(D, F));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.y, hx = h / (d.H / Hx);
  bf* sw = reinterpret_cast<bf*>(smem);
  bf* swl = sw + D * LW;
  bf* buf = sw + (kWlo ? 2 : 1) * D * LW + warp * kUnit * LB;
  const uint32_t sw_a = smem_u32(sw), swl_a = kWlo ? smem_u32(swl) : 0u, buf_a = smem_u32(buf);
  load_weight(sw_a, W + int64_t(h) * D * F, D, F);
  if constexpr (kWlo) load_weight(swl_a, Wlo + int64_t(h) * D * F, D, F);
  cp_async_wait<0>();
  __syncthreads();

  const int per_b = (d.T + kUnit - 1) / kUnit, units = d.B * per_b;
  const int vpr = F / 8, rr0 = lane / vpr, c80 = lane % vpr, sdr = 32 / vpr, sdc = 32 % vpr;
  for (int unit = blockIdx.x * kFwdWarps + warp; unit < units; unit += gridDim.x * kFwdWarps) {
    const int b = unit / per_b, t0 = (unit % per_b) * kUnit, n = min(kUnit, d.T - t0);
    load_unit_rows(buf_a, LB, x + ((int64_t(b) * d.T + t0) * Hx + hx) * D, int64_t(Hx) * D, n, D, lane);
    cp_async_wait<0>();
    __syncwarp();
    float u[kMaxNT][4];
    warp_u<kWlo>(u, buf_a, LB, sw_a, swl_a, LW, D, F);
    __syncwarp();  // every lane's reads of the x rows are done: the buffer stages phi now
    const int LS = LW;  // staging: phi rows 0-7, phi_lo rows 8-15 of the buffer, ld pad F
    bf* shi = buf;
    bf* slo = buf + 8 * LS;
    const int64_t row0 = (int64_t(b) * d.H + h) * d.T + t0;  // phi row of token t0
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const MapExp2 mx = map_exp2<kExp>(u, r, nt);
#pragma unroll
      for (int sgn = 0; sgn < 2; ++sgn) {
        const float c = sgn ? mx.cn : mx.cp, s2 = sgn ? -kLog2e : kLog2e;
        // the f32 phi of this thread's elements (normalised by the offset for softmax)
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt) {
            float v[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) v[e] = fast_exp2(fmaf(u[j][2 * r + e], s2, c));
            const int off = g * LS + 8 * j + 2 * q;
            if constexpr (kLo) {
              bf h0, h1, l0, l1;
              split2(v[0], h0, l0);
              split2(v[1], h1, l1);
              *reinterpret_cast<uint32_t*>(shi + off) = pack_bf16(h0, h1);
              *reinterpret_cast<uint32_t*>(slo + off) = pack_bf16(l0, l1);
            } else {
              *reinterpret_cast<uint32_t*>(shi + off) = pack_bf16(v[0], v[1]);
            }
          }
        __syncwarp();
        // 8 rows (tokens t0 + 8r + rr) x F columns out as 16-byte stores; chunk (rr, c8) of
        // a lane advances by 32 chunks (steps precomputed: no division in the loop)
        for (int rr = rr0, c8 = c80; rr < 8; rr += sdr, c8 += sdc) {
          if (c8 >= vpr) c8 -= vpr, ++rr;
          if (rr >= 8 || 8 * r + rr >= n) break;
          const int c = 8 * c8;
          const int64_t o = (row0 + 8 * r + rr) * 2 * F + sgn * F + c;
          *reinterpret_cast<uint4*>(phi + o) = *reinterpret_cast<const uint4*>(shi + rr * LS + c);
          if constexpr (kLo)
            *reinterpret_cast<uint4*>(phi_lo + o) = *reinterpret_cast<const uint4*>(slo + rr * LS + c);
        }
        __syncwarp();  // staging read out before it is written again (or refilled with x)
      }
    }
  }
}

size_t features_fwd_smem(const Dims& d, bool wlo) {
  return sizeof(bf) * (size_t(wlo ? 2 : 1) * d.D * pad_ld(d.F) +
                       size_t(kFwdWarps) * kUnit * pad_ld(std::max(d.D, d.F)));
}

// ---------------------------------------------------------------------------------------

/// Backward. Grid (CTAs per head, H); CTA i walks the kBwdTile-token tiles i*tpc .. (i+1)*tpc - 1
/// of the B * ceil(T/kBwdTile) tiles of head h, warp w owning tokens 16w..16w+15 of a tile:
///   u = x (W + Wlo) (warp_u, the forward's bits) and the map's statistics (row_stats);
///   du (f32, the formulas of features_bwd_kernel) from dphi [B,H,T,2F] f32, rounded to bf16
///   as the wmma kernel did, into shared du [kBwdTile][F] (dx's A operand, dW's B operand);
///   dx [B,T,Hx,D] += du W^T (atomics when atomic_dx);
///   dW_h += x^T du: warp w owns up to kMaxWUnits 16x16 tiles of dW, accumulated over all
///   the CTA's tiles, added to dW [H,D,F] f32 once at the end (atomics across CTAs).
/// Shared: W, Wlo [D][pad F], x [kBwdTile][pad D], du [kBwdTile][pad F] (bf16).
template <bool kExp, bool kWlo>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    features_bwd_mma_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ W,
                            const bf* __restrict__ Wlo, const float* __restrict__ dphi,
                            float* __restrict__ dx, bool atomic_dx, float* __restrict__ dW,
                            int tpc, Dims d) {
  pdl_enter();
  extern __shared__ __align__(128) char smem[];
  const int D = d.D, F = d.F, F2 = 2 * F, nt = F / 8, LW = pad_ld(F), LX = pad_ld(D);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.y, hx = h / (d.H / Hx);
  bf* sw = reinterpret_cast<bf*>(smem);
  bf* swl = sw + D * LW;
  bf* sx = sw + (kWlo ? 2 : 1) * D * LW;
  bf* sdu = sx + kBwdTile * LX;
  const uint32_t sw_a = smem_u32(sw), swl_a = kWlo ? smem_u32(swl) : 0u;
  const uint32_t sx_a = smem_u32(sx), sdu_a = smem_u32(sdu);
  const uint32_t sxw_a = sx_a + 2u * uint32_t(warp * kUnit * LX);  // this warp's x rows
  const int per_b = (d.T + kBwdTile - 1) / kBwdTile;
  const int tile0 = blockIdx.x * tpc, tile1 = min(d.B * per_b, tile0 + tpc);
  // dW tiles of this warp: units warp*upw .. +upw-1 of the (D/16)(F/16), row-major over
  // (i-tile, f-tile), so a warp's units mostly share their x^T fragment
  const int nft = F / 16, nwu = (D / 16) * nft;
  const int upw = (nwu + kBwdWarps - 1) / kBwdWarps;
  load_weight(sw_a, W + int64_t(h) * D * F, D, F);
  if constexpr (kWlo) load_weight(swl_a, Wlo + int64_t(h) * D * F, D, F);
  cp_async_wait<0>();
  __syncthreads();
  float wacc[kMaxWUnits][2][4];
#pragma unroll
  for (int i = 0; i < kMaxWUnits; ++i)
#pragma unroll
    for (int k = 0; k < 2; ++k) wacc[i][k][0] = wacc[i][k][1] = wacc[i][k][2] = wacc[i][k][3] = 0.f;

  for (int tile = tile0; tile < tile1; ++tile) {
    const int b = tile / per_b, tw = (tile % per_b) * kBwdTile + warp * kUnit;  // warp's t0
    const int n = max(0, min(kUnit, d.T - tw));
    __syncthreads();  // the previous tile's dW reads of sx and sdu are done
    load_unit_rows(sxw_a, LX, x + ((int64_t(b) * d.T + tw) * Hx + hx) * D, int64_t(Hx) * D, n, D, lane);
    cp_async_wait<0>();
    __syncwarp();
    float u[kMaxNT][4];
    warp_u<kWlo>(u, sxw_a, LX, sw_a, swl_a, LW, D, F);
    // du, rounded to bf16 as the wmma kernel did, into shared (row-major [token][f]): the A
    // operand of dx = du W^T (this warp's rows) and the B operand of dW (all rows), written
    // straight from the fragment layout (kept in registers instead, it pushed the kernel
    // to the 255-register limit with spills).
    bf* duw = sdu + (warp * kUnit + g) * LW + 2 * q;  // row g, column 2q
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool valid = g + 8 * r < n;
      const float* dp = dphi + ((int64_t(b) * d.H + h) * d.T + tw + g + 8 * r) * F2 + 2 * q;
      // this thread's dphi pair of n-tile j, sign sgn (zero past T: du = 0 there)
      auto dpair = [&](int j, int sgn) {
        return valid ? __ldg(reinterpret_cast<const float2*>(dp + sgn * F + 8 * j))
                     : make_float2(0.f, 0.f);
      };
      auto comp = [](float2 v, int e) { return e ? v.y : v.x; };
      // du of row r into duw as bf16 pairs: du_f = grad(u_f, dphi_f, dphi_{F+f}, f) for this
      // thread's two columns f of every n-tile, zero past the tokens (the map's formula is
      // the caller's; the walk over the fragment layout is shared)
      auto store_du = [&](auto grad) {
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt) {
            const float2 dpp = dpair(j, 0), dpn = dpair(j, 1);
            float gv[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              gv[e] = grad(u[j][2 * r + e], comp(dpp, e), comp(dpn, e), 8 * j + 2 * q + e);
              if (!valid) gv[e] = 0.f;
            }
            *reinterpret_cast<uint32_t*>(duw + 8 * r * LW + 8 * j) = pack_bf16(gv[0], gv[1]);
          }
      };
      const RowStats st = row_stats<kExp>(u, r, nt);
      if constexpr (kExp) {
        // arg-max of |u| (the smallest f on ties), which takes the max's gradient
        float best = -1.f;
        int arg = 0;
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              if (fabsf(u[j][2 * r + e]) > best) best = fabsf(u[j][2 * r + e]), arg = 8 * j + 2 * q + e;
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
          const float ob = __shfl_xor_sync(0xffffffffu, best, o);
          const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
          if (ob > best || (ob == best && oa < arg)) best = ob, arg = oa;
        }
        const float m = st.mp;
        const float pp = sum_warp_order(nt, [&](int j) {
          const float2 v = dpair(j, 0);
          return make_float2(expf(u[j][2 * r] - m) * v.x, expf(u[j][2 * r + 1] - m) * v.y);
        });
        const float pn = sum_warp_order(nt, [&](int j) {
          const float2 v = dpair(j, 1);
          return make_float2(expf(-u[j][2 * r] - m) * v.x, expf(-u[j][2 * r + 1] - m) * v.y);
        });
        store_du([&](float uu, float dpp, float dpn, int f) {
          float gv = expf(uu - m) * dpp - expf(-uu - m) * dpn;
          if (f == arg) gv -= (uu >= 0.f ? 1.f : -1.f) * (pp + pn);
          return gv;
        });
      } else {
        const float mp = st.mp, mn = st.mn, ip = st.ip, in = st.in;
        const float pp = sum_warp_order(nt, [&](int j) {
          const float2 v = dpair(j, 0);
          return make_float2(expf(u[j][2 * r] - mp) * ip * v.x, expf(u[j][2 * r + 1] - mp) * ip * v.y);
        });
        const float pn = sum_warp_order(nt, [&](int j) {
          const float2 v = dpair(j, 1);
          return make_float2(expf(-u[j][2 * r] - mn) * in * v.x, expf(-u[j][2 * r + 1] - mn) * in * v.y);
        });
        store_du([&](float uu, float dpp, float dpn, int) {
          return expf(uu - mp) * ip * (dpp - pp) - expf(-uu - mn) * in * (dpn - pn);
        });
      }
    }
    __syncwarp();  // this warp's du rows are in shared
    // dx = du W^T (W_hi, as the wmma kernel): B = W^T, W stored [i][f] = [n][k] (plain
    // ldmatrix: lanes 0-7 rows i 0-7 at f 0, 8-15 at f 8, 16-31 the same for rows i 8-15);
    // D in halves of 64 columns to bound the accumulator registers
    const uint32_t wt_off = 2u * uint32_t(((lane & 7) + ((lane >> 4) << 3)) * LW + ((lane >> 3) & 1) * 8);
    // A = du (row-major): lanes 0-15 rows 0-15 at f 0, 16-31 at f 8
    const uint32_t da_at = sdu_a + 2u * uint32_t((warp * kUnit + (lane & 15)) * LW + (lane >> 4) * 8);
    float* dxr = dx + ((int64_t(b) * d.T + tw + g) * Hx + hx) * D + 2 * q;  // row g, column 2q
    const int64_t dx8 = int64_t(8) * Hx * D;                                 // to row g + 8
#pragma unroll
    for (int ih = 0; ih < kMaxDT / 8; ++ih) {
      if (ih * 64 >= D) break;
      float acc[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
      for (int kk = 0; kk < F / 16; ++kk) {
        uint32_t a[4];
        ldsm_x4(a, da_at + 32u * kk);
#pragma unroll
        for (int ip = 0; ip < 4; ++ip) {
          const int i0 = ih * 64 + ip * 16;
          if (i0 < D) {
            uint32_t bw[4];
            ldsm_x4(bw, sw_a + wt_off + 2u * uint32_t(i0 * LW + kk * 16));
            mma_bf16_x2(acc[2 * ip], acc[2 * ip + 1], a, bw);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int col = ih * 64 + i * 8;
        if (col >= D) break;
        if (g < n) add_pair(dxr + col, acc[i][0], acc[i][1], atomic_dx);
        if (g + 8 < n) add_pair(dxr + dx8 + col, acc[i][2], acc[i][3], atomic_dx);
      }
    }
    __syncthreads();  // every warp's x rows and du are in shared
    // dW += x^T du over the tile's kBwdTile tokens. A = x^T (x stored [t][i] = [k][m]: transposed
    // load, lanes 0-7 t 0-7 at i 0, 8-15 t 0-7 at i 8, 16-23 t 8-15 at i 0, 24-31 t 8-15 at
    // i 8); B = du (stored [t][f] = [k][n]: transposed load as W in warp_u).
    const uint32_t xa_off = 2u * uint32_t(((lane & 7) + ((lane >> 4) << 3)) * LX + ((lane >> 3) & 1) * 8);
    const uint32_t db_off = 2u * uint32_t((lane & 15) * LW + (lane >> 4) * 8);
    for (int kk = 0; kk < kBwdTile / 16; ++kk) {
      uint32_t a[4];
      int a_it = -1;
#pragma unroll
      for (int i = 0; i < kMaxWUnits; ++i) {
        const int wu = warp * upw + i;
        if (i < upw && wu < nwu) {
          const int it = wu / nft, ft = wu % nft;
          if (it != a_it) {
            ldsm_x4_trans(a, sx_a + xa_off + 2u * uint32_t(kk * 16 * LX + it * 16));
            a_it = it;
          }
          uint32_t bq[4];
          ldsm_x4_trans(bq, sdu_a + db_off + 2u * uint32_t(kk * 16 * LW + ft * 16));
          mma_bf16_x2(wacc[i][0], wacc[i][1], a, bq);
        }
      }
    }
  }
  if (tile0 >= tile1) return;
  add_dw_units(dW, h, D, F, wacc, warp, upw, nwu, nft, g, q);
}

size_t features_bwd_mma_smem(const Dims& d, bool wlo) {
  return sizeof(bf) * (size_t(wlo ? 2 : 1) * d.D * pad_ld(d.F) + size_t(kBwdTile) * pad_ld(d.D) +
                       size_t(kBwdTile) * pad_ld(d.F));
}

/// hi, lo [rows][D] (contiguous) = split2 of the first D columns of x's rows of ld floats
/// (ld >= D): a weight's pair (x hi + x lo is x w to about 2^-17, x exact in bf16: one row,
/// ld = D) or the dO' pair of the dstate sweep (rows of D + 1 floats).
__global__ void split_rows_kernel(const float* __restrict__ x, bf* __restrict__ hi,
                                  bf* __restrict__ lo, int64_t rows, int64_t D, int64_t ld) {
  pdl_enter();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * D) return;
  const int64_t r = ld == D ? 0 : i / D;  // row r, column i - r D
  split2(x[i + r * (ld - D)], hi[i], lo[i]);
}

/// out = f32(hi) + f32(lo): a split bf16 pair widened (exact: both are bf16, lo < 2^-8 hi).
__global__ void widen_pair_kernel(const bf* __restrict__ hi, const bf* __restrict__ lo,
                                  float* __restrict__ out, int64_t n) {
  pdl_enter();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(hi[i]) + __bfloat162float(lo[i]);
}


}  // namespace

void features_tc_launch(const bf* x, int Hx, const bf* W, const bf* Wlo, bf* phi, bf* phi_lo,
                        const Dims& d, cudaStream_t s) {
  LZ_CHECK(aligned16(x) && aligned16(W) && (!Wlo || aligned16(Wlo)) && aligned16(phi) &&
               (!phi_lo || aligned16(phi_lo)),
           "lizard feature maps (CUDA): x, W, Wlo, phi and phi_lo must be 16-byte aligned");
  const bool wlo = Wlo != nullptr;
  const size_t sm = features_fwd_smem(d, wlo);
  const int units = d.B * ((d.T + kUnit - 1) / kUnit);
  // two CTAs per SM over all heads (a CTA loads its head's W once, then streams units)
  const int per_head = std::max(1, std::min((units + kFwdWarps - 1) / kFwdWarps, 2 * sm_count() / d.H));
  const dim3 grid(per_head, d.H);
  auto go = [&](auto kernel) {
    grant_smem(kernel, sm);
    pdl_launch("lizard feature maps", kernel, grid, kFwdWarps * 32, sm, s, x, Hx, W, Wlo, phi,
               phi_lo, d);
  };
  const bool lo = phi_lo != nullptr;
  auto go_shape = [&](auto full) {
    constexpr bool k128 = decltype(full)::value;
    if (d.act_exp) {
      if (lo) wlo ? go(features_mma_kernel<true, true, true, k128>) : go(features_mma_kernel<true, true, false, k128>);
      else wlo ? go(features_mma_kernel<true, false, true, k128>) : go(features_mma_kernel<true, false, false, k128>);
    } else {
      if (lo) wlo ? go(features_mma_kernel<false, true, true, k128>) : go(features_mma_kernel<false, true, false, k128>);
      else wlo ? go(features_mma_kernel<false, false, true, k128>) : go(features_mma_kernel<false, false, false, k128>);
    }
  };
  if (d.D == 128 && d.F == 128) go_shape(std::true_type{});
  else go_shape(std::false_type{});
}

void features_bwd_tc_launch(const bf* x, int Hx, const bf* W, const bf* Wlo, const float* dphi,
                            float* dx, bool atomic_dx, float* dW, const Dims& d, cudaStream_t s,
                            bf* dx_out) {
  LZ_CHECK(aligned16(x) && aligned16(W) && (!Wlo || aligned16(Wlo)) && aligned16(dphi) &&
               aligned16(dx) && (!dW || aligned16(dW)) && (!dx_out || aligned16(dx_out)),
           "lizard feature maps (CUDA): x, W, Wlo, dphi, dx, dW and dx_out must be 16-byte aligned");
  LZ_CHECK(!(dx_out && atomic_dx),
           "lizard feature maps (CUDA): dx_out needs owned dx rows (atomic_dx false)");
  LZ_CHECK(dx || !dx_out,
           "lizard feature maps (CUDA): dx_out needs dx (the old gradient it adds to); no dx "
           "gradient wanted is dx and dx_out both null");
  LZ_CHECK(dx || dW,
           "lizard feature maps (CUDA): the feature backward needs dx or dW (both null: no output)");
  if (!features_bwd_old_forced())  // the split kernels, lizard_features_bwd_mma.cu
    return features_bwd_mma_launch(x, Hx, W, Wlo, dphi, dx, atomic_dx, dW, d, s, dx_out);
  // the fused kernel (a bisection path, kept as it was) always accumulates dx and dW: zeroed
  // scratch ones for those not wanted (its dW does not depend on dx's values, nor dx on dW's)
  Tensor dx_scratch, dw_scratch;
  if (!dx || !dW) {
    int dev = 0;
    LZ_CHECK(cudaGetDevice(&dev) == cudaSuccess, "lizard feature maps (CUDA): no current device");
    if (!dx) {
      dx_scratch = Tensor::zeros({d.B, d.T, Hx, d.D}, DType::F32, Device::cuda(dev));
      dx = dx_scratch.data<float>();
    }
    if (!dW) {
      dw_scratch = Tensor::zeros({d.H, d.D, d.F}, DType::F32, Device::cuda(dev));
      dW = dw_scratch.data<float>();
    }
  }
  const bool wlo = Wlo != nullptr;
  const size_t sm = features_bwd_mma_smem(d, wlo);
  const int tiles = d.B * ((d.T + kBwdTile - 1) / kBwdTile);
  // one CTA per SM over all heads; fewer CTAs per head means fewer dW atomics
  const int per_head = std::max(1, std::min(tiles, sm_count() / d.H));
  const int tpc = (tiles + per_head - 1) / per_head;
  const dim3 grid((tiles + tpc - 1) / tpc, d.H);
  auto go = [&](auto kernel) {
    grant_smem(kernel, sm);
    pdl_launch("lizard feature-map backward", kernel, grid, kBwdWarps * 32, sm, s, x, Hx, W, Wlo,
               dphi, dx, atomic_dx, dW, tpc, d);
  };
  if (d.act_exp) wlo ? go(features_bwd_mma_kernel<true, true>) : go(features_bwd_mma_kernel<true, false>);
  else wlo ? go(features_bwd_mma_kernel<false, true>) : go(features_bwd_mma_kernel<false, false>);
  // the fused kernel (a bisection path) keeps its f32 read-modify-write; the bf16 output by
  // the conversion Tensor::to runs (round to nearest even), the bits of the split kernels'
  // direct store
  if (dx_out) {
    StridedLayout flat;
    flat.ndim = 1;
    flat.shape[0] = int64_t(d.B) * d.T * Hx * d.D;
    flat.src_stride[0] = flat.dst_stride[0] = 1;
    strided_copy(dx, DType::F32, dx_out, DType::BF16, flat, flat.shape[0], s);
  }
}

namespace {
void split_launch(const float* x, bf* hi, bf* lo, int64_t rows, int64_t D, int64_t ld,
                  cudaStream_t s) {
  const int64_t n = rows * D;
  if (n == 0) return;
  pdl_launch("lizard bf16 split", split_rows_kernel, int((n + 255) / 256), 256, 0, s, x, hi, lo,
             rows, D, ld);
}
}  // namespace

void split_bf16_launch(const float* w, bf* hi, bf* lo, int64_t n, cudaStream_t s) {
  split_launch(w, hi, lo, 1, n, n, s);
}

void split_rows_launch(const float* x, bf* hi, bf* lo, int64_t rows, int D, cudaStream_t s) {
  split_launch(x, hi, lo, rows, D, D + 1, s);
}

void widen_pair_launch(const bf* hi, const bf* lo, float* out, int64_t n, cudaStream_t s) {
  widen_pair_kernel<<<int((n + 255) / 256), 256, 0, s>>>(hi, lo, out, n);
}

}  // namespace lizard::cuda::lizard_detail
