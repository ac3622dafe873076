// Feature-map backward of the Lizard attention in two kernels (issue #5), the contract of
// features_bwd_tc_launch (lizard_attention_tc.cuh): dx += du W_h^T, dW_h += x^T du with
// du = dphi * map'(u), u = x (W + Wlo) recomputed.
//
// Why two kernels. The fused kernel of lizard_features_tc.cu (features_bwd_mma_kernel) keeps
// dW in registers for a CTA's life: 64 accumulators per thread on top of u (64) and dphi in
// flight, so it runs 8 warps per SM (255 registers), syncs the CTA twice per 128-token tile
// and waits on every x load, dphi load and dx read-modify-write in turn: 2.19 + 1.75 ms for
// q and k at B=8 T=2048 H=32 D=F=128 (H200), against an HBM floor of about 0.5 ms.
//   1. features_du_dx_kernel: warps own 16-token units (persistent, like the forward); the
//      next unit's x rows stream in by cp.async (double buffer), this unit's dphi is issued
//      before the u product (rows 0-7 into registers, rows 8-15 by cp.async into shared) so
//      its latency hides behind the mma and the map, and the query call's old dx rows follow
//      by cp.async into the same buffer once rows 8-15 are read (the sum goes back as f32,
//      or with dx_out, the query call's usual case, straight out as the bf16 gradient: no f32
//      write and no conversion pass after); du (bf16, as the fused kernel rounds it) stays in
//      registers, packed as the A operand of dx = du W^T (a C tile pair is an A fragment,
//      mma_util.cuh), and leaves for HBM as du [H][B*T][F] bf16; no CTA barrier after the
//      start.
//   2. features_dw_kernel: dW_h = x^T du, a split-K GEMM over the B*T tokens of head h:
//      64-token tiles of x and du in three shared-memory stages, dW in registers, one
//      atomic add per element and CTA at the end (a few CTAs per head).
//   No dx wanted (dx and dx_out null: stage-1 distillation, issue #11): kernel 1's kDx = false
//      instantiation writes du alone (no old dx rows, no du W^T mma, no dx stores: at the 8B
//      query call's shape a third of its HBM bytes and, u being x (W + Wlo), of its mma); du,
//      so dW, as with dx.
// Extra traffic: du written and read once (2 x H*B*T*F bf16: 0.27 GB at the shape above)
// and x read twice, against the 1.2 GB the query call must move anyway.
//
// Precision: the same operands and products as the fused kernel. u and the map's maxima come
// from the same functions (lizard_features_mma.cuh: the same bits); du from the same formula
// rounded to bf16 in the same place, but its exponentials are ex2.approx of u log2e - m log2e
// (2 instructions, not expf's 9; about 5e-7 relative here) and the softmax sums are taken in
// one pass (pp = sum e dphi / sum e), so du's f32 value differs from the fused kernel's by
// ~1e-6 relative and its bf16 rounding flips on a fraction ~2e-4 of the elements (one bf16
// ulp); the gradients' error budget against f64 (1e-2 relative) is untouched. dx from the
// same mma sequence (k-steps ascending, W_hi); dW's f32 sums over tokens run in another order
// (64-token tiles, a different CTA split) and dk's atomics over the heads of a GQA group in
// another order.
//
// Kept beside the fused kernel until a GPU run has compared them:
// LIZARD_FEATURES_BWD_KERNEL=old selects the fused kernel (features_bwd_old_forced).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "lizard/core/tensor.h"
#include "lizard/cuda/lizard_features_bwd.h"
#include "lizard_attention_tc.cuh"
#include "lizard_features_mma.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

// du/dx kernel: 8 warps, 1 CTA per SM (shared at D = F = 128: W, Wlo 68 KiB, 8 x 2 x 4.3 KiB
// of x rows, 8 x 8.5 KiB of dphi rows, later old dx rows: 204 KiB); 241-255 registers (u 64, a
// row's dphi 64, du 32), no spills at D = F = 128, 8-12 bytes at other shapes without Wlo.
constexpr int kDuWarps = 8;
// dW kernel: 8 warps, 2 CTAs per SM (128 registers: 64 dW accumulators per thread), 64-token
// tiles, three stages of x and du (102 KiB at D = F = 128): a tile is only 64 mma per warp,
// so two tiles' loads are in flight behind it.
constexpr int kDwWarps = 8;
constexpr int kDwTile = 64;
constexpr int kDwStages = 3;
constexpr int kDwMaxUnits = 64 / kDwWarps;  // 16x16 tiles of dW per warp: (D/16)(F/16) <= 64

/// Floats of a du/dx warp's f32 buffer: dphi rows g+8 [8][2F + 8], later the unit's old dx
/// rows [16][D + 8].
__host__ __device__ constexpr int du_buf_floats(int D, int F) {
  return 8 * (2 * F + 8) > kUnit * (D + 8) ? 8 * (2 * F + 8) : kUnit * (D + 8);
}

/// Grid (CTAs per head, H); warp w of CTA i takes the 16-token units i*kDuWarps + w, stepping
/// by gridDim.x * kDuWarps, of the B * ceil(T/16) units of head h (units do not cross a batch
/// row: dphi is [B,H,T,2F]). Per unit: u = x (W + Wlo) (the forward's bits) and the row
/// statistics (map_exp2's maxima and sums, in the same order), du (the map's derivative on
/// ex2, rounded to bf16 where features_bwd_mma_kernel rounds it) kept as dx's A fragments, du [H][B*T][F] bf16 written for features_dw_kernel, dx [B,T,Hx,D] += du W^T
/// (atomics when atomic_dx; owned rows with dx_out: bf16(old dx + du W^T) into dx_out, dx
/// only read, so the caller converts nothing afterwards). Shared: W, Wlo [D][pad F] bf16, per warp two x buffers [16][pad D]
/// bf16 and an f32 buffer (du_buf_floats): the dphi of the unit's rows 8-15 [8][2F + 8], then
/// (queries) the old dx rows of the unit [16][D + 8].
///
/// k128: D = F = 128 known at compile time (the model's shape), so every n-tile and k-step
/// guard of the unrolled loops folds away (they were ~15% of the instructions).
/// kDx false: no dx wanted (dx and dx_out null, stage-1 distillation: only dW): the old dx
/// rows are not loaded and the du W^T mma and every dx store or atomic are compiled out; u,
/// the map and du are the same code, so du (hence dW) keeps its bits. W stays in shared
/// memory (u needs it); the f32 buffer keeps its size (it is the dphi rows' too).
template <bool kExp, bool kWlo, bool k128, bool kDx>
__global__ void __launch_bounds__(kDuWarps * 32, 1)
    features_du_dx_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ W,
                          const bf* __restrict__ Wlo, const float* __restrict__ dphi,
                          float* __restrict__ dx, bool atomic_dx, bf* __restrict__ dx_out,
                          bf* __restrict__ du, Dims d) {
  pdl_enter();
  extern __shared__ __align__(128) char smem[];
  const int D = k128 ? 128 : d.D, F = k128 ? 128 : d.F, F2 = 2 * F, nt = F / 8, LW = pad_ld(F),
            LX = pad_ld(D);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.y, hx = h / (d.H / Hx);
  const int64_t N = int64_t(d.B) * d.T;
  const uint32_t sw_a = smem_u32(smem);
  const uint32_t swl_a = kWlo ? sw_a + 2u * uint32_t(D * LW) : 0u;
  const uint32_t xbytes = 2u * uint32_t(kUnit * LX);  // one x buffer
  const uint32_t xb_a = sw_a + 2u * uint32_t((kWlo ? 2 : 1) * D * LW) + 2u * warp * xbytes;
  // this warp's f32 buffer: the unit's dphi rows g+8 [8][2F + 8], then (queries, once those
  // are in registers) the unit's old dx rows [16][D + 8] (the padding puts a half-warp's
  // float2 reads of rows g in distinct banks: 2F + 8 = D + 8 = 8 mod 32 at F, D = 128)
  const int LD2 = F2 + 8, LDO = D + 8;
  const size_t dpb_off = size_t(2) * ((kWlo ? 2 : 1) * D * LW + kDuWarps * 2 * kUnit * LX) +
                         size_t(4) * warp * du_buf_floats(D, F);
  const float* dpb = reinterpret_cast<const float*>(smem + dpb_off);
  const uint32_t dpb_a = sw_a + uint32_t(dpb_off);
  const int per_b = (d.T + kUnit - 1) / kUnit, units = d.B * per_b;
  const int stride = gridDim.x * kDuWarps;
  auto load_x = [&](int un, uint32_t dst) {  // commits one group
    const int b = un / per_b, t0 = (un % per_b) * kUnit;
    load_unit_rows(dst, LX, x + ((int64_t(b) * d.T + t0) * Hx + hx) * D, int64_t(Hx) * D,
                   min(kUnit, d.T - t0), D, lane);
  };
  load_weight(sw_a, W + int64_t(h) * D * F, D, F);
  if constexpr (kWlo) load_weight(swl_a, Wlo + int64_t(h) * D * F, D, F);
  int unit = blockIdx.x * kDuWarps + warp;
  if (unit < units) load_x(unit, xb_a);
  cp_async_wait<0>();
  __syncthreads();  // W and Wlo are the whole CTA's; no CTA barrier after this one

  // B = W^T for dx (W stored [i][f] = [n][k]: plain ldmatrix, lanes 0-7 rows i 0-7 at f 0,
  // 8-15 at f 8, 16-31 the same for rows i 8-15), as in features_bwd_mma_kernel
  const uint32_t wt_off = 2u * uint32_t(((lane & 7) + ((lane >> 4) << 3)) * LW + ((lane >> 3) & 1) * 8);
  for (int it = 0; unit < units; unit += stride, ++it) {
    const uint32_t cur = xb_a + (it & 1) * xbytes, nxt = xb_a + ((it + 1) & 1) * xbytes;
    const int b = unit / per_b, t0 = (unit % per_b) * kUnit, n = min(kUnit, d.T - t0);
    // nxt was read by the previous unit's warp_u: every lane is past it before the refill
    // (also the dphi buffer, read by the previous unit's row g+8)
    __syncwarp();
    // dphi of rows g+8 (tokens t0+8..t0+15) into the warp's buffer by cp.async, one group:
    // it streams in behind the u product and row g's map (in registers with row g's, they
    // spilled 0.3-0.8 KB). Rows past T are not copied (read as zeros below).
    {
      // 16-byte chunks: row by row, lanes along the row (no division by the runtime width)
      const float* src = dphi + ((int64_t(b) * d.H + h) * d.T + t0 + 8) * F2;
      for (int rr = 0; rr < 8 && 8 + rr < n; ++rr)
        for (int c = 4 * lane; c < F2; c += 128)
          cp_async16_u32(dpb_a + 4u * uint32_t(rr * LD2 + c), src + int64_t(rr) * F2 + c);
      cp_async_commit();
    }
    if (unit + stride < units) load_x(unit + stride, nxt);
    else cp_async_commit();  // an empty group: the waits below keep their counts
    // this thread's dphi pairs [row g, g+8][sign][n-tile] (columns 8j+2q..+1; zero past T):
    // row g's straight into registers before the u product (their latency hides behind it),
    // row g+8's from the buffer when its row starts
    float2 dpv[2][2][kMaxNT];
    {
      const bool valid = g < n;
      const float* dp = dphi + ((int64_t(b) * d.H + h) * d.T + t0 + g) * F2 + 2 * q;
#pragma unroll
      for (int sgn = 0; sgn < 2; ++sgn)
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          dpv[0][sgn][j] = valid && j < nt ? __ldg(reinterpret_cast<const float2*>(dp + sgn * F + 8 * j))
                                           : make_float2(0.f, 0.f);
    }
    cp_async_wait<2>();  // this unit's x rows (the groups of dphi rows g+8 and the next x may wait)
    __syncwarp();
    float u[kMaxNT][4];
    warp_u<kWlo>(u, cur, LX, sw_a, swl_a, LW, D, F);

    // du as bf16 A fragments of dx = du W^T: k-step kk (f 16kk..16kk+15) is n-tiles 2kk and
    // 2kk+1 of rows g and g+8: a0 = (g, j=2kk), a1 = (g+8, 2kk), a2 = (g, 2kk+1), a3 = (g+8, 2kk+1)
    uint32_t dua[kMaxNT / 2][4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (r == 1) {
        cp_async_wait<1>();  // dphi rows g+8 (the next unit's x may wait)
        __syncwarp();
        const bool valid = g + 8 < n;
#pragma unroll
        for (int sgn = 0; sgn < 2; ++sgn)
#pragma unroll
          for (int j = 0; j < kMaxNT; ++j)
            dpv[1][sgn][j] = valid && j < nt
                                 ? *reinterpret_cast<const float2*>(dpb + g * LD2 + sgn * F + 8 * j + 2 * q)
                                 : make_float2(0.f, 0.f);
        // owned rows (queries): the unit's old dx rows into the buffer now, one group, so the
        // ~1 us from HBM hides behind row g+8's map and the du stores (registers are full).
        // Without dx no group: the waits above still count right (wait<2> at the next unit's
        // start then leaves only its dphi and next-x groups in flight, wait<1> its next-x)
        if constexpr (kDx) {
          __syncwarp();  // every lane's reads of the dphi rows are done
          if (!atomic_dx) {
            const float* src = dx + ((int64_t(b) * d.T + t0) * Hx + hx) * D;
            for (int rr = 0; rr < n; ++rr)
              for (int c = 4 * lane; c < D; c += 128)
                cp_async16_u32(dpb_a + 4u * uint32_t(rr * LDO + c), src + int64_t(rr) * Hx * D + c);
          }
          cp_async_commit();  // (empty for keys: the group counts stay the same)
        }
      }
      const bool valid = g + 8 * r < n;
      // du of row r: du_f = grad(u_f, dphi_f, dphi_{F+f}, f) for this thread's two columns of
      // every n-tile, zero past the tokens, packed to bf16 (pack_bf16 rounds as the fused
      // kernel's store did)
      auto pack_du = [&](auto grad) {
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt) {
            float gv[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float2 pp = dpv[r][0][j], pn = dpv[r][1][j];
              gv[e] = grad(u[j][2 * r + e], e ? pp.y : pp.x, e ? pn.y : pn.x, 8 * j + 2 * q + e);
              if (!valid) gv[e] = 0.f;
            }
            dua[j >> 1][r + 2 * (j & 1)] = pack_bf16(gv[0], gv[1]);
          }
      };
      // exponents in base 2 on the SFU: e^(s u - m) = 2^(s u log2e - m log2e), one FFMA and
      // one MUFU per value (expf's range reduction and scaling cost 9 instructions, and the
      // map took 384 of them per thread and unit). Arguments are <= 0 (m is the row maximum
      // of s u), where ex2.approx.ftz is about 2 ulp and underflows to 0 as expf does.
      if constexpr (kExp) {
        // m = max(0, max_f |u_f|) (row_stats' value) and the arg-max of |u| (the smallest f
        // on ties), which takes the max's gradient
        float m = 0.f, best = -1.f;
        int arg = 0;
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float a = fabsf(u[j][2 * r + e]);
              m = fmaxf(m, a);
              if (a > best) best = a, arg = 8 * j + 2 * q + e;
            }
        m = quad_max(m);
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
          const float ob = __shfl_xor_sync(0xffffffffu, best, o);
          const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
          if (ob > best || (ob == best && oa < arg)) best = ob, arg = oa;
        }
        const float bm = -m * kLog2e;
        // pp = sum_f e^(u_f - m) dphi_f, pn = sum_f e^(-u_f - m) dphi_{F+f}: one pass, two
        // partial sums per thread (e), then the quad
        float sp[2] = {0.f, 0.f}, sn[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float uu = u[j][2 * r + e];
              const float2 vp = dpv[r][0][j], vn = dpv[r][1][j];
              sp[e] = fmaf(fast_exp2(fmaf(uu, kLog2e, bm)), e ? vp.y : vp.x, sp[e]);
              sn[e] = fmaf(fast_exp2(fmaf(uu, -kLog2e, bm)), e ? vn.y : vn.x, sn[e]);
            }
        const float ps = quad_sum((sp[0] + sp[1]) + (sn[0] + sn[1]));  // pp + pn
        pack_du([&](float uu, float dpp, float dpn, int f) {
          float gv = fast_exp2(fmaf(uu, kLog2e, bm)) * dpp - fast_exp2(fmaf(uu, -kLog2e, bm)) * dpn;
          if (f == arg) gv -= (uu >= 0.f ? 1.f : -1.f) * ps;
          return gv;
        });
      } else {
        // softmax over f of u and of -u: maxima mp, mn; in one pass the sums Sp = sum_f
        // e^(u_f - mp), Ap = sum_f e^(u_f - mp) dphi_f (and Sn, An for -u, dphi_{F+f}); then
        // pp = Ap / Sp (the softmax-weighted mean of dphi), du_f = phi_f (dphi_f - pp) -
        // phi_{F+f} (dphi_{F+f} - pn), phi_f = 2^(u_f log2e - mp log2e - log2 Sp) (1/Sp folded
        // into the exponent: Sp >= 1, the maximum's term).
        const RowMax mx = row_max_pn(u, r, nt);
        const float mp = quad_max(mx.p), mn = quad_max(mx.n);
        const float bp = -mp * kLog2e, bn = -mn * kLog2e;
        float s[4][2] = {{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}};  // Sp, Ap, Sn, An by e
#pragma unroll
        for (int j = 0; j < kMaxNT; ++j)
          if (j < nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float uu = u[j][2 * r + e];
              const float2 vp = dpv[r][0][j], vn = dpv[r][1][j];
              const float ep = fast_exp2(fmaf(uu, kLog2e, bp)), en = fast_exp2(fmaf(uu, -kLog2e, bn));
              s[0][e] += ep;
              s[1][e] = fmaf(ep, e ? vp.y : vp.x, s[1][e]);
              s[2][e] += en;
              s[3][e] = fmaf(en, e ? vn.y : vn.x, s[3][e]);
            }
        float t[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) t[k] = s[k][0] + s[k][1];
#pragma unroll
        for (int o = 1; o < 4; o <<= 1)
#pragma unroll
          for (int k = 0; k < 4; ++k) t[k] += __shfl_xor_sync(0xffffffffu, t[k], o);
        const float pp = t[1] / t[0], pn = t[3] / t[2];
        const float cp = bp - fast_log2(t[0]), cn = bn - fast_log2(t[2]);
        pack_du([&](float uu, float dpp, float dpn, int) {
          return fast_exp2(fmaf(uu, kLog2e, cp)) * (dpp - pp) - fast_exp2(fmaf(uu, -kLog2e, cn)) * (dpn - pn);
        });
      }
    }

    // du [H][B*T][F] for the dW kernel: this thread's pairs (rows g, g+8; columns 8j+2q..+1),
    // the rows of this unit's tokens only (past T lie the next batch row's tokens). No du
    // (null) when no dW is wanted (frozen feature maps).
    if (du) {
      bf* dur = du + (int64_t(h) * N + int64_t(b) * d.T + t0 + g) * F + 2 * q;
#pragma unroll
      for (int j = 0; j < kMaxNT; ++j)
        if (j < nt)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            if (g + 8 * r < n)
              *reinterpret_cast<uint32_t*>(dur + 8 * r * F + 8 * j) = dua[j >> 1][r + 2 * (j & 1)];
    }

    if constexpr (!kDx) continue;  // no dx wanted: du was the unit's only output
    // dx = du W^T (W_hi, as the fused kernel), D in halves of 64 columns: the C layout gives
    // this thread rows g, g+8 at columns 2q..+1 of every 8-column tile
    float* dxr = dx + ((int64_t(b) * d.T + t0 + g) * Hx + hx) * D + 2 * q;
    bf* dxo = dx_out ? dx_out + ((int64_t(b) * d.T + t0 + g) * Hx + hx) * D + 2 * q : nullptr;
    const int64_t dx8 = int64_t(8) * Hx * D;  // row g -> row g + 8
    if (!atomic_dx) {
      cp_async_wait<0>();  // the old dx rows (and the next unit's x, issued long before)
      __syncwarp();
    }
#pragma unroll
    for (int ih = 0; ih < kMaxDT / 8; ++ih) {
      if (ih * 64 >= D) break;
      // owned rows (queries): the old values from the buffer
      float2 old[8][2];
      if (!atomic_dx) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const int col = ih * 64 + i * 8 + 2 * q;
          old[i][0] = old[i][1] = make_float2(0.f, 0.f);
          if (col < D) {
            if (g < n) old[i][0] = *reinterpret_cast<const float2*>(dpb + g * LDO + col);
            if (g + 8 < n) old[i][1] = *reinterpret_cast<const float2*>(dpb + (g + 8) * LDO + col);
          }
        }
      }
      float acc[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kMaxNT / 2; ++kk) {
        if (kk < F / 16) {
#pragma unroll
          for (int ip = 0; ip < 4; ++ip) {
            const int i0 = ih * 64 + ip * 16;
            if (i0 < D) {
              uint32_t bw[4];
              ldsm_x4(bw, sw_a + wt_off + 2u * uint32_t(i0 * LW + kk * 16));
              mma_bf16_x2(acc[2 * ip], acc[2 * ip + 1], dua[kk], bw);
            }
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int col = ih * 64 + i * 8;
        if (col >= D) break;
        if (atomic_dx) {
          if (g < n) add_pair(dxr + col, acc[i][0], acc[i][1], true);
          if (g + 8 < n) add_pair(dxr + dx8 + col, acc[i][2], acc[i][3], true);
        } else {
          // old + acc: the fused kernel's add_pair(..., false) in one pass; with dx_out that
          // f32 sum rounded once to bf16 (nearest even, as the f32 -> bf16 copy it replaces),
          // the final gradient (block-uniform branch)
          const float2 s0 = make_float2(old[i][0].x + acc[i][0], old[i][0].y + acc[i][1]);
          const float2 s1 = make_float2(old[i][1].x + acc[i][2], old[i][1].y + acc[i][3]);
          if (dx_out) {
            if (g < n) *reinterpret_cast<uint32_t*>(dxo + col) = pack_bf16(s0.x, s0.y);
            if (g + 8 < n) *reinterpret_cast<uint32_t*>(dxo + dx8 + col) = pack_bf16(s1.x, s1.y);
          } else {
            if (g < n) *reinterpret_cast<float2*>(dxr + col) = s0;
            if (g + 8 < n) *reinterpret_cast<float2*>(dxr + dx8 + col) = s1;
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // no copy outlives the CTA (the last group is empty, but be plain)
}

size_t features_du_dx_smem(const Dims& d, bool wlo) {
  return sizeof(bf) * (size_t(wlo ? 2 : 1) * d.D * pad_ld(d.F) + size_t(kDuWarps) * 2 * kUnit * pad_ld(d.D)) +
         sizeof(float) * size_t(kDuWarps) * du_buf_floats(d.D, d.F);
}

/// dW [H,D,F] f32 += x_h^T du_h over the N = B*T tokens: grid (CTAs per head, H), CTA i takes
/// the kDwTile-token tiles i*tpc .. (i+1)*tpc - 1 of ceil(N / kDwTile) (tokens are rows n of
/// x [N, Hx, D], head h reads x head h/(H/Hx), and of du [H][N][F] bf16); warp w owns up to
/// kDwMaxUnits 16x16 tiles of dW (row-major over (i-tile, f-tile), as features_bwd_mma_kernel),
/// accumulated in f32 over the CTA's tiles and added to dW once (atomics across the CTAs).
/// Shared: kDwStages stages of x [kDwTile][pad D] and du [kDwTile][pad F] bf16.
/// k128: D = F = 128 at compile time (the unit guards and strides fold).
template <bool k128>
__global__ void __launch_bounds__(kDwWarps * 32, 2)
    features_dw_kernel(const bf* __restrict__ x, int Hx, const bf* __restrict__ du,
                       float* __restrict__ dW, int tpc, Dims d) {
  pdl_enter();
  extern __shared__ __align__(128) char smem[];
  const int D = k128 ? 128 : d.D, F = k128 ? 128 : d.F, LW = pad_ld(F), LX = pad_ld(D);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.y, hx = h / (d.H / Hx);
  const int64_t N = int64_t(d.B) * d.T;
  const int tiles = int((N + kDwTile - 1) / kDwTile);
  const int tile0 = blockIdx.x * tpc, tile1 = min(tiles, tile0 + tpc);
  if (tile0 >= tile1) return;  // the whole CTA: no barrier is skipped by part of it
  const uint32_t s_a = smem_u32(smem);
  const uint32_t xs_bytes = 2u * uint32_t(kDwTile * LX), stage_bytes = xs_bytes + 2u * uint32_t(kDwTile * LW);
  const bf* duh = du + int64_t(h) * N * F;
  constexpr int kThreads = kDwWarps * 32;
  const int xv = D / 8, fv = F / 8;  // 16-byte chunks per row of x, du
  const int xr0 = threadIdx.x / xv, xc0 = threadIdx.x % xv, xdr = kThreads / xv, xdc = kThreads % xv;
  const int fr0 = threadIdx.x / fv, fc0 = threadIdx.x % fv, fdr = kThreads / fv, fdc = kThreads % fv;
  // tile -> stage: x rows, then du rows; rows past N are zeros (they add nothing). Commits.
  auto load_tile = [&](int tile, uint32_t st) {
    const int64_t n0 = int64_t(tile) * kDwTile;
    // chunk (r, c8) of a thread advances by the CTA's 256 chunks: the steps precomputed
    // (xr, xc: x rows; fr, fc: du rows), no division by the runtime width in the loop
    for (int r = xr0, c8 = xc0; r < kDwTile; r += xdr, c8 += xdc) {
      if (c8 >= xv) c8 -= xv, ++r;
      if (r >= kDwTile) break;
      const uint32_t a = st + 2u * uint32_t(r * LX + 8 * c8);
      if (n0 + r < N) cp_async16_u32(a, x + ((n0 + r) * Hx + hx) * D + 8 * c8);
      else st_shared_zero16(a);
    }
    for (int r = fr0, c8 = fc0; r < kDwTile; r += fdr, c8 += fdc) {
      if (c8 >= fv) c8 -= fv, ++r;
      if (r >= kDwTile) break;
      const uint32_t a = st + xs_bytes + 2u * uint32_t(r * LW + 8 * c8);
      if (n0 + r < N) cp_async16_u32(a, duh + (n0 + r) * F + 8 * c8);
      else st_shared_zero16(a);
    }
    cp_async_commit();
  };
  const int nft = F / 16, nwu = (D / 16) * nft;
  const int upw = (nwu + kDwWarps - 1) / kDwWarps;
  float wacc[kDwMaxUnits][2][4];
#pragma unroll
  for (int i = 0; i < kDwMaxUnits; ++i)
#pragma unroll
    for (int k = 0; k < 2; ++k) wacc[i][k][0] = wacc[i][k][1] = wacc[i][k][2] = wacc[i][k][3] = 0.f;
  // A = x^T (x stored [t][i] = [k][m]: transposed load, lanes 0-7 t 0-7 at i 0, 8-15 t 0-7 at
  // i 8, 16-23 t 8-15 at i 0, 24-31 t 8-15 at i 8); B = du (stored [t][f] = [k][n]:
  // transposed load, lanes 0-15 t 0-15 at f 0, 16-31 at f 8), as features_bwd_mma_kernel
  const uint32_t xa_off = 2u * uint32_t(((lane & 7) + ((lane >> 4) << 3)) * LX + ((lane >> 3) & 1) * 8);
  const uint32_t db_off = 2u * uint32_t((lane & 15) * LW + (lane >> 4) * 8);
  // the warp's units as (i-tile, f-tile) byte offsets of their A and B fragments in a
  // stage, packed (x at 16 it columns: < 2^16 bytes; du at 16 ft columns), and whether a unit
  // needs a new A (its i-tile differs from the previous unit's): computed once, not per k-step
  uint32_t uoff[kDwMaxUnits];
  unsigned newa = 0;
#pragma unroll
  for (int i = 0; i < kDwMaxUnits; ++i) {
    const int wu = warp * upw + i, it = wu / nft, ft = wu % nft;
    uoff[i] = (uint32_t(2 * 16 * it) << 16) | uint32_t(2 * 16 * ft);
    if (i == 0 || ft == 0) newa |= 1u << i;
  }
  // one commit group per tile (empty past tile1); one barrier per step: after it, tile's
  // copies are visible and every warp is past the previous step, so the stage that step read
  // takes tile + kDwStages - 1
#pragma unroll
  for (int i = 0; i < kDwStages - 1; ++i) {
    if (tile0 + i < tile1) load_tile(tile0 + i, s_a + i * stage_bytes);
    else cp_async_commit();
  }
  int sti = 0;  // (tile - tile0) % kDwStages
  for (int tile = tile0; tile < tile1; ++tile) {
    const uint32_t st = s_a + sti * stage_bytes;
    cp_async_wait<kDwStages - 2>();  // this tile's group (the next tiles' may be in flight)
    __syncthreads();
    {
      const int ahead = tile + kDwStages - 1;
      const int ast = sti == 0 ? kDwStages - 1 : sti - 1;
      if (ahead < tile1) load_tile(ahead, s_a + ast * stage_bytes);
      else cp_async_commit();
    }
    sti = sti + 1 == kDwStages ? 0 : sti + 1;
    const uint32_t sx = st + xa_off, sd = st + xs_bytes + db_off;
#pragma unroll
    for (int kk = 0; kk < kDwTile / 16; ++kk) {
      uint32_t a[4];
#pragma unroll
      for (int i = 0; i < kDwMaxUnits; ++i) {
        if (i < upw && warp * upw + i < nwu) {
          if (newa >> i & 1u) ldsm_x4_trans(a, sx + 2u * uint32_t(kk * 16 * LX) + (uoff[i] >> 16));
          uint32_t bq[4];
          ldsm_x4_trans(bq, sd + 2u * uint32_t(kk * 16 * LW) + (uoff[i] & 0xffffu));
          mma_bf16_x2(wacc[i][0], wacc[i][1], a, bq);
        }
      }
    }
  }
  cp_async_wait<0>();
  add_dw_units(dW, h, D, F, wacc, warp, upw, nwu, nft, g, q);
}

size_t features_dw_smem(const Dims& d) {
  return sizeof(bf) * kDwStages * size_t(kDwTile) * (pad_ld(d.D) + pad_ld(d.F));
}

}  // namespace

bool features_bwd_old_forced() {
  const char* e = std::getenv("LIZARD_FEATURES_BWD_KERNEL");
  if (!e || !*e) return false;
  const std::string val(e);
  if (val == "new") return false;
  if (val == "old") return true;
  throw InputError("LIZARD_FEATURES_BWD_KERNEL='" + val + "': expected 'new', 'old' or unset");
}

void features_bwd_mma_launch(const bf* x, int Hx, const bf* W, const bf* Wlo, const float* dphi,
                             float* dx, bool atomic_dx, float* dW, const Dims& d, cudaStream_t s,
                             bf* dx_out) {
  // pointer alignment, dx_out without atomic_dx, dx_out only with dx and dx or dW wanted:
  // checked by features_bwd_tc_launch, the only caller
  LZ_CHECK(d.D % 16 == 0 && d.D <= 16 * kMaxDT && d.F % 16 == 0 && d.F <= 8 * kMaxNT,
           "lizard feature maps (CUDA): the split backward needs D, F multiples of 16, D <= ",
           16 * kMaxDT, ", F <= ", 8 * kMaxNT, " (got D ", d.D, ", F ", d.F, ")");
  const int64_t N = int64_t(d.B) * d.T;
  if (N == 0) return;
  int dev = 0;
  LZ_CHECK(cudaGetDevice(&dev) == cudaSuccess, "lizard feature maps (CUDA): no current device");
  // du [H][N][F] bf16: the stream-ordered caching allocator hands it out again only to work
  // queued after these kernels
  Tensor du = dW ? Tensor::empty({d.H, N, d.F}, DType::BF16, Device::cuda(dev)) : Tensor();
  bf* dup = dW ? static_cast<bf*>(du.raw()) : nullptr;
  const int sms = sm_count();
  const bool wlo = Wlo != nullptr;
  {
    const size_t sm = features_du_dx_smem(d, wlo);
    const int units = d.B * ((d.T + kUnit - 1) / kUnit);
    // one CTA per SM over all heads (a CTA loads its head's W once, then streams units)
    const int per_head = std::max(1, std::min((units + kDuWarps - 1) / kDuWarps, sms / d.H));
    const dim3 grid(per_head, d.H);
    auto go = [&](auto kernel) {
      grant_smem(kernel, sm);
      pdl_launch("lizard feature-map du/dx", kernel, grid, kDuWarps * 32, sm, s, x, Hx, W, Wlo,
                 dphi, dx, atomic_dx, dx_out, dup, d);
    };
    // (k128, kDx) from tags, then the map and Wlo
    auto go_shape = [&](auto full, auto with_dx) {
      constexpr bool k128 = decltype(full)::value, kDx = decltype(with_dx)::value;
      if (d.act_exp)
        wlo ? go(features_du_dx_kernel<true, true, k128, kDx>) : go(features_du_dx_kernel<true, false, k128, kDx>);
      else
        wlo ? go(features_du_dx_kernel<false, true, k128, kDx>) : go(features_du_dx_kernel<false, false, k128, kDx>);
    };
    auto go_dx = [&](auto full) {
      if (dx) go_shape(full, std::true_type{});
      else go_shape(full, std::false_type{});  // no dx wanted (dx_out is null too)
    };
    if (d.D == 128 && d.F == 128) go_dx(std::true_type{});
    else go_dx(std::false_type{});
  }
  if (dW) {  // no dW wanted (null): the feature maps are frozen
    const size_t sm = features_dw_smem(d);
    const int tiles = int((N + kDwTile - 1) / kDwTile);
    // two CTAs per SM over all heads; each adds its dW partial once
    const int per_head = std::max(1, std::min(tiles, 2 * sms / d.H));
    const int tpc = (tiles + per_head - 1) / per_head;
    auto go = [&](auto kernel) {
      grant_smem(kernel, sm);
      pdl_launch("lizard feature-map dW", kernel, dim3((tiles + tpc - 1) / tpc, d.H), kDwWarps * 32,
                 sm, s, x, Hx, dup, dW, tpc, d);
    };
    d.D == 128 && d.F == 128 ? go(features_dw_kernel<true>) : go(features_dw_kernel<false>);
  }
}

}  // namespace lizard::cuda::lizard_detail

namespace lizard::cuda {

void lizard_features_backward(const Tensor& x, const Tensor& w_hi, const Tensor& w_lo,
                              const Tensor& dphi, ops::FeatureActivation act, const Tensor& dx,
                              bool atomic_dx, const Tensor& dx_out, const Tensor& dw) {
  auto need = [](bool ok, const char* name, const std::string& expected) {
    if (!ok) throw InputError(std::string("lizard_features_backward: ") + name + ": expected " + expected);
  };
  need(x.defined() && x.dim() == 4, "x", "a [B,T,Hx,D] tensor");
  const Device dev = x.device();
  const int64_t B = x.size(0), T = x.size(1), Hx = x.size(2), D = x.size(3);
  need(w_hi.defined() && w_hi.dim() == 3 && w_hi.size(1) == D, "w_hi", "[H,D,F] with x's D");
  const int64_t H = w_hi.size(0), F = w_hi.size(2);
  need(Hx > 0 && H % Hx == 0, "w_hi", "H a multiple of x's heads Hx");
  auto check = [&](const Tensor& t, const char* name, const Shape& shape, DType dt) {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? "," : "") + std::to_string(shape[i]);
    need(t.shape() == shape && t.dtype() == dt && t.device() == dev && t.is_contiguous(), name,
         std::string("a contiguous ") + (dt == DType::BF16 ? "bf16" : "f32") + " [" + dims +
             "] tensor on x's device");
  };
  need(dev.is_cuda(), "x", "a GPU tensor");
  check(x, "x", {B, T, Hx, D}, DType::BF16);
  check(w_hi, "w_hi", {H, D, F}, DType::BF16);
  if (w_lo.defined()) check(w_lo, "w_lo", {H, D, F}, DType::BF16);
  check(dphi, "dphi", {B, H, T, 2 * F}, DType::F32);
  if (dx.defined()) check(dx, "dx", {B, T, Hx, D}, DType::F32);
  if (dx_out.defined()) check(dx_out, "dx_out", {B, T, Hx, D}, DType::BF16);
  if (dw.defined()) check(dw, "dw", {H, D, F}, DType::F32);
  need(dx.defined() || !dx_out.defined(), "dx_out", "undefined when dx is (no dx wanted)");
  need(dx.defined() || dw.defined(), "dx, dw", "at least one of them (an output)");
  lizard_detail::Dims d{};
  d.B = int(B), d.T = int(T), d.H = int(H), d.Hkv = int(Hx), d.D = int(D), d.F = int(F);
  d.act_exp = act == ops::FeatureActivation::Exp;
  using bf = __nv_bfloat16;
  auto bp = [](const Tensor& t) { return t.defined() ? static_cast<bf*>(t.raw()) : nullptr; };
  auto fp = [](const Tensor& t) { return t.defined() ? static_cast<float*>(t.raw()) : nullptr; };
  lizard_detail::features_bwd_tc_launch(bp(x), int(Hx), bp(w_hi), bp(w_lo), fp(dphi), fp(dx),
                                        atomic_dx, fp(dw), d, static_cast<cudaStream_t>(stream_of(x)),
                                        bp(dx_out));
  check_last_error("lizard_features_backward");
}

}  // namespace lizard::cuda
