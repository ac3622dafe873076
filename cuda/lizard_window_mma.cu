// Window branch of the Lizard attention (DESIGN.md sections 2-3) on register-resident tensor
// cores, FlashAttention-2 style (issue #5): window_tc_launch and window_bwd_tc_launch
// (contracts in lizard_attention_tc.cuh). They replaced wmma kernels (32 queries per CTA, f32
// scores in shared memory; removed once these passed the f64 oracle tests on an H200); head
// dims other than 32, 64 and 128 take the f32 window kernels (tc_window_supported).
//
// Shape of every kernel: 128 threads, 4 warps x 16 rows = 64 rows per CTA; the other operand
// streams through shared memory in tiles of 64 rows by cp.async (the key side: double-buffered;
// the forward without split RoPE scores: K and V through a ring of 3 tiles, see win_fwd_kernel;
// the query side: K~ and V through 2 slots in turn, see win_bwd_q_kernel; RoPE'd operands
// land raw and are rotated in place in f32, behind one more barrier); only the tiles a window
// touches are visited (3 at w = 128), a warp skips a tile that hides all its pairs, and inside a
// tile works in 16-key (key side: 16-query) chunks: a chunk the warp cannot see gets no weight
// and no mma, and the causal/window mask is evaluated only on chunks the window edge or the
// diagonal cuts (2 of the 9 a 16-row warp sees at w = 128). Scores, P, dP' live in mma.sync
// m16n8k16 accumulators (bf16 operands, f32 accumulation); ldmatrix feeds the fragments.
//   forward  (b, h, 64 queries): online softmax over the key tiles, the row max starting at the
//            sinks' max; y = combine(g, l) from the accumulators (per-row coefficients, the
//            own rows of v from the last V tile) and wstats = (max, den).
//   bwd q    (b, h, 64 queries): the combine backward per row (dO', cself), then two passes over
//            the key tiles: dy.l = sum_s P dP', then dq~ += dC K~ with dC = P (coef dP' - delta),
//            the second backwards from the last tile, whose P and dP' are still in registers
//            (the dq~ accumulator lives from there on only; the second pass in halves of 32
//            keys). dq null (distillation): the first pass only.
//   bwd k    (b, kv head, 64 keys): every query tile of every head of the GQA group that sees
//            the keys: dv += P^T dy, dk~ += dC^T q~ (rows owned, no atomics).
//   Both backward sides store their dq, dk, dv rows (the first writers: the global branch adds
//   later), so the caller neither zeroes those buffers nor do the kernels read them.
//
// Precision (the devices of the wmma kernels, each kept because a gradient test failed
// without it): P is f32 from the saved (max, den) (bwd_weight: 2^((s scale - m) log2e -
// log2 den), the same bits on both backward sides), recomputed from the same bf16 (or split)
// q~, k~ with the same k-order of mma steps as the forward; dP' = dy V^T from the exact bf16
// dy (alpha applied in f32, never folded into a bf16 operand); dy.l = sum_s P dP' from the f32
// P and dP' (so sum_s dC_ts = 0 to f32 rounding), delta = coef dy.l, dalpha and dtau as f32
// sums. Training (split): the forward's P V takes P as a bf16 hi + lo pair and the denominator
// sums the f32 weights; with window RoPE the scores take q~ and k~ as hi + lo pairs (three
// mma's: hi hi, lo hi, hi lo, in that order everywhere), so the scores are those of the exact
// rotation to about 2^-16. Inference: bf16 P, the denominator sums the rounded weights.
// The forward's online softmax rescales earlier tiles by exp(m_old - m_new) (f32) and takes
// its weights as the backward does (2^((s scale - m) log2e), the inner difference one fused
// rounding), so wstats are the f32 statistics of the recomputed scores to a few 1e-7
// relative. The combine's y = cv v + cm M + cl acc per row (coefficients from den, eps,
// alpha and the window denominator) differs from the divisions of global_out by a few f32
// ulps, far below y's bf16 rounding.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"
#include "side_stream.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

using bf = __nv_bfloat16;

constexpr int kRows = 64;  // rows a CTA owns: queries (forward, bwd q) or keys (bwd k)
constexpr int kTile = 64;  // rows of a streamed tile: keys (forward, bwd q) or queries (bwd k)
// __launch_bounds__(kThreads, 2): two CTAs per SM at any register count; without the minimum,
// ptxas (nvcc 13) capped several instances at 128 or 168 registers and spilled up to 88
// bytes. With it (nvcc 13, sm_90a): D = 128 uses 255 registers (key side), no spills. The
// query side asks for three CTAs per SM without split scores (168 registers, 68 KiB of smem):
// D = 128 uses all 168, no spills (D = 32, 64: 155, 163). It sits at the edge: its dq~
// accumulator, half a tile of S and dP' and the fragments in flight fill most of it, and
// small changes (a scalar more live through pass 1, a helper inlined in another order) have
// brought back a 28-byte spill: check -Xptxas -v after any change. With split scores (two
// CTAs) D = 128 uses 195 registers. The forward asks for three CTAs per SM (168
// registers; 68 KiB of smem through its K/V ring) except with split scores (kLo: two): D =
// 128 uses 164 (inference), 167 (split P) and 174 registers (kLo), no spills.
constexpr int kThreads = 128;

/// Shared-memory row stride (elements): +16 bytes, so the 8 rows of an ldmatrix hit distinct
/// banks.
template <int kD>
constexpr int row_stride() {
  return kD + 8;
}
/// Bytes of one [64][kD + 8] bf16 tile.
template <int kD>
constexpr uint32_t tile_bytes() {
  return uint32_t(kTile) * row_stride<kD>() * 2;
}

/// Rows r0 .. r0 + 63 of a bf16 matrix (row r at g + r * ld, kD columns) into shared rows of
/// row_stride<kD>() elements by cp.async; rows at or past `end` become zeros.
/// Thread i copies chunk i % kC of rows i / kC + u kRowsPer (the mapping of a loop over i with
/// stride kThreads), unrolled with the row and column hoisted: the address arithmetic is one add
/// per row instead of a division and a 64-bit multiply per chunk.
template <int kD>
__device__ __forceinline__ void cp_rows(bf* sm, const bf* g, int64_t ld, int r0, int end) {
  constexpr int kC = kD / 8, kS = row_stride<kD>(), kRowsPer = kThreads / kC;
  static_assert(kThreads % kC == 0 && kTile % kRowsPer == 0, "whole rows per sweep");
  const int rt = threadIdx.x / kC, c = (threadIdx.x % kC) * 8;
  const uint32_t dst0 = smem_u32(sm + rt * kS + c);
  const bf* src0 = g + int64_t(r0 + rt) * ld + c;
#pragma unroll
  for (int u = 0; u < kTile / kRowsPer; ++u) {
    const uint32_t dst = dst0 + uint32_t(u * kRowsPer * kS * 2);
    if (r0 + rt + u * kRowsPer < end)
      cp_async16_u32(dst, src0 + int64_t(u * kRowsPer) * ld);
    else
      st_shared_zero16(dst);
  }
}

/// Hints `rows` rows of `row_bytes` each (row r at p + r * stride bytes) into L2, 128-byte
/// lines spread over the block: issued at the start for what the epilogue reads (numden), so
/// those reads find L2 instead of DRAM behind the last barrier. Only addresses inside the rows
/// are touched.
__device__ __forceinline__ void prefetch_rows_l2(const void* p, int64_t stride, int rows,
                                                 int row_bytes) {
  const int lines = (row_bytes + 127) / 128;
  for (int i = threadIdx.x; i < rows * lines; i += kThreads) {
    const int r = i / lines, l = i % lines;
    const char* a = static_cast<const char*>(p) + r * stride + min(l * 128, row_bytes - 1);
    prefetch_l2(a);
  }
}

__device__ __forceinline__ uint4 pack8(const float (&x)[8]) {
  return make_uint4(pack_bf16(x[0], x[1]), pack_bf16(x[2], x[3]), pack_bf16(x[4], x[5]),
                    pack_bf16(x[6], x[7]));
}
/// x - bf16(x): the lo half of a split bf16 pair (hi + lo = x to about 2^-17 relative).
__device__ __forceinline__ float lo_part(float x) {
  return x - __bfloat162float(__float2bfloat16(x));
}
__device__ __forceinline__ uint4 pack8_lo(const float (&x)[8]) {
  float l[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) l[e] = lo_part(x[e]);
  return pack8(l);
}

/// x~ = RoPE(x) (rotate_half) of the 8 column pairs (c + e, c + e + kD/2) of one row, from
/// their bf16 values ua (first half) and ub (second), cs, sn: the row's cos, sin at c; in f32
/// with explicit roundings, so every kernel that rotates a row gets the same bits.
__device__ __forceinline__ void rope8(float (&y1)[8], float (&y2)[8], uint4 ua, uint4 ub,
                                      const float* cs, const float* sn) {
  const bf* xa = reinterpret_cast<const bf*>(&ua);
  const bf* xb = reinterpret_cast<const bf*>(&ub);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float x1 = __bfloat162float(xa[e]), x2 = __bfloat162float(xb[e]);
    const float ce = cs[e], se = sn[e];
    y1[e] = __fmaf_rn(x1, ce, -__fmul_rn(x2, se));
    y2[e] = __fmaf_rn(x2, ce, __fmul_rn(x1, se));
  }
}

/// y1, y2 (rope8) as bf16 into hi at columns 0.. and hD.. (hi: the row at column c) and,
/// when lo is not null, their lo halves into lo + off likewise.
__device__ __forceinline__ void store_rope8(bf* hi, bf* lo, int off, int hD, const float (&y1)[8],
                                            const float (&y2)[8]) {
  *reinterpret_cast<uint4*>(hi) = pack8(y1);
  *reinterpret_cast<uint4*>(hi + hD) = pack8(y2);
  if (lo) {
    *reinterpret_cast<uint4*>(lo + off) = pack8_lo(y1);
    *reinterpret_cast<uint4*>(lo + off + hD) = pack8_lo(y2);
  }
}

/// Rows r0 .. r0 + 63 of x (as cp_rows), RoPE'd at their positions (rotate_half layout, cos/sin
/// [T, kD/2] f32) in f32 with explicit roundings (the forward and both backward kernels get
/// bit-identical q~, k~), stored as bf16 hi and, when lo is not null, the lo halves
/// bf16(x~ - hi). Synchronous loads: the rotation needs the values in registers.
template <int kD>
__device__ __forceinline__ void rope_rows(bf* hi, bf* lo, const bf* g, int64_t ld, int r0, int end,
                                          const float* __restrict__ cosb,
                                          const float* __restrict__ sinb) {
  constexpr int hD = kD / 2, kC = hD / 8, kS = row_stride<kD>();
  for (int i = threadIdx.x; i < kTile * kC; i += kThreads) {
    const int r = i / kC, c = (i % kC) * 8, pos = r0 + r;
    float y1[8], y2[8];
    if (pos < end) {
      const bf* src = g + int64_t(pos) * ld + c;
      rope8(y1, y2, *reinterpret_cast<const uint4*>(src), *reinterpret_cast<const uint4*>(src + hD),
            cosb + int64_t(pos) * hD + c, sinb + int64_t(pos) * hD + c);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) y1[e] = y2[e] = 0.f;
    }
    store_rope8(hi + r * kS + c, lo, r * kS + c, hD, y1, y2);
  }
}

/// In place: the rows of sm that cp_rows filled with raw x (positions r0 + r, zero from `end`
/// on) become x~ = RoPE(x) rounded to bf16, with the lo halves into lo when not null, by the
/// same f32 maths as rope_rows (bit-identical results). Each thread reads and rewrites only its
/// own column pairs (j, j + kD/2), so no barrier is needed inside; the caller's barrier must
/// follow before other threads read the rows. The raw rows arrive by cp.async while the
/// previous tile computes, which the synchronous rope_rows cannot overlap.
template <int kD>
__device__ __forceinline__ void rope_in_place(bf* sm, bf* lo, int r0, int end,
                                              const float* __restrict__ cosb,
                                              const float* __restrict__ sinb) {
  constexpr int hD = kD / 2, kC = hD / 8, kS = row_stride<kD>();
  for (int i = threadIdx.x; i < kTile * kC; i += kThreads) {
    const int r = i / kC, c = (i % kC) * 8, pos = r0 + r;
    bf* row = sm + r * kS + c;
    if (pos >= end) {  // raw rows are zeros; the lo halves must be too
      if (lo) {
        *reinterpret_cast<uint4*>(lo + r * kS + c) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(lo + r * kS + c + hD) = make_uint4(0, 0, 0, 0);
      }
      continue;
    }
    float y1[8], y2[8];
    rope8(y1, y2, *reinterpret_cast<const uint4*>(row), *reinterpret_cast<const uint4*>(row + hD),
          cosb + int64_t(pos) * hD + c, sinb + int64_t(pos) * hD + c);
    store_rope8(row, lo, r * kS + c, hD, y1, y2);
  }
}

/// ldmatrix lane addresses (bytes, shared space) for a tile stored [row][col] with
/// row_stride<kD>(): A fragments of rows m0.. (a_addr), B fragments of two n8 tiles whose n
/// index is the stored row (b_addr, S = A B^T), and B fragments whose k index is the stored row
/// (bt_addr, read transposed: O = P V). Offsets of the k-step (16 columns) or the n/k tile
/// (16 rows) are added by the caller.
template <int kD>
__device__ __forceinline__ uint32_t a_addr(const bf* base, int m0) {
  const int lane = threadIdx.x & 31;
  return smem_u32(base) +
         2 * ((m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * row_stride<kD>() + (lane >> 4) * 8);
}
template <int kD>
__device__ __forceinline__ uint32_t b_addr(const bf* base) {
  const int lane = threadIdx.x & 31;
  return smem_u32(base) +
         2 * (((lane & 7) + (lane >> 4) * 8) * row_stride<kD>() + ((lane >> 3) & 1) * 8);
}
template <int kD>
__device__ __forceinline__ uint32_t bt_addr(const bf* base) {
  const int lane = threadIdx.x & 31;
  return smem_u32(base) +
         2 * (((lane & 7) + ((lane >> 3) & 1) * 8) * row_stride<kD>() + (lane >> 4) * 8);
}

/// The products of one k-step into the score pair (s0, s1) (the two n8 tiles of one 16-row
/// block of B): hi hi, then with kLo the lo terms, the B lo fragment loaded here from bl, in the
/// order kBLoFirst picks (see tile_scores).
template <bool kLo, bool kBLoFirst>
__device__ __forceinline__ void mma_score_step(float (&s0)[4], float (&s1)[4],
                                               const uint32_t (&fa)[4], const uint32_t (&fal)[4],
                                               const uint32_t (&fb)[4], uint32_t bl) {
  mma_bf16_x2(s0, s1, fa, fb);
  if constexpr (kLo) {
    uint32_t fbl[4];
    ldsm_x4(fbl, bl);
    if constexpr (kBLoFirst) {
      mma_bf16_x2(s0, s1, fa, fbl);
      mma_bf16_x2(s0, s1, fal, fb);
    } else {
      mma_bf16_x2(s0, s1, fal, fb);
      mma_bf16_x2(s0, s1, fa, fbl);
    }
  }
}

/// s [8 n8 tiles][4] = A B^T for the warp's 16 rows of A (lane address a) and the 64 rows of B
/// (lane address b), over kD; with kPair also dp = A2 B2^T (plain bf16; lane addresses a2, b2)
/// in the same k loop: twice the independent mma chains between the dependent ones of each
/// score, every score summing its k-steps in the same order either way (same bits).
/// kLo: split operands (al, bl: the lo halves), three mma's per step; kBLoFirst orders them hi
/// hi, hi*Blo, Alo*hi (the key side, A = k~, B = q~), else hi hi, Alo*hi, hi*Blo (A = q~, B =
/// k~): either way q_lo k_hi before q_hi k_lo, so both sides accumulate every score in the same
/// order. kN0, kN1: only the 16-row blocks nn of B in [kN0, kN1) (the n8 tiles 2 nn, 2 nn + 1
/// of s and dp); the other entries stay 0.
template <int kD, bool kLo, bool kBLoFirst, int kN0, int kN1, bool kPair>
__device__ __forceinline__ void tile_scores(float (&s)[8][4], float (&dp)[8][4], uint32_t a,
                                            uint32_t al, uint32_t b, uint32_t bl, uint32_t a2,
                                            uint32_t b2) {
  constexpr uint32_t kRowB = 16 * row_stride<kD>() * 2;  // 16 stored rows, bytes
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[i][e] = 0.f;
      if constexpr (kPair) dp[i][e] = 0.f;
    }
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    uint32_t fa[4], fal[4], fa2[4];
    ldsm_x4(fa, a + kk * 32);
    if constexpr (kLo) ldsm_x4(fal, al + kk * 32);
    if constexpr (kPair) ldsm_x4(fa2, a2 + kk * 32);
#pragma unroll
    for (int nn = kN0; nn < kN1; ++nn) {
      uint32_t fb[4];
      ldsm_x4(fb, b + nn * kRowB + kk * 32);
      mma_score_step<kLo, kBLoFirst>(s[2 * nn], s[2 * nn + 1], fa, fal, fb,
                                     bl + nn * kRowB + kk * 32);
      if constexpr (kPair) {
        uint32_t fb2[4];
        ldsm_x4(fb2, b2 + nn * kRowB + kk * 32);
        mma_bf16_x2(dp[2 * nn], dp[2 * nn + 1], fa2, fb2);
      }
    }
  }
}

/// tile_scores over the halves of B's 64 rows (blocks 0-1, 2-3) that hold a chunk of `live`
/// (bit c: rows 16 c .. 16 c + 15; warp-uniform; the live chunks a 16-row warp sees in a tile
/// are contiguous): both, or one, whose mma's and B loads are then half (at w = 128 a quarter
/// of a CTA's 16-row blocks of its first and last tiles hide every pair from their warp).
/// Entries outside the computed half are 0, and the caller never reads them.
template <int kD, bool kLo, bool kBLoFirst, bool kPair>
__device__ __forceinline__ void tile_scores_live(float (&s)[8][4], float (&dp)[8][4],
                                                 unsigned live, uint32_t a, uint32_t al,
                                                 uint32_t b, uint32_t bl, uint32_t a2,
                                                 uint32_t b2) {
  if ((live & 3u) && (live & 12u))
    tile_scores<kD, kLo, kBLoFirst, 0, 4, kPair>(s, dp, a, al, b, bl, a2, b2);
  else if (live & 3u)
    tile_scores<kD, kLo, kBLoFirst, 0, 2, kPair>(s, dp, a, al, b, bl, a2, b2);
  else
    tile_scores<kD, kLo, kBLoFirst, 2, 4, kPair>(s, dp, a, al, b, bl, a2, b2);
}

/// s = A B^T alone (tile_scores without the second product) over the live halves.
template <int kD, bool kLo, bool kBLoFirst>
__device__ __forceinline__ void tile_abt_live(float (&s)[8][4], unsigned live, uint32_t a,
                                              uint32_t al, uint32_t b, uint32_t bl) {
  tile_scores_live<kD, kLo, kBLoFirst, false>(s, s, live, a, al, b, bl, 0u, 0u);
}

/// s = A B^T and dp = A2 B2^T (plain bf16) in one k loop over the live halves.
template <int kD, bool kLo, bool kBLoFirst>
__device__ __forceinline__ void tile_abt_pair_live(float (&s)[8][4], float (&dp)[8][4],
                                                   unsigned live, uint32_t a, uint32_t al,
                                                   uint32_t b, uint32_t bl, uint32_t a2,
                                                   uint32_t b2) {
  tile_scores_live<kD, kLo, kBLoFirst, true>(s, dp, live, a, al, b, bl, a2, b2);
}

/// The A fragment of k-step kk (16 columns) of a 16 x 64 accumulator tile x (C layout), as bf16:
/// two adjacent n8 accumulator tiles are exactly one A fragment.
__device__ __forceinline__ void a_frag(uint32_t (&r)[4], const float (&x)[8][4], int kk) {
  r[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
  r[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
  r[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
  r[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

/// a_frag's hi fragment r and the lo halves' fragment rl of the same k-step: the hi floats are
/// read back from r's packed halves (a shift or a mask) instead of rounding each value a second
/// time, the same bits as lo_part (hi = float(bf16_rn(x)) either way), one instruction
/// fewer per value.
__device__ __forceinline__ void a_frag_split(uint32_t (&r)[4], uint32_t (&rl)[4],
                                             const float (&x)[8][4], int kk) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float x0 = x[2 * kk + (q >> 1)][2 * (q & 1)], x1 = x[2 * kk + (q >> 1)][2 * (q & 1) + 1];
    r[q] = pack_bf16(x0, x1);
    rl[q] = pack_bf16(x0 - __uint_as_float(r[q] << 16), x1 - __uint_as_float(r[q] & 0xffff0000u));
  }
}

/// acc [kD/8][4] += a B_kk for one 16-row chunk of B (lane address bt, read transposed: its
/// rows are the k index), kD/16 B loads; kSplit: + al B_kk too, from the same B fragments.
template <int kD, bool kSplit>
__device__ __forceinline__ void mma_chunk_av(float (&acc)[kD / 8][4], const uint32_t (&a)[4],
                                             const uint32_t (&al)[4], uint32_t bt) {
#pragma unroll
  for (int dn = 0; dn < kD / 16; ++dn) {
    uint32_t fb[4];
    ldsm_x4_trans(fb, bt + dn * 32);
    mma_bf16_x2(acc[2 * dn], acc[2 * dn + 1], a, fb);
    if constexpr (kSplit) mma_bf16_x2(acc[2 * dn], acc[2 * dn + 1], al, fb);
  }
}

/// acc [kD/8][4] += X B over the 16-column chunks kk of X (16 x 64) whose bit kk of `live` is
/// set (warp-uniform): frag(a, al, kk) makes chunk kk's A fragment (and with kSplit its lo
/// half); the other chunks are taken as zero, their fragments, B loads and mma's skipped.
template <int kD, bool kSplit, class Frag>
__device__ __forceinline__ void mma_av_chunks(float (&acc)[kD / 8][4], unsigned live,
                                              uint32_t bt, Frag&& frag) {
  constexpr uint32_t kRowB = 16 * row_stride<kD>() * 2;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (!((live >> kk) & 1u)) continue;
    uint32_t a[4], al[4];
    frag(a, al, kk);
    mma_chunk_av<kD, kSplit>(acc, a, al, bt + kk * kRowB);
  }
}

/// mma_av_chunks of x (16 x 64, C layout), converted to bf16 A fragments here. kSplit: X as a
/// bf16 hi + lo pair, both products from one load of each B fragment (hi then lo per fragment).
template <int kD, bool kSplit = false>
__device__ __forceinline__ void mma_av_live(float (&acc)[kD / 8][4], const float (&x)[8][4],
                                            unsigned live, uint32_t bt) {
  mma_av_chunks<kD, kSplit>(acc, live, bt, [&](uint32_t(&a)[4], uint32_t(&al)[4], int kk) {
    if constexpr (kSplit)
      a_frag_split(a, al, x, kk);
    else
      a_frag(a, x, kk);
  });
}

/// mma_av_chunks with x already packed: pk[kk] is the bf16 A fragment of chunk kk (as a_frag),
/// for weights rounded once where they are made (the inference forward).
template <int kD>
__device__ __forceinline__ void mma_av_packed(float (&acc)[kD / 8][4], const uint32_t (&pk)[4][4],
                                              unsigned live, uint32_t bt) {
  mma_av_chunks<kD, false>(acc, live, bt, [&](uint32_t(&a)[4], uint32_t(&)[4], int kk) {
#pragma unroll
    for (int e = 0; e < 4; ++e) a[e] = pk[kk][e];
  });
}

constexpr float kLog2e = 1.4426950408889634f;

/// The backward's softmax weight of a score s (raw q~.k~) against its row's saved statistics,
/// as m = the row max (natural units) and nl = -log2(den):
///   P = exp(s scale - m) / den = 2^((s scale - m) log2e + nl).
/// s scale - m is one fused rounding (it is near 0 for the weights that matter, so its error
/// is far below an ulp of s scale), then one more fma and the SFU's 2^x (about 2 ulp): 3
/// instructions per score instead of 5 (multiply, subtract, the multiply inside __expf, ex2,
/// times 1/den), to about 3e-7 relative (the 1 / den rounding it replaces was 6e-8; the
/// gradients' budget is 1e-2 against the f64 oracle). A row with nl = -inf (past T) gets 0.
/// The query side and the key side call this with the same operands, so their P agree bit
/// for bit (delta from one side meets P from the other).
__device__ __forceinline__ float bwd_weight(float s, float scale, float m, float nl) {
  return fast_exp2(__fmaf_rn(__fmaf_rn(s, scale, -m), kLog2e, nl));
}

/// How the 16 x 16 block of (query rows t0q.., key columns k0..) meets the window (keys
/// t - w < key <= t): 0 no pair visible, 1 every pair visible, 2 some (per-pair mask). Rows or
/// keys past T are the caller's (the query side never sees them: key <= t < T).
__device__ __forceinline__ int block_kind(int t0q, int k0, int w) {
  if (k0 > t0q + 15 || t0q - (k0 + 15) >= w) return 0;
  if (k0 + 15 > t0q || t0q + 15 - k0 >= w) return 2;
  return 1;
}

/// The 16-key chunks c of key tile n0.. (bit c: keys n0 + 16 c ..) that a warp's 16 query rows
/// wr0.. see: live (some pair visible) and cut (the window edge or the diagonal cuts it: per-pair
/// mask there only).
struct Chunks {
  unsigned live, cut;
};
__device__ __forceinline__ Chunks query_chunks(int wr0, int n0, int w) {
  Chunks r{0u, 0u};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int kind = block_kind(wr0, n0 + 16 * c, w);
    r.live |= unsigned(kind != 0) << c;
    r.cut |= unsigned(kind == 2) << c;
  }
  return r;
}

/// f(mask, c) for each 16-row chunk c of a tile in `live` (bit c; warp-uniform), mask a
/// std::true_type on the chunks of `cut` (the window edge or the diagonal cuts them: per-pair
/// mask) and a std::false_type on the others, so each body is compiled with and without it.
template <class F>
__device__ __forceinline__ void for_live_chunks(unsigned live, unsigned cut, F&& f) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    if (!((live >> c) & 1u)) continue;
    if ((cut >> c) & 1u)
      f(std::true_type(), c);
    else
      f(std::false_type(), c);
  }
}

/// In place, x = R_pos^T x~ for the accumulator rows of this thread (C layout, columns
/// 8 i + 2 t4 + c): column j and j + kD/2 sit in tiles i and i + kD/16 of the same thread.
/// pos[rr] < 0 leaves row rr alone (past T: no cos/sin row).
template <int kD>
__device__ __forceinline__ void unrope_acc(float (&acc)[kD / 8][4], const int (&pos)[2],
                                           const float* __restrict__ cosb,
                                           const float* __restrict__ sinb) {
  constexpr int hD = kD / 2, kH = kD / 16;
  const int t4 = threadIdx.x & 3;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int p = pos[e >> 1];
    if (p < 0) continue;
#pragma unroll
    for (int i = 0; i < kH; ++i) {
      const int j = 8 * i + 2 * t4 + (e & 1);
      const float c = cosb[int64_t(p) * hD + j], sn = sinb[int64_t(p) * hD + j];
      const float x = acc[i][e], y = acc[i + kH][e];
      acc[i][e] = x * c + y * sn;
      acc[i + kH][e] = y * c - x * sn;
    }
  }
}

/// pos = the positions of this thread's accumulator rows (g and g + 8 of the warp's 16 rows
/// from r0; -1 at or past T), and acc (dq~ or dk~) rotated back by R^T at them when rope.
template <int kD>
__device__ __forceinline__ void acc_rows_unrope(int (&pos)[2], float (&acc)[kD / 8][4], int r0,
                                                int g, int T, bool rope, const float* cosb,
                                                const float* sinb) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) pos[rr] = r0 + g + 8 * rr < T ? r0 + g + 8 * rr : -1;
  if (rope) unrope_acc<kD>(acc, pos, cosb, sinb);
}

/// row (f32, kD wide) = c * accumulator row rr (0: g, 1: g + 8) at this thread's columns
/// 8i + 2 t4, +1: a plain store. The CTA owns the row and is its first writer (the backward
/// kernels run before anything else touches dq, dk, dv), so the buffers need no zeroing and
/// are not read here: the same value as the add into zeros it replaces (0 + x = x; only a
/// -0 stays -0, which no later sum or the bf16 rounding tells apart from +0 in value).
template <int kD>
__device__ __forceinline__ void store_acc_row(float* row, const float (&acc)[kD / 8][4], int rr,
                                              int t4, float c) {
#pragma unroll
  for (int i = 0; i < kD / 8; ++i)
    *reinterpret_cast<float2*>(row + 8 * i + 2 * t4) =
        make_float2(c * acc[i][2 * rr], c * acc[i][2 * rr + 1]);
}

/// Two warp sums in five shuffles: after one exchange at distance 16, lanes 0-15 carry
/// partial sums of a and lanes 16-31 of b, then each half reduces itself. Returns sum(a) on
/// lanes 0-15 and sum(b) on lanes 16-31.
__device__ __forceinline__ float warp_sum2(float a, float b) {
  const bool up = threadIdx.x & 16;
  float v = up ? b : a;
  v += __shfl_xor_sync(0xffffffffu, up ? a : b, 16);
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// dl = coef dy (sum: alpha; convex: |alpha| / (1 + |alpha|)), as the f32 window kernels.
__device__ __forceinline__ float win_coef(float alpha, bool convex) {
  return convex ? fabsf(alpha) / (1.f + fabsf(alpha)) : alpha;
}

/// The CTA's own 64 rows r0.. of x (as cp_rows) into sm: RoPE'd in f32 when rope (rope_rows,
/// the lo halves into lo when non-null), else raw by cp.async (the caller commits them).
template <int kD>
__device__ __forceinline__ void load_own_rows(bf* sm, bf* lo, const bf* g, int64_t ld, int r0,
                                              int end, bool rope, const float* cosb,
                                              const float* sinb) {
  if (rope)
    rope_rows<kD>(sm, lo, g, ld, r0, end, cosb, sinb);
  else
    cp_rows<kD>(sm, g, ld, r0, end);
}

/// Rows r0.. of two matrices with the same row stride (k and v, or q and dy) into buffer buf
/// of their double-buffered streamed tiles, by cp.async (raw: RoPE'd in place once landed).
template <int kD>
__device__ __forceinline__ void cp_tile_pair(bf* sa, bf* sb, const bf* ga, const bf* gb,
                                             int64_t ld, int buf, int r0, int end) {
  cp_rows<kD>(sa + buf * kTile * row_stride<kD>(), ga, ld, r0, end);
  cp_rows<kD>(sb + buf * kTile * row_stride<kD>(), gb, ld, r0, end);
}

/// With RoPE (block-uniform), the raw rows r0.. of streamed buffer buf of sm rotated in place
/// (their lo halves into the same buffer of lo when kLo), then a barrier before any warp reads
/// them; else nothing. Call after the barrier that made the buffer's cp.async data visible.
template <int kD, bool kLo>
__device__ __forceinline__ void rope_streamed_tile(bf* sm, bf* lo, int buf, int r0, int end,
                                                   bool rope, const float* cosb,
                                                   const float* sinb) {
  if (rope) {
    const int o = buf * kTile * row_stride<kD>();
    rope_in_place<kD>(sm + o, kLo ? lo + o : nullptr, r0, end, cosb, sinb);
    __syncthreads();
  }
}

/// Where a query-side CTA (the forward, the backward's query side) works: queries t0.. of
/// head h of batch b (bh = b H + h), kv head kvh of its GQA group; rows of q-shaped tensors
/// (q, dy) at + qoff, stride ldq, of k and v at + kvoff, stride ldk; the key tiles
/// kv_begin + j kTile, j < n_tiles, hold every key the windows of its rows reach.
struct QueryCta {
  int t0, bh, b, h, kvh, kv_begin, n_tiles;
  int64_t ldq, ldk, qoff, kvoff;
};

template <int kD>
__device__ __forceinline__ QueryCta query_cta(const Dims& d) {
  QueryCta c;
  c.t0 = blockIdx.x * kRows;
  c.bh = blockIdx.y;
  c.b = c.bh / d.H;
  c.h = c.bh % d.H;
  c.kvh = c.h / (d.H / d.Hkv);
  c.ldq = int64_t(d.H) * kD;
  c.ldk = int64_t(d.Hkv) * kD;
  c.qoff = (int64_t(c.b) * d.T * d.H + c.h) * kD;
  c.kvoff = (int64_t(c.b) * d.T * d.Hkv + c.kvh) * kD;
  const int q_last = min(d.T - 1, c.t0 + kRows - 1);
  c.kv_begin = max(0, c.t0 - d.w + 1) / kTile * kTile;
  c.n_tiles = (q_last + 1 - c.kv_begin + kTile - 1) / kTile;
  return c;
}

// ---------------------------------------------------------------------------------------
/// Shared memory of the forward: q~, then (kLo) its lo half and K~, k~ lo, V double-buffered,
/// or (else) a ring of 3 tile slots that K~_j, V_j stream through in the order K0 V0 K1 V1 ..
/// (68 KiB at D = 128 instead of 87: three CTAs per SM). The epilogue reads the v rows of its
/// own queries from the last V tile.
template <int kD>
size_t fwd_smem(bool lo) {
  return size_t(lo ? 2 * kRows + 6 * kTile : kRows + 3 * kTile) * row_stride<kD>() * 2;
}

/// Window branch and combine: grid (ceil(T / 64), B*H). y and wstats as window_tc_launch
/// states. kSplit (training): P V with P as a bf16 hi + lo pair, the denominator from the f32
/// weights; kLo (training with window RoPE): q~, k~ as hi + lo pairs in the scores.
template <int kD, bool kSplit, bool kLo>
__global__ void __launch_bounds__(kThreads, kLo ? 2 : 3)
    win_fwd_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                   const float* __restrict__ cosb, const float* __restrict__ sinb,
                   const float* __restrict__ tau, const float* __restrict__ alpha_p,
                   const float* __restrict__ numden, bf* __restrict__ y,
                   float* __restrict__ wstats, Dims d) {
  pdl_enter();
  static_assert(!kLo || kSplit, "the split scores are a training form");
  constexpr int kS = row_stride<kD>(), kNT = kD / 8;
  constexpr uint32_t kTB = tile_bytes<kD>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf* sQ = reinterpret_cast<bf*>(smem_raw);         // [64][kS] q~
  bf* sQl = sQ + kRows * kS;                        // [64][kS] q~ lo (kLo)
  bf* sK = sQ + (kLo ? 2 : 1) * kRows * kS;         // kLo: [2][64][kS] k~; else the ring [3][64][kS]
  bf* sKl = sK + 2 * kTile * kS;                    // [2][64][kS] k~ lo (kLo)
  bf* sV = kLo ? sK + 4 * kTile * kS : sK;          // [2][64][kS] v (kLo); else the ring
  // Without kLo the K and V tiles stream through a ring of 3 slots, load n (K0 V0 K1 V1 ..)
  // into slot n % 3: K_j in slot 2j % 3, V_j in (2j + 1) % 3. K_{j+1} overwrites V_{j-1} once
  // every warp is past iteration j - 1 (the iteration's first barrier), V_{j+1} overwrites
  // K_j once every warp has its scores (a second barrier): 3 tiles of smem instead of 4.
  constexpr bool kRing = !kLo;
  auto kslot = [](int j) { return kRing ? (2 * j) % 3 : j & 1; };
  auto vslot = [](int j) { return kRing ? (2 * j + 1) % 3 : j & 1; };

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int T = d.T, w = d.w;
  const QueryCta cta = query_cta<kD>(d);
  const int t0 = cta.t0, bh = cta.bh, b = cta.b, h = cta.h, kv_begin = cta.kv_begin,
            n_tiles = cta.n_tiles;
  const int64_t ldk = cta.ldk;
  const bf *kg = k + cta.kvoff, *vg = v + cta.kvoff;
  const bool rope = d.rope;
  auto load_kv = [&](int buf, int n0) { cp_tile_pair<kD>(sK, sV, kg, vg, ldk, buf, n0, T); };
  auto load_k = [&](int j) {
    cp_rows<kD>(sK + kslot(j) * kTile * kS, kg, ldk, kv_begin + j * kTile, T);
  };
  auto load_v = [&](int j) {
    cp_rows<kD>(sV + vslot(j) * kTile * kS, vg, ldk, kv_begin + j * kTile, T);
  };
  load_own_rows<kD>(sQ, kLo ? sQl : nullptr, q + cta.qoff, cta.ldq, t0, T, rope, cosb, sinb);
  if constexpr (kRing) {
    load_k(0);
    load_v(0);
    cp_async_commit();  // group 0: q (raw), K0, V0
    if (n_tiles > 1) {
      load_k(1);
      cp_async_commit();  // group 1: K1, in flight through iteration 0
    }
  } else {
    load_kv(0, kv_begin);
    cp_async_commit();
  }
  // the epilogue's numden rows t0.. (contiguous)
  prefetch_rows_l2(numden + (int64_t(bh) * T + t0) * (kD + 1), 0, 1,
                   min(kRows, T - t0) * (kD + 1) * int(sizeof(float)));

  const float* tr = d.m ? tau + (d.Ht == 1 ? 0 : h) * d.m : nullptr;
  float tmax = -INFINITY;
  for (int j = 0; j < d.m; ++j) tmax = fmaxf(tmax, tr[j]);
  // m_r: the running max of this thread's rows wr0 + g + 8 rr over the scores seen and the
  // sinks (natural units, as wstats); l_r: this thread's share of the row's sum against m_r.
  float m_r[2] = {tmax, tmax}, l_r[2] = {0.f, 0.f};
  float acc[kNT][4];
#pragma unroll
  for (int i = 0; i < kNT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  const int wr0 = t0 + warp * 16;
  const uint32_t q_a = a_addr<kD>(sQ, warp * 16), ql_a = a_addr<kD>(sQl, warp * 16);
  const uint32_t k_b = b_addr<kD>(sK), kl_b = b_addr<kD>(sKl), v_t = bt_addr<kD>(sV);
  const float scale = d.scale;
  bool fresh = true;  // warp-uniform: no tile has added to acc, l yet

  for (int j = 0; j < n_tiles; ++j) {
    const int n0 = kv_begin + j * kTile;
    // ring: at j = 0 only K1 may stay in flight; later every committed group is K_j or V_j
    if (kRing && j == 0 && n_tiles > 1)
      cp_async_wait<1>();
    else
      cp_async_wait<0>();
    // tile j is visible to all, and every warp is done with tile j - 1, whose buffers the
    // prefetch below overwrites (double buffer: K and V; ring: V_{j-1}'s slot, with K_{j+1})
    __syncthreads();
    if constexpr (kRing) {
      if (j >= 1 && j + 1 < n_tiles) {
        load_k(j + 1);
        cp_async_commit();
      }
    } else if (j + 1 < n_tiles) {
      load_kv((j + 1) & 1, n0 + kTile);
      cp_async_commit();
    }
    rope_streamed_tile<kD, kLo>(sK, sKl, kslot(j), n0, T, rope, cosb, sinb);  // k~
    // a tile that hides every key from every row of the warp changes nothing
    const bool idle = wr0 >= T || n0 > wr0 + 15 || wr0 - (n0 + kTile - 1) >= w;
    if (!kRing && idle) continue;
    const uint32_t koff = kslot(j) * kTB, voff = vslot(j) * kTB;
    // the tile as 4 chunks of 16 keys (as the backward): a chunk the warp's rows cannot see is
    // left out (no weight, no mma), the per-pair mask runs only on a chunk the window edge or
    // the diagonal cuts; t - key = dt[rr] - (column offset)
    const Chunks ch = query_chunks(wr0, n0, w);
    const unsigned live = ch.live, cut = ch.cut;
    float s[8][4];
    if (!idle) tile_abt_live<kD, kLo, false>(s, live, q_a, ql_a, k_b + koff, kl_b + koff);
    if constexpr (kRing) {
      if (j + 1 < n_tiles) {
        __syncthreads();  // every warp has read K_j: V_{j+1} takes its slot
        load_v(j + 1);
        cp_async_commit();
      }
      if (idle) continue;
    }
    const int dt[2] = {wr0 + g - n0 - 2 * t4, wr0 + g + 8 - n0 - 2 * t4};
    // the row max over the raw scores: scale > 0 and rounding is monotonic, so
    // fmul_rn(max s, scale) is the max of the scaled scores bit for bit (wstats unchanged)
    float mx[2] = {-INFINITY, -INFINITY};
    auto max_chunk = [&](auto mask_c, const int c) {
      constexpr bool kMask = decltype(mask_c)::value;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = 2 * c + h;
          if constexpr (kMask) {
            if (unsigned(dt[e >> 1] - (8 * i + (e & 1))) >= unsigned(w)) s[i][e] = -INFINITY;
          }
          mx[e >> 1] = fmaxf(mx[e >> 1], s[i][e]);
        }
    };
    for_live_chunks(live, cut, max_chunk);
    float base[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
      mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
      const float m_new = fmaxf(m_r[rr], __fmul_rn(mx[rr], scale));
      // a row with nothing visible yet (no sinks): its acc and l are zero, P = 0
      base[rr] = m_new == -INFINITY ? 0.f : m_new;
      // the rescale only where the row max grew, and not on the warp's first tile with work:
      // acc and l are still exactly 0 there, and corr <= 1, so skipping it changes no bit
      if (m_new != m_r[rr] && !fresh) {
        const float corr = fast_exp2(__fmul_rn(m_r[rr] - base[rr], kLog2e));
        l_r[rr] *= corr;
#pragma unroll
        for (int i = 0; i < kNT; ++i) acc[i][2 * rr] *= corr, acc[i][2 * rr + 1] *= corr;
      }
      m_r[rr] = m_new;
    }
    fresh = false;
    // the weights, in a_frag's pair order (chunk c, pair q: row rr = q & 1, so each row sums
    // its weights in the order h = 0, 1 as before). The backward's form (bwd_weight with nl =
    // 0): s scale - m in one fused rounding (exact near the max, where the weights matter),
    // then 2^(x log2e): 3 instructions instead of 4 (multiply, subtract, __expf's multiply,
    // ex2); a masked -inf gives 0. Inference: each pair rounded to bf16 once, packed as the
    // mma's A fragment, and the denominator sums those rounded weights (read back from the
    // packed halves), the values the mma sums.
    uint32_t pk[4][4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      if (!((live >> c) & 1u)) continue;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int i = 2 * c + (q >> 1), e = 2 * (q & 1), rr = q & 1;
        const float p0 = fast_exp2(__fmul_rn(__fmaf_rn(s[i][e], scale, -base[rr]), kLog2e));
        const float p1 = fast_exp2(__fmul_rn(__fmaf_rn(s[i][e + 1], scale, -base[rr]), kLog2e));
        if constexpr (kSplit) {
          l_r[rr] += p0;
          l_r[rr] += p1;
          s[i][e] = p0;
          s[i][e + 1] = p1;
        } else {
          pk[c][q] = pack_bf16(p0, p1);
          l_r[rr] += __uint_as_float(pk[c][q] << 16);
          l_r[rr] += __uint_as_float(pk[c][q] & 0xffff0000u);
        }
      }
    }
    if constexpr (kSplit)
      mma_av_live<kD, true>(acc, s, live, v_t + voff);
    else
      mma_av_packed<kD>(acc, pk, live, v_t + voff);
  }

  // Epilogue straight from the accumulators (no staging, no barrier): per row, y = cv v +
  // cm M + cl acc (y = combine(g, l), g = v + M / den or (M + den v) / eps, l = acc / den_w;
  // numden row = [M | den]), three per-row coefficients instead of two divisions and a
  // select per element. The rows of v it needs (queries t0..) are the last key tile, still in
  // its sV buffer: the last iteration's barrier made it visible and nothing overwrites it.
  const float alpha = alpha_p[0];
  const bool convex = d.combine_convex;
  const float A = convex ? fabsf(alpha) : alpha;
  const float c0 = convex ? 1.f / (1.f + A) : 1.f;  // the convex blend's normalisation
  const bf* sVlast = sV + vslot(n_tiles - 1) * kTile * kS;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int t = wr0 + g + 8 * rr;
    // the row's numden values [M | den] this thread combines, loaded together before any is
    // used: the stores of y below kept the compiler from hoisting them, so each of the 32
    // pairs waited on its own round trip to L2 (ncu at B 1, T 2048: those waits were about
    // 40% of the kernel's stall samples)
    const float* nd = numden + (int64_t(bh) * T + min(t, T - 1)) * (kD + 1);
    float mv[kNT][2];
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      mv[i][0] = __ldg(nd + 8 * i + 2 * t4);
      mv[i][1] = __ldg(nd + 8 * i + 2 * t4 + 1);
    }
    const float den = __ldg(nd + kD);
    float l = l_r[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    for (int j = 0; j < d.m; ++j) l += __expf(tr[j] - m_r[rr]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    if (t >= T) continue;
    if (t4 == 0) {
      float* ws = wstats + (int64_t(bh) * T + t) * 2;
      ws[0] = m_r[rr];
      ws[1] = l;
    }
    const bool small = den < d.eps;  // global_out's two forms
    const float rb = 1.f / (small ? d.eps : den);
    const float cv = c0 * (small ? den * rb : 1.f), cm = c0 * rb, cl = A * c0 * inv;
    const bf* vr = sVlast + (warp * 16 + g + 8 * rr) * kS + 2 * t4;
    bf* yr = y + ((int64_t(b) * T + t) * d.H + h) * kD + 2 * t4;
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      const float2 vt = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(vr + 8 * i));
      const float y0 = __fmaf_rn(cm, mv[i][0], __fmaf_rn(cv, vt.x, cl * acc[i][2 * rr]));
      const float y1 = __fmaf_rn(cm, mv[i][1], __fmaf_rn(cv, vt.y, cl * acc[i][2 * rr + 1]));
      *reinterpret_cast<__nv_bfloat162*>(yr + 8 * i) = __floats2bfloat162_rn(y0, y1);
    }
  }
}

// ---------------------------------------------------------------------------------------
/// Shared memory of either backward kernel: its own 64 rows (q~ or k~, with the lo half when
/// lo, and dy or v), two streamed buffers of the other side (k~ [+ lo] and v, or q~ [+ lo] and
/// dy), then f32 per-row scalars.
template <int kD>
size_t bwd_smem(bool lo, int floats) {
  return size_t(kRows * (lo ? 2 : 1) + kRows + 2 * kTile * (lo ? 2 : 1) + 2 * kTile) *
             row_stride<kD>() * 2 +
         sizeof(float) * size_t(floats);
}

/// The carving of bwd_smem: own [64][kS] rows (q~ or k~), their lo half (kLo), the own second
/// operand (dy or v), the streamed [2][64][kS] buffers (k~ or q~), their lo halves (kLo), the
/// streamed second operand (v or dy), then the f32 scalars.
struct BwdSmem {
  bf *own, *own_lo, *own2, *str, *str_lo, *str2;
  float* f32;
};

template <int kD, bool kLo>
__device__ __forceinline__ BwdSmem bwd_smem_carve(unsigned char* raw) {
  constexpr int kS = row_stride<kD>();
  BwdSmem m;
  m.own = reinterpret_cast<bf*>(raw);
  m.own_lo = m.own + kRows * kS;
  m.own2 = m.own + (kLo ? 2 : 1) * kRows * kS;
  m.str = m.own2 + kRows * kS;
  m.str_lo = m.str + 2 * kTile * kS;
  m.str2 = m.str + (kLo ? 4 : 2) * kTile * kS;
  m.f32 = reinterpret_cast<float*>(m.str2 + 2 * kTile * kS);
  return m;
}

/// Shared memory of the query side: q~ (and its lo half when lo), dy, two slots that the key
/// tiles K~ and V take in turn (win_bwd_q_kernel), the lo half of the current K~ tile (lo),
/// then f32 per-row scalars: 4 tiles, 68 KiB at D = 128 without RoPE (three CTAs per SM; the
/// double-buffered K~, V pairs took 6, 102 KiB), 6 with it.
template <int kD>
size_t bwd_q_smem(bool lo, int floats) {
  return size_t((lo ? 2 : 1) * kRows + kRows + 2 * kTile + (lo ? kTile : 0)) * row_stride<kD>() *
             2 +
         sizeof(float) * size_t(floats);
}

/// Window and combine backward, query side: grid (ceil(T / 64), B*H). Per query row t: dO' =
/// [dg/den, dden] (dOh non-null: dg/den also as a bf16 pair into dOh, dOl), cself, delta =
/// coef dy.l (for the key side), the row's parts of dalpha and dtau (summed in the CTA, one
/// atomic each per CTA), and dq~ = dC K~ unrotated and stored into
/// dq (rows owned, the first writer). kLo: split scores (window RoPE in training).
/// Three CTAs per SM without kLo (168 registers, 68 KiB): the key tiles stream through two
/// slots, K~ of stream step i in slot i & 1 and V in the other, the accumulator of dq~ lives
/// only from the last tile of pass 0 on, and pass 1 works in halves of 32 keys.
/// kDq false (dq null: distillation, no input gradient wanted): pass 0 alone (dy.l needs
/// S and dP' of every tile once), no dq~ accumulator, no pass 1, no dq stores; every other
/// output comes from the same instructions on the same operands, so it keeps its bits.
template <int kD, bool kLo, bool kDq>
__global__ void __launch_bounds__(kThreads, kLo ? 2 : 3)
    win_bwd_q_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                     const float* __restrict__ cosb, const float* __restrict__ sinb,
                     const float* __restrict__ tau, const float* __restrict__ alpha_p,
                     const float* __restrict__ numden, const float* __restrict__ wstats,
                     const bf* __restrict__ dy, float* __restrict__ dO, float* __restrict__ cself,
                     bf* __restrict__ dOh, bf* __restrict__ dOl,
                     float* __restrict__ delta_out, float* __restrict__ dq,
                     float* __restrict__ dtau, float* __restrict__ dalpha, Dims d) {
  pdl_enter();
  constexpr int kS = row_stride<kD>(), kNT = kD / 8, D1 = kD + 1;
  constexpr uint32_t kTB = tile_bytes<kD>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf* sQ = reinterpret_cast<bf*>(smem_raw);  // [64][kS] q~
  bf* sQl = sQ + kRows * kS;                 // [64][kS] q~ lo (kLo)
  bf* sDY = sQ + (kLo ? 2 : 1) * kRows * kS; // [64][kS] dy
  bf* sSt = sDY + kRows * kS;                // [2][64][kS] the K~ / V slots
  bf* sKl = sSt + 2 * kTile * kS;            // [64][kS] the current K~ tile's lo half (kLo)
  float* sdyg = reinterpret_cast<float*>(sKl + (kLo ? kTile * kS : 0));  // [64] dy.g per row
  float* sred = sdyg + kRows;                                            // [1 + m] dalpha, dtau

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int T = d.T, w = d.w;
  const QueryCta cta = query_cta<kD>(d);
  const int t0 = cta.t0, bh = cta.bh, b = cta.b, h = cta.h, kv_begin = cta.kv_begin,
            n_tiles = cta.n_tiles;
  const int64_t ldq = cta.ldq, ldk = cta.ldk;
  const bf *dyg = dy + cta.qoff, *kg = k + cta.kvoff, *vg = v + cta.kvoff;
  // window RoPE comes with the split scores (window_bwd_tc_launch): without kLo no rotation code
  const bool rope = kLo && d.rope, convex = d.combine_convex;
  const float alpha = alpha_p[0], A = convex ? fabsf(alpha) : alpha, coef = win_coef(alpha, convex);
  const float cA = convex ? 1.f / (1.f + A) : 1.f;  // dg = dy cA (convex: dy / (1 + |alpha|))
  // The stream: step i < n visits key tile i (pass 0), steps n .. 2n - 2 tiles n - 2 .. 0 (pass
  // 1). K~_i in slot i & 1, V_i in slot (i + 1) & 1: V_i takes the slot of K~_{i-1} once no
  // warp reads that any more (after step i - 1's scores in pass 0, after its dq mma in pass 1),
  // K~_{i+1} the slot of V_i once every warp has its dP'.
  // without dq (kDq false) the stream ends with pass 0 (n steps)
  const int total = kDq ? 2 * n_tiles - 1 : n_tiles;
  auto tile_of = [&](int i) { return i < n_tiles ? i : 2 * n_tiles - 2 - i; };
  auto load_k = [&](int i) {
    cp_rows<kD>(sSt + (i & 1) * kTile * kS, kg, ldk, kv_begin + tile_of(i) * kTile, T);
  };
  auto load_v = [&](int i) {
    cp_rows<kD>(sSt + ((i + 1) & 1) * kTile * kS, vg, ldk, kv_begin + tile_of(i) * kTile, T);
  };
  load_own_rows<kD>(sQ, kLo ? sQl : nullptr, q + cta.qoff, ldq, t0, T, rope, cosb, sinb);
  cp_rows<kD>(sDY, dyg, ldq, t0, T);
  load_k(0);
  load_v(0);
  cp_async_commit();
  for (int i = threadIdx.x; i < 1 + d.m; i += kThreads) sred[i] = 0.f;

  // the combine backward of the warp's 16 rows (formulas of window_bwd_kernel), while the first
  // tiles load: lanes over the columns, so numden, dO' rows are read and written coalesced
  // (8 rows at a time: their loads in flight together; this pass is latency-bound otherwise,
  // and the registers the tile loop needs are not live yet)
  const int wr0 = t0 + warp * 16;
  constexpr int kJ = kD / 32, kU = 8;  // columns per lane, rows per batch
  // the warp's first row of numden, v and dy at this lane's column; rows below are 32-bit
  // offsets from it (16 rows of at most H D elements)
  const int64_t wrow = min(wr0, T - 1);
  const float* nd_w = numden + (int64_t(bh) * T + wrow) * D1 + lane;
  const bf* v_w = vg + wrow * ldk + lane;
  const bf* dy_w = dyg + wrow * ldq + lane;
#pragma unroll 1
  for (int r0 = 0; r0 < 16 && wr0 + r0 < T; r0 += kU) {
    float ndj[kU][kJ], vj[kU][kJ], dyj[kU][kJ], den[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      // rows past T: a valid row, results unused
      const int dr = min(wr0 + r0 + u, T - 1) - int(wrow);
      const float* nd = nd_w + dr * D1;
      const bf* vr = v_w + dr * int(ldk);
      const bf* dyr = dy_w + dr * int(ldq);
      den[u] = nd[kD - lane];
#pragma unroll
      for (int c = 0; c < kJ; ++c) {
        ndj[u][c] = nd[32 * c];
        vj[u][c] = __bfloat162float(vr[32 * c]);
        dyj[u][c] = __bfloat162float(dyr[32 * c]);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = wr0 + r0 + u;
      if (t >= T) break;
      const int64_t bht = int64_t(bh) * T + t;
      const bool clamped = den[u] < d.eps;
      const float den_g = clamped ? d.eps : den[u];
      // one IEEE division per row, multiplies per column, no branch per column (each value
      // below moves by a few ulp against dividing per column: 1e-7 of the 1e-2 budget); the
      // per-column divisions and clamped / convex branches were most of this pass's
      // instructions. g_j = v_j vs + M_j / den_g as one fma: vs = 1 unclamped (v + M / den),
      // den / eps clamped ((M + den v) / eps).
      const float rg = 1.f / den_g, vs = clamped ? den[u] * rg : 1.f;
      // dg.g = cA dy.g (the same bits when cA = 1, the sum combine; a rounding apart when
      // convex), so one sum serves both
      float dyg_s = 0.f, cdiag = 0.f;
#pragma unroll
      for (int c = 0; c < kJ; ++c) {
        const int j = lane + 32 * c;
        // g_j = global_out of the numden row (den, M_j already in registers)
        const float mr = ndj[u][c] * rg;
        const float gj = __fmaf_rn(vj[u][c], vs, mr);
        const float o = dyj[u][c] * cA * rg;  // dO'_j = dg_j / den_g
        cdiag = __fmaf_rn(o, clamped ? vj[u][c] : -mr, cdiag);
        dyg_s = __fmaf_rn(dyj[u][c], gj, dyg_s);
        dO[bht * D1 + j] = o;
        if (dOh)
          split2(o, dOh[bht * kD + j], dOl[bht * kD + j]);  // block-uniform: the
                                                            // dstate sweep's bf16 pair
      }
      const float sum = warp_sum2(cdiag, dyg_s);  // lanes 0-15: cdiag, 16-31: dy.g
      if (lane == 0) cself[bht] = sum;
      if (lane == 16) {
        dO[bht * D1 + kD] = clamped ? 0.f : -(cA * sum) * rg;
        sdyg[warp * 16 + r0 + u] = sum;
      }
    }
  }

  // per row: m (max), 1 / den and nl = -log2(den) of the saved statistics; rows past T get
  // nl = -inf, so every P of theirs is 0
  float mx_r[2], inv_r[2], nl_r[2], nds_r[2] = {0.f, 0.f};
  float dyl[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // two partial sums per row (shorter FMA chains)
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int t = wr0 + g + 8 * rr;
    const float* ws = wstats + (int64_t(bh) * T + min(t, T - 1)) * 2;
    mx_r[rr] = t < T ? ws[0] : 0.f;
    inv_r[rr] = t < T ? 1.f / ws[1] : 0.f;  // rows past T: P = 0
    nl_r[rr] = t < T ? -__log2f(ws[1]) : -INFINITY;
  }
  float acc[kNT][4];  // dq~, from the last tile of pass 0 on
  // for the epilogue, made here so that only they stay live through the tile loop: the dq
  // row of this thread's first accumulator row, and the divisor that takes the CTA's sum to
  // dalpha (sum: 1; convex: sign(alpha) (1 + |alpha|)^2, the same bits as sign times the sum
  // over (1 + |alpha|)^2: IEEE division is exact in the sign)
  float* dq_w = kDq ? dq + (int64_t(b) * T + wr0 + g) * ldq + int64_t(h) * kD : nullptr;
  const float dal_div = convex ? (alpha >= 0.f ? 1.f : -1.f) * ((1.f + A) * (1.f + A)) : 1.f;
  const float* tr = d.m ? tau + (d.Ht == 1 ? 0 : h) * d.m : nullptr;
  const uint32_t q_a = a_addr<kD>(sQ, warp * 16), ql_a = a_addr<kD>(sQl, warp * 16);
  const uint32_t dy_a = a_addr<kD>(sDY, warp * 16);
  const uint32_t st_b = b_addr<kD>(sSt), kl_b = b_addr<kD>(sKl), st_t = bt_addr<kD>(sSt);
  const float scale = d.scale, coef_s = coef * scale;

  // One step of the stream (kPhase 0: pass 0, dy.l; 1: the last tile, dy.l, delta, then its dC
  // K~ from the P and dP' still in registers; 2: pass 1, dC K~ over tiles n - 2 .. 0, whose
  // scores it recomputes). Every thread runs every barrier; a warp whose rows see no key of
  // the tile (skip, warp-uniform) does no other work.
  auto step = [&](const int i, auto phase_c) {
    constexpr int kPhase = decltype(phase_c)::value;
    const int n0 = kv_begin + tile_of(i) * kTile;
    // K~_i has landed (issued in step i - 1; step 0: with the prologue's loads), and V_i too
    // unless i >= n (pass 1: issued just below); every warp is past step i - 1. Barriers a
    // step: 2 in pass 0, 3 in pass 1 (+1 with RoPE)
    cp_async_wait<0>();
    __syncthreads();
    if (kPhase == 2) {  // V_i into the slot of K~_{i-1}, whose dq mma every warp has done
      load_v(i);
      cp_async_commit();
    }
    if (rope) {  // k~ in place (the lo half into sKl, whose last reader was step i - 1)
      rope_in_place<kD>(sSt + (i & 1) * kTile * kS, kLo ? sKl : nullptr, n0, T, cosb, sinb);
      __syncthreads();
    }
    const bool skip = wr0 >= T || n0 > wr0 + 15 || wr0 - (n0 + kTile - 1) >= w;
    const uint32_t koff = (i & 1) * kTB, voff = ((i + 1) & 1) * kTB;
    // the tile as 4 chunks of 16 keys: a chunk the warp's rows cannot see is skipped (its
    // dC would be 0), the per-pair mask runs only on a chunk the window edge or the diagonal
    // cuts (2 of the 9 a warp sees at w = 128); t - key = dt0 + 8 rr - (column offset)
    const Chunks ch = query_chunks(wr0, n0, w);
    const unsigned live = skip ? 0u : ch.live, cut = ch.cut;
    const int dt0 = wr0 + g - n0 - 2 * t4;  // row g; row g + 8: dt0 + 8
    float s[8][4], dp[8][4];
    // K~_{i+1} into the slot of V_i once every warp has its dP' (all of them: a barrier); in
    // pass 0 also V_{i+1} into the slot of K~_i, which pass 0 reads no more
    auto next_tiles = [&]() {
      if (i + 1 < total) {
        __syncthreads();
        if (kPhase == 0) load_v(i + 1);
        load_k(i + 1);
        cp_async_commit();
      }
    };
    if constexpr (kPhase < 2) {
      // S = q~ K~^T and dP' = dy V^T (from the exact bf16 dy) in one k loop: V_i is here too
      if (live)
        tile_abt_pair_live<kD, kLo, false>(s, dp, live, q_a, ql_a, st_b + koff, kl_b, dy_a,
                                           st_b + voff);
      next_tiles();
    } else {
      // S of the first half here, of the second below, then V_i visible
      if (live & 3u)
        tile_scores<kD, kLo, false, 0, 2, false>(s, s, q_a, ql_a, st_b + koff, kl_b, 0u, 0u);
      cp_async_wait<0>();
      __syncthreads();
    }
    // one chunk, the pass and the mask as template constants (block-uniform branches choose
    // among the bodies; no per-score branch). Pass 0 keeps P in s (the last tile's dC needs it
    // once delta is known); pass 1 turns s into dC.
    auto chunk = [&](auto pass_c, auto mask_c, const int c) {
      constexpr bool kPass1 = decltype(pass_c)::value, kMask = decltype(mask_c)::value;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ii = 2 * c + hh, rr = e >> 1;
          float p = bwd_weight(s[ii][e], scale, mx_r[rr], nl_r[rr]);
          if constexpr (kMask) {
            const int dtk = dt0 + 8 * rr - (8 * ii + (e & 1));
            if (unsigned(dtk) >= unsigned(w)) p = 0.f;  // key > t or t - key >= w
          }
          if constexpr (kPass1) {
            s[ii][e] = p * __fmaf_rn(coef_s, dp[ii][e], nds_r[rr]);  // dC
          } else {
            dyl[rr][e & 1] = __fmaf_rn(p, dp[ii][e], dyl[rr][e & 1]);
            s[ii][e] = p;
          }
        }
    };
    using F = std::false_type;
    using Tr = std::true_type;
    auto chunks = [&](auto pass_c, const unsigned lv) {
      for_live_chunks(lv, cut, [&](auto mask_c, const int c) { chunk(pass_c, mask_c, c); });
    };
    if constexpr (kPhase < 2) chunks(F(), live);
    if constexpr (kPhase == 1) {
      // dy.l = sum_s P dP' from the very (f32) P and dP' that dC uses, so sum_s dC_ts = 0
      // to f32 rounding (the dq, dk shift invariance and the sinks' dtau rely on it); every
      // lane of every warp gets here
      // the rows' delta, dalpha and dtau parts now, so that none of it stays live through
      // pass 1 beside acc. dalpha and dtau: each thread's part (rows g, g + 8 on lanes
      // t4 == 0, zero elsewhere) summed over the warp by shuffles, then one shared atomic per
      // warp and sum: a float atomicAdd on shared memory is a compare-and-swap loop, and the
      // 32 threads of a CTA spinning on one address took ~19% of the kernel's stall samples
      // (ncu, B 1, T 2048).
      float pa = 0.f, dl[2] = {0.f, 0.f};  // dalpha part; delta of rows with a part, else 0
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float x = dyl[rr][0] + dyl[rr][1];
        x += __shfl_xor_sync(0xffffffffu, x, 1);
        x += __shfl_xor_sync(0xffffffffu, x, 2);
        const float delta = coef * x;
        nds_r[rr] = -(delta * scale);  // dC = P (coef dP' - delta) scale, as one fma
        const int t = wr0 + g + 8 * rr;
        if (t4 == 0 && t < T) {
          delta_out[int64_t(bh) * T + t] = delta;
          pa += convex ? x - sdyg[t - t0] : x;
          dl[rr] = delta;
        }
      }
      pa = warp_sum(pa);
      if (lane == 0) atomicAdd(sred, pa);
      for (int j = 0; j < d.m; ++j) {
        const float tj = tr[j];
        float pt = 0.f;
#pragma unroll
        for (int rr = 0; rr < 2; ++rr)
          if (dl[rr] != 0.f) pt += -__expf(tj - mx_r[rr]) * inv_r[rr] * dl[rr];
        pt = warp_sum(pt);
        if (lane == 0) atomicAdd(sred + 1 + j, pt);
      }
      if constexpr (kDq) {
#pragma unroll
        for (int ii = 0; ii < kNT; ++ii) acc[ii][0] = acc[ii][1] = acc[ii][2] = acc[ii][3] = 0.f;
        if (live) {
          // this tile's dC from the P kept in s (0 where masked): the bits pass 1 would give
#pragma unroll
          for (int ii = 0; ii < 8; ++ii) {
            if (!((live >> (ii >> 1)) & 1u)) continue;
#pragma unroll
            for (int e = 0; e < 4; ++e)
              s[ii][e] = s[ii][e] * __fmaf_rn(coef_s, dp[ii][e], nds_r[e >> 1]);
          }
          mma_av_live<kD>(acc, s, live, st_t + koff);  // dq~ += dC K~
        }
      }
    }
    if constexpr (kPhase == 2) {
      // in halves of 32 keys (chunks 0-1, 2-3): S and dP' of the half, dC, dq~ += dC K~, so
      // only half of S and dP' is live beside acc (every score and every sum as whole tiles
      // give it, in the same order)
      const unsigned l0 = live & 3u, l1 = live & 12u;
      if (l0) {
        tile_scores<kD, false, false, 0, 2, false>(dp, dp, dy_a, 0u, st_b + voff, 0u, 0u, 0u);
        chunks(Tr(), l0);
        mma_av_live<kD>(acc, s, l0, st_t + koff);
      }
      if (l1) {
        tile_scores<kD, kLo, false, 2, 4, false>(s, s, q_a, ql_a, st_b + koff, kl_b, 0u, 0u);
        tile_scores<kD, false, false, 2, 4, false>(dp, dp, dy_a, 0u, st_b + voff, 0u, 0u, 0u);
      }
      next_tiles();
      if (l1) {
        chunks(Tr(), l1);
        mma_av_live<kD>(acc, s, l1, st_t + koff);
      }
    }
  };
  // Pass 0 over the key tiles 0 .. n - 1: dy.l; pass 1 back over n - 2 .. 0: dq~ (the tiles
  // stream twice, L2 hits). The last tile of pass 0 is also pass 1's first: its P and dP' are
  // still in registers once dy.l is complete, so dC K~ for it follows at once, and pass 1
  // recomputes the scores of the other tiles only (n - 1 of them, one fewer tile load).
  for (int i = 0; i + 1 < n_tiles; ++i) step(i, std::integral_constant<int, 0>());
  step(n_tiles - 1, std::integral_constant<int, 1>());
  if constexpr (kDq) {
    for (int i = n_tiles; i < total; ++i) step(i, std::integral_constant<int, 2>());
    int pos[2];
    acc_rows_unrope<kD>(pos, acc, wr0, g, T, rope, cosb, sinb);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
      if (pos[rr] >= 0) store_acc_row<kD>(dq_w + int64_t(8 * rr) * ldq, acc, rr, t4, 1.f);
  }
  __syncthreads();  // every row's sred parts (added at the last tile)
  if (threadIdx.x == 0 && dalpha) atomicAdd(dalpha, sred[0] / dal_div);
  if (dtau)
    for (int j = threadIdx.x; j < d.m; j += kThreads) atomicAdd(dtau + (d.Ht == 1 ? 0 : h) * d.m + j, sred[1 + j]);
}

/// Window backward, key side: grid (ceil(T / 64), B*Hkv). 64 keys s0.. of one kv head and,
/// for each query head of its GQA group, the query tiles that see them (s0 .. s0 + 63 + w - 1):
/// dv += coef P^T dy, dk~ += dC^T q~ with dC = P (coef dP' - delta) scale, dP'^T = V dy^T from
/// the exact bf16 dy as the query side takes it; dk = R_s^T dk~. Key rows are owned and this
/// is their first writer: plain stores.
template <int kD, bool kLo>
__global__ void __launch_bounds__(kThreads, 2)
    win_bwd_k_kernel(const bf* __restrict__ q, const bf* __restrict__ k, const bf* __restrict__ v,
                     const float* __restrict__ cosb, const float* __restrict__ sinb,
                     const float* __restrict__ alpha_p, const float* __restrict__ wstats,
                     const float* __restrict__ delta, const bf* __restrict__ dy,
                     float* __restrict__ dk, float* __restrict__ dv, Dims d) {
  pdl_enter();
  constexpr int kNT = kD / 8;
  constexpr uint32_t kTB = tile_bytes<kD>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const BwdSmem sm = bwd_smem_carve<kD, kLo>(smem_raw);
  bf *sK = sm.own, *sKl = sm.own_lo, *sV = sm.own2;   // [64][kS] k~, k~ lo (kLo), v
  bf *sQ = sm.str, *sQl = sm.str_lo, *sDY = sm.str2;  // [2][64][kS] q~, q~ lo (kLo), dy
  float* sM = sm.f32;                                          // [2][64] row max
  float* sNL = sM + 2 * kTile;                                 // [2][64] -log2(den)
  float* sND = sNL + 2 * kTile;                                // [2][64] -delta scale

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int T = d.T, w = d.w, rep = d.H / d.Hkv;
  const int s0 = blockIdx.x * kRows, bk = blockIdx.y, b = bk / d.Hkv, kvh = bk % d.Hkv;
  const int64_t ldq = int64_t(d.H) * kD, ldk = int64_t(d.Hkv) * kD;
  const bf* kg = k + (int64_t(b) * T * d.Hkv + kvh) * kD;
  const bf* vg = v + (int64_t(b) * T * d.Hkv + kvh) * kD;
  const int q_hi = min(T - 1, s0 + kRows - 1 + w - 1);  // the last query that sees a key here
  const int nq = (q_hi + 1 - s0 + kTile - 1) / kTile;
  const int total = rep * nq;
  const bool rope = kLo && d.rope;  // window RoPE comes with kLo (window_bwd_tc_launch)
  const float coef = win_coef(alpha_p[0], d.combine_convex), scale = d.scale;
  auto load_q = [&](int buf, int it) {
    const int h = kvh * rep + it / nq, q0 = s0 + (it % nq) * kTile;
    const bf* qg = q + (int64_t(b) * T * d.H + h) * kD;
    const bf* dyg = dy + (int64_t(b) * T * d.H + h) * kD;
    cp_tile_pair<kD>(sQ, sDY, qg, dyg, ldq, buf, q0, T);
  };
  // The per-query scalars of streamed tile `it` (thread i < 64: query i): fetched into
  // registers when the tile's cp.async is issued, stored to shared memory only at the end of
  // the iteration before the tile's, so their global latency hides behind that iteration's mma
  // work instead of stalling warps 0-1 (and every warp at the next barrier) each iteration.
  float nx_m = 0.f, nx_den = 1.f, nx_dl = 0.f;
  bool nx_ok = false;
  auto fetch_scalars = [&](int it) {
    if (threadIdx.x >= kTile) return;
    const int h = kvh * rep + it / nq, tq = s0 + (it % nq) * kTile + int(threadIdx.x);
    nx_ok = tq < T;
    const int64_t st = (int64_t(b) * d.H + h) * T + (nx_ok ? tq : 0);
    nx_m = wstats[st * 2];
    nx_den = wstats[st * 2 + 1];
    nx_dl = delta[st];
  };
  auto store_scalars = [&](int buf) {
    if (threadIdx.x >= kTile) return;
    const int i = buf * kTile + int(threadIdx.x);
    // the query side's per-row constants, bit for bit (bwd_weight, dC as one fma); a query
    // past T gets nl = -inf: P = 0
    sM[i] = nx_ok ? nx_m : 0.f;
    sNL[i] = nx_ok ? -__log2f(nx_den) : -INFINITY;
    sND[i] = nx_ok ? -(nx_dl * scale) : 0.f;
  };
  load_own_rows<kD>(sK, kLo ? sKl : nullptr, kg, ldk, s0, T, rope, cosb, sinb);
  cp_rows<kD>(sV, vg, ldk, s0, T);
  load_q(0, 0);
  cp_async_commit();
  fetch_scalars(0);
  store_scalars(0);  // visible after the first iteration's barrier

  float dka[kNT][4], dva[kNT][4];
#pragma unroll
  for (int i = 0; i < kNT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dka[i][e] = dva[i][e] = 0.f;
  const int kw0 = s0 + warp * 16;
  const uint32_t k_a = a_addr<kD>(sK, warp * 16), kl_a = a_addr<kD>(sKl, warp * 16);
  const uint32_t v_a = a_addr<kD>(sV, warp * 16);
  const uint32_t q_b = b_addr<kD>(sQ), ql_b = b_addr<kD>(sQl), dy_b = b_addr<kD>(sDY);
  const uint32_t q_t = bt_addr<kD>(sQ), dy_t = bt_addr<kD>(sDY);
  const float coef_s = coef * scale;
  // per accumulator row (key kw0 + g + 8 rr): the bound of tq - key, 0 for a key past T (its
  // zero k~ row would otherwise get a weight)
  int lim[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) lim[rr] = kw0 + g + 8 * rr < T ? w : 0;

  for (int it = 0; it < total; ++it) {
    const int q0 = s0 + (it % nq) * kTile, buf = it & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (it + 1 < total) {
      load_q((it + 1) & 1, it + 1);
      cp_async_commit();
      fetch_scalars(it + 1);
    }
    rope_streamed_tile<kD, kLo>(sQ, sQl, buf, q0, T, rope, cosb, sinb);  // q~
    // buffer (it + 1) & 1 was last read in iteration it - 1, which every warp finished before
    // this iteration's barrier
    if (kw0 >= T || q0 + kTile - 1 < kw0 || q0 - (kw0 + 15) >= w) {
      if (it + 1 < total) store_scalars((it + 1) & 1);
      continue;
    }
    const uint32_t off = buf * kTB;
    // the tile as 4 chunks of 16 queries, as the query side's key chunks: skipped when no
    // pair is visible, the per-pair mask only where the window edge, the diagonal or T cuts
    unsigned live = 0, cut = 0;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int qc = q0 + 16 * c;
      int kind = qc >= T ? 0 : block_kind(qc, kw0, w);
      if (kind == 1 && (qc + 15 >= T || kw0 + 15 >= T)) kind = 2;
      live |= unsigned(kind != 0) << c;
      cut |= unsigned(kind == 2) << c;
    }
    float s[8][4], dp[8][4];
    // S^T = k~ q~^T and dP'^T = v dy^T
    tile_abt_pair_live<kD, kLo, true>(s, dp, live, k_a, kl_a, q_b + off, ql_b + off, v_a,
                                      dy_b + off);
    const float* M = sM + buf * kTile;
    const float* NL = sNL + buf * kTile;
    const float* ND = sND + buf * kTile;
    // tq - key = dq[rr] + (column offset)
    const int dq[2] = {q0 + 2 * t4 - kw0 - g, q0 + 2 * t4 - kw0 - g - 8};
    auto chunk = [&](auto mask_c, const int c) {
      constexpr bool kMask = decltype(mask_c)::value;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = 2 * c + h, qi = 8 * i + 2 * t4;
        const float2 m2 = *reinterpret_cast<const float2*>(M + qi);
        const float2 nl2 = *reinterpret_cast<const float2*>(NL + qi);
        const float2 nd2 = *reinterpret_cast<const float2*>(ND + qi);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int rr = e >> 1, hi = e & 1;
          float p = bwd_weight(s[i][e], scale, hi ? m2.y : m2.x, hi ? nl2.y : nl2.x);
          if constexpr (kMask) {
            const int dtk = dq[rr] + 8 * i + hi;
            if (unsigned(dtk) >= unsigned(lim[rr])) p = 0.f;  // tq < key, tq - key >= w, key >= T
          }
          s[i][e] = p;
          dp[i][e] = p * __fmaf_rn(coef_s, dp[i][e], hi ? nd2.y : nd2.x);  // dC^T
        }
      }
    };
    for_live_chunks(live, cut, chunk);
    mma_av_live<kD>(dva, s, live, dy_t + off);  // dv += P^T dy
    mma_av_live<kD>(dka, dp, live, q_t + off);  // dk~ += dC^T q~ (hi)
    if (it + 1 < total) store_scalars((it + 1) & 1);
  }

  int pos[2];
  acc_rows_unrope<kD>(pos, dka, kw0, g, T, rope, cosb, sinb);
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    if (pos[rr] < 0) continue;
    const int64_t o = ((int64_t(b) * T + pos[rr]) * d.Hkv + kvh) * kD;
    store_acc_row<kD>(dk + o, dka, rr, t4, 1.f);
    store_acc_row<kD>(dv + o, dva, rr, t4, coef);
  }
}

template <class K>
void grant_smem(K kernel, size_t bytes) {
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  LZ_CHECK(e == cudaSuccess, "lizard attention window (CUDA): cannot grant ", bytes,
           " bytes of shared memory: ", cudaGetErrorString(e));
}

template <int kD, bool kSplit, bool kLo>
void launch_fwd(const bf* q, const bf* k, const bf* v, const float* cosb, const float* sinb,
                const float* tau, const float* alpha, const float* numden, bf* y, float* wstats,
                const Dims& d, cudaStream_t s) {
  const size_t sm = fwd_smem<kD>(kLo);
  auto kern = win_fwd_kernel<kD, kSplit, kLo>;
  grant_smem(kern, sm);
  // the whole carveout as shared memory, so three 68 KiB CTAs fit on an SM (kLo: two); the
  // kernel's few L1 reads (numden, sinks) come from L2 anyway
  const cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                             int(cudaSharedmemCarveoutMaxShared));
  LZ_CHECK(e == cudaSuccess, "lizard attention window (CUDA): cannot set the forward's carveout: ",
           cudaGetErrorString(e));
  pdl_launch("lizard window forward", kern, dim3((d.T + kRows - 1) / kRows, d.B * d.H), kThreads,
             sm, s, q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, d);
}

template <int kD>
void launch_fwd_d(const bf* q, const bf* k, const bf* v, const float* cosb, const float* sinb,
                  const float* tau, const float* alpha, const float* numden, bf* y,
                  float* wstats, bool split, const Dims& d, cudaStream_t s) {
  // the split scores only with window RoPE: without it q and k are bf16 inputs, exact as they
  // are (window_lo_ops of lizard_attention_tc.cu)
  if (split && d.rope)
    launch_fwd<kD, true, true>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, d, s);
  else if (split)
    launch_fwd<kD, true, false>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, d, s);
  else
    launch_fwd<kD, false, false>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, d, s);
}

template <int kD, bool kLo>
void launch_bwd(const bf* q, const bf* k, const bf* v, const float* cosb, const float* sinb,
                const float* tau, const float* alpha, const float* numden, const float* wstats,
                const bf* dy, float* dO, float* cself, bf* dOh, bf* dOl, float* delta, float* dq,
                float* dk, float* dv, float* dtau, float* dalpha, const Dims& d, cudaStream_t s,
                StreamFork* keys_fork) {
  const size_t smq = bwd_q_smem<kD>(kLo, kRows + 1 + d.m), smk = bwd_smem<kD>(kLo, 3 * 2 * kTile);
  // dq null: the instance without the dq~ pass (the same smem: its slots stream pass 0)
  auto kq = dq ? win_bwd_q_kernel<kD, kLo, true> : win_bwd_q_kernel<kD, kLo, false>;
  auto kk = win_bwd_k_kernel<kD, kLo>;
  grant_smem(kq, smq);
  grant_smem(kk, smk);
  // the whole carveout as shared memory, so three 68 KiB query-side CTAs fit on an SM (kLo:
  // two); its few L1 reads (numden, wstats, the sinks) come from L2 anyway
  const cudaError_t e = cudaFuncSetAttribute(kq, cudaFuncAttributePreferredSharedMemoryCarveout,
                                             int(cudaSharedmemCarveoutMaxShared));
  LZ_CHECK(e == cudaSuccess,
           "lizard attention window (CUDA): cannot set the query side's carveout: ",
           cudaGetErrorString(e));
  const int nt = (d.T + kRows - 1) / kRows;
  pdl_launch("lizard window backward (queries)", kq, dim3(nt, d.B * d.H), kThreads, smq, s, q, k, v,
             cosb, sinb, tau, alpha, numden, wstats, dy, dO, cself, dOh, dOl, delta, dq, dtau,
             dalpha, d);
  // after the query side: it writes delta, which the key side reads. Its only outputs are
  // dk and dv: none wanted, no launch (and no fork).
  if (dk == nullptr && dv == nullptr) return;
  if (keys_fork) keys_fork->fork();
  pdl_launch("lizard window backward (keys)", kk, dim3(nt, d.B * d.Hkv), kThreads, smk,
             keys_fork ? keys_fork->side() : s, q, k, v, cosb, sinb, alpha, wstats, delta, dy, dk,
             dv, d);
}

}  // namespace

bool tc_window_supported(const Dims& d) {
  // every size fits: the largest, the key side at D = 128 with split RoPE operands, takes
  // 9 x 64 rows of 272 bytes + 1.5 KiB = 158 KiB of the 227 KiB a CTA may have
  return tc_supported(d) && d.w > 0 && (d.D == 32 || d.D == 64 || d.D == 128);
}

void window_tc_launch(const bf* q, const bf* k, const bf* v, const float* cosb,
                      const float* sinb, const float* tau, const float* alpha,
                      const float* numden, bf* y, float* wstats, bool split, const Dims& d,
                      cudaStream_t s) {
  switch (d.D) {
    case 32: return launch_fwd_d<32>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, split, d, s);
    case 64: return launch_fwd_d<64>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, split, d, s);
    case 128: return launch_fwd_d<128>(q, k, v, cosb, sinb, tau, alpha, numden, y, wstats, split, d, s);
    default: break;
  }
  throw Error("window_tc_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

void window_bwd_tc_launch(const bf* q, const bf* k, const bf* v, const float* cosb,
                          const float* sinb, const float* tau, const float* alpha,
                          const float* numden, const float* wstats, const bf* dy, float* dO,
                          float* cself, bf* dO_hi, bf* dO_lo, float* delta, float* dq, float* dk,
                          float* dv, float* dtau, float* dalpha, const Dims& d, cudaStream_t s,
                          StreamFork* keys_fork) {
#define LZ_WIN_BWD(D_)                                                                          \
  case D_:                                                                                      \
    if (d.rope)                                                                                 \
      return launch_bwd<D_, true>(q, k, v, cosb, sinb, tau, alpha, numden, wstats, dy, dO, cself, \
                                  dO_hi, dO_lo, delta, dq, dk, dv, dtau, dalpha, d, s, keys_fork); \
    return launch_bwd<D_, false>(q, k, v, cosb, sinb, tau, alpha, numden, wstats, dy, dO, cself, \
                                 dO_hi, dO_lo, delta, dq, dk, dv, dtau, dalpha, d, s, keys_fork);
  switch (d.D) {
    LZ_WIN_BWD(32)
    LZ_WIN_BWD(64)
    LZ_WIN_BWD(128)
    default: break;
  }
#undef LZ_WIN_BWD
  throw Error("window_bwd_tc_launch: head dim " + std::to_string(d.D) +
              " is not covered (32, 64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
