// Output kernel of the Lizard global branch (DESIGN.md section 3) on register-resident tensor
// cores (issue #5): the default behind out_tc_launch (contract in lizard_attention_tc.cuh),
// replacing out_tc_kernel of lizard_attention_tc.cu, which LIZARD_OUT_KERNEL=wmma still
// selects. Same inputs, same outputs (numden [B,H,T,D+1] = [M | den]), same maths and the
// same split products (training: hi*hi + lo*hi + hi*lo, in that order per k-step, as mma_acc
// of the wmma kernel issues them).
//
// Shape: one CTA per (b, h, chunk of 32 tokens), D/16 warps (2, 4 or 8 for D = 32, 64, 128).
// The kernel is a stream over the chunk's f32 state (2F x (D+1) floats, 132 KB at 2F = 256,
// D = 128: 62% of its HBM bytes in training, 73% in inference), so its shape is chosen to
// keep that stream full and lean:
//   1. cp.async: phi_q, phi_k (and their lo halves in training) [32][2F] and v [32][D] into
//      shared memory, and the first stage of the state (32 rows) behind them.
//   2. P = phi_q phi_k^T on the three 16x16 tiles on or below the diagonal, one tile per warp
//      (the k range halved over two warps when there are 8), f32 into shared memory; then a
//      warp per row as in the wmma kernel: P~ = P exp(bl_t - bl_s) (s < t) as bf16 (hi + lo),
//      its row sum, the diagonal, phi_q.z, and phi_q exp(bl_t) rounded (split) in place, its
//      columns permuted within each 32 (see 3). phi_k is dead after P: its tiles (hi, lo)
//      become state stages 1 (and 2), so 2 (training: 3) stages of 16 KB rotate.
//   3. Warp w owns value columns 16w .. 16w + 15 of all 32 rows (2 m-tiles x 2 n-tiles of
//      mma.sync m16n8k16, 16 f32 accumulators per lane). Its B operand, the state S, comes
//      from the stage: 32 rows x D floats (in state_index's layout the S rows of a stage are
//      one contiguous, 128-byte aligned block, so 16-byte cp.async of whole lines: no sector
//      is fetched twice and a stage is 8 D / threads copies per thread), each row's 16-byte
//      pieces permuted in shared memory by stage_swizzle. Each lane reads its fragment
//      elements with 4-byte shared loads, converts them to bf16 (hi + lo) and feeds the mma.
//      Bank-conflict free by the k order and the swizzle (see stage_swizzle): a load's lanes
//      are at rows 8 apart and 8 consecutive columns; k-step e of stage s gives mma
//      k slot 2 q4 + j + 8 h (q4 = lane % 4) state row 32 s + 8 q4 + 4 e + 2 h + j, and 2b
//      stores phi_q e^{bl_t} column 32 s + 8 q4 + 4 e + 2 h + j at the slot's place, so the
//      ldmatrix of the A operand is unchanged. One barrier per stage; while a stage is read
//      the next one (training: two) is in flight.
//   4. acc += P~ V (P~ by ldmatrix from its bf16 tile, V by ldmatrix.trans), then
//      M = acc - (exp(bl_t) phi_q.z + rowsum P~) v_t and den; [M | den] goes through shared
//      memory (the dedicated stage, rows of D + 8 floats: float2 stores conflict free) and out
//      as whole 128-byte lines of the chunk's contiguous numden rows (a direct store from the
//      fragments writes half sectors of 8 rows per instruction).
// P is shared by the D/16 warps of a CTA (each needs all 32 x 32), so it goes through shared
// memory once instead of being recomputed per warp (at D = 128, 2F = 256 its 288 mma's are a
// fifth of the state product's 1536).
// Shared memory at 2F = 256, D = 128: 107 KiB in training (two CTAs per SM), 71.5 KiB in
// inference (three). Registers (nvcc 13, sm_90a, -Xptxas -v): 72 / 72 / 85 (inference, D =
// 128 / 64 / 32) and 100 / 96 / 93 (training), no spills.
//
// Precision: the same rounding points as the wmma kernel (P f32, P~ and phi_q exp(bl_t) and S
// as bf16 or split pairs, row sums of the rounded weights, phi_q.z and the diagonal in f32);
// the operands and the split products are bit for bit those of the wmma kernel, only f32
// summation orders differ (inside the mma's: the k slots of a k-step hold other state rows;
// P's k range in two halves summed at the end when there are 8 warps; phi_q.z, a sum of
// positive terms, by 8 consecutive features per lane then across lanes), so the split path
// agrees with the wmma kernel to f32 rounding of sums of up to 2F + 32 products (about 1e-6
// relative) and inference to the same (its operands are rounded identically too).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

using bf = __nv_bfloat16;

constexpr int kC = kChunk;  // rows (tokens) per CTA: two 16-row m-tiles
static_assert(kChunk == 32, "the output kernel's tiling assumes 32-token chunks");
constexpr int kLP = kC + 4;  // f32 P row stride (floats)
constexpr int kLPb = kC + 8;  // bf16 P~ row stride: 80 bytes, 16-byte aligned rows for ldmatrix
constexpr int kUnits = 3;     // 16x16 P tiles on or below the diagonal: (0,0), (1,0), (1,1)
constexpr int kStageRows = 32;  // state rows per stage: two k-steps (the k order spans 32 rows)

/// Warps of the CTA for head dim kD: one per 16 value columns.
template <int kD>
constexpr int out_warps() {
  return kD / 16;
}
/// Parts P's k range is cut into: two when there are warps to spare for the 3 tiles.
template <int kD>
constexpr int p_parts() {
  return out_warps<kD>() >= 6 ? 2 : 1;
}
/// State stages in rotation: the dedicated one plus the phi_k tile(s) freed after P.
template <bool kSplit>
constexpr int out_stages() {
  return kSplit ? 3 : 2;
}
/// CTAs per SM the shared memory allows at 2F = 256, D = 128 (the register cap follows it).
template <bool kSplit>
constexpr int out_min_blocks() {
  return kSplit ? 2 : 3;
}

__host__ __device__ constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }
__host__ __device__ constexpr size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/// Byte sizes of the shared-memory regions (host and device agree through this one function).
struct OutMmaLayout {
  size_t phi, pk, v, p, pb, z, row, st;
  __host__ __device__ size_t total(bool split) const {
    return (phi + pk) * (split ? 2 : 1) + v + p + pb * (split ? 2 : 1) + z + 4 * row + st;
  }
};
__host__ __device__ inline OutMmaLayout out_mma_layout(int F2, int D, int parts) {
  const size_t phi = sizeof(bf) * kC * (F2 + 8);                 // [32][2F] phi tile
  const size_t stage = sizeof(float) * kStageRows * D;           // 32 rows of S (swizzled)
  const size_t outst = sizeof(float) * kC * (D + 8);             // [32][D+8] f32 [M | den]
  OutMmaLayout l;
  l.phi = al128(phi);                              // phi_q (and its lo half)
  l.pk = al128(max_sz(phi, stage));                // phi_k (lo), then a state stage each
  l.v = al128(sizeof(bf) * kC * (D + 8));          // [32][D] v
  l.p = al128(sizeof(float) * parts * kC * kLP);   // [parts][32][32] f32 P
  l.pb = al128(sizeof(bf) * kC * kLPb);            // [32][32] bf16 P~ (and its lo half)
  l.z = al128(sizeof(float) * F2);                 // z, the state's last column
  l.row = al128(sizeof(float) * kC);               // bl, row sum, diagonal, phi_q.z
  l.st = al128(max_sz(stage, outst));              // state stage 0, then [M | den] out
  return l;
}

/// Next region of `bytes` (already 128-rounded) from the shared-memory cursor.
__device__ __forceinline__ char* take(char*& p, size_t bytes) {
  char* r = p;
  p += bytes;
  return r;
}

/// 32 rows of `cols` bf16 (cols a multiple of 8; row r at src + r * gstride) into shared rows
/// of ld `ldd` by cp.async; rows >= valid become zeros. The (row, piece) of copy i steps by a
/// constant (one division per thread, not one per copy: cols is a runtime value).
template <int kThreads>
__device__ __forceinline__ void cp_rows(bf* dst, int ldd, const bf* src, int64_t gstride,
                                        int valid, int cols) {
  const int vpr = cols / 8, dr = kThreads / vpr, dc = kThreads % vpr;
  int r = threadIdx.x / vpr, c = threadIdx.x % vpr;
  for (int i = threadIdx.x; i < kC * vpr; i += kThreads) {
    const uint32_t a = smem_u32(dst + r * ldd + c * 8);
    if (r < valid) cp_async16_u32(a, src + r * gstride + c * 8);
    else st_shared_zero16(a);
    r += dr;
    c += dc;
    if (c >= vpr) {
      c -= vpr;
      ++r;
    }
  }
}

/// The 16-byte piece u of stage row r sits at piece u ^ stage_swizzle(r) of its shared row
/// (rows of D floats, D a multiple of 32: every row starts at bank 0). A load of
/// load_state_step reads rows 8 q4 + const (q4 = lane % 4) at columns 16 w + g (+ 8), g =
/// lane / 4: without the swizzle its 32 lanes hit 8 banks; with it piece ((16 w + g) / 4) ^ 2 q4
/// takes 8 distinct values mod 8 over (q4, g / 4) (the XOR moves bits 1-2, g / 4 is bit 0), so
/// 8 pieces x 4 floats: 32 distinct banks.
__device__ __forceinline__ constexpr int stage_swizzle(int r) { return ((r >> 3) & 3) << 1; }

/// One state stage (kStageRows rows of kD floats of S, contiguous in global) by 16-byte
/// cp.async: 8 kD copies, whole 128-byte lines (src 128-byte aligned: the chunk's block is 2F
/// (D+1) floats with 2F a multiple of 32, a stage 32 D floats of its S rows), each piece to
/// its swizzled place.
template <int kThreads, int kD>
__device__ __forceinline__ void cp_stage(float* dst, const float* src) {
  static_assert(kD % 32 == 0, "rows start at bank 0 and have 8 pieces or more to permute");
  constexpr int kUPR = kD / 4, kCopies = kStageRows * kUPR;  // pieces per row (a power of 2)
  const uint32_t a = smem_u32(dst);
  for (int i = threadIdx.x; i < kCopies; i += kThreads) {
    const int r = i / kUPR, u = i % kUPR;
    cp_async16_u32(a + 16 * (r * kUPR + (u ^ stage_swizzle(r))), src + 4 * i);
  }
}

/// This lane's B-fragment elements of k-step e of a stage: rows 8 q4 + 4 e + {0, 1, 2, 3}
/// (mma k slots 2 q4, 2 q4 + 1, 2 q4 + 8, 2 q4 + 9), columns g and g + 8 of the warp's 16;
/// `sl` points at row 8 q4 + 4 e of the stage, `o` holds the swizzled offsets of the two
/// columns in those rows (stage_col; the same for the four rows: their stage_swizzle is 2 q4).
template <int kD>
__device__ __forceinline__ void load_state_step(float (&r)[8], const float* sl, const int (&o)[2]) {
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) r[nt * 4 + i] = sl[i * kD + o[nt]];
}
/// Offset in its shared stage row r of column j (stage_swizzle).
__device__ __forceinline__ int stage_col(int r, int j) {
  return 4 * ((j >> 2) ^ stage_swizzle(r)) + (j & 3);
}

/// bf16 hi and (kSplit) lo = bf16(x - hi) of two values, packed as a B-fragment register (the
/// first value, the lower k, in the low half): one packing convert each, the widening of hi by
/// bit operations (exact), so the same bits as rounding each value alone.
template <bool kSplit>
__device__ __forceinline__ void split_pack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16(x0, x1);
  if constexpr (kSplit)
    lo = pack_bf16(x0 - __uint_as_float(hi << 16), x1 - __uint_as_float(hi & 0xffff0000u));
}

/// Grid (NC, B*H), out_warps<kD>() warps. Contract: out_tc_launch (numden = [M | den] per
/// row of the chunk, M = (phi_q e^{bl_t}) S + P~ V - (e^{bl_t} phi_q.z + rowsum P~) v_t,
/// den = e^{bl_t} phi_q.z + rowsum P~ + P_tt). kSplit: phi_q, phi_k as hi + lo pairs (phiq_lo,
/// phik_lo), P~, phi_q e^{bl_t} and S split too (training); else bf16 operands (inference).
/// states 16-byte aligned (checked by the launch).
template <int kD, bool kSplit>
__global__ void __launch_bounds__(out_warps<kD>() * 32, out_min_blocks<kSplit>())
    out_mma_kernel(const bf* __restrict__ phiq, const bf* __restrict__ phiq_lo,
                   const bf* __restrict__ phik, const bf* __restrict__ phik_lo,
                   const bf* __restrict__ v, const float* __restrict__ bl_all,
                   const float* __restrict__ states, float* __restrict__ numden, Dims d) {
  pdl_enter();
  constexpr int kWarps = out_warps<kD>(), kThreads = kWarps * 32, kD1 = kD + 1;
  constexpr int kParts = p_parts<kD>(), kLV = kD + 8, kLO = kD + 8;
  constexpr int kBufs = out_stages<kSplit>();
  extern __shared__ __align__(128) char smem[];
  const int F2 = 2 * d.F, LQ = F2 + 8, nst = F2 / kStageRows;  // F % 16 == 0: 2F % 32 == 0
  const OutMmaLayout L = out_mma_layout(F2, kD, kParts);
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(take(cur, L.phi));   // phi_q, then phi_q e^{bl_t} (hi)
  bf* sql = kSplit ? reinterpret_cast<bf*>(take(cur, L.phi)) : nullptr;  // its lo half
  bf* sk = reinterpret_cast<bf*>(take(cur, L.pk));    // phi_k, then state stage 1
  bf* skl = kSplit ? reinterpret_cast<bf*>(take(cur, L.pk)) : nullptr;  // phi_k lo, stage 2
  bf* sv = reinterpret_cast<bf*>(take(cur, L.v));
  float* sP = reinterpret_cast<float*>(take(cur, L.p));
  bf* sPh = reinterpret_cast<bf*>(take(cur, L.pb));
  bf* sPl = kSplit ? reinterpret_cast<bf*>(take(cur, L.pb)) : nullptr;
  float* sz = reinterpret_cast<float*>(take(cur, L.z));
  float* sbl = reinterpret_cast<float*>(take(cur, L.row));
  float* srow = reinterpret_cast<float*>(take(cur, L.row));
  float* sdiag = reinterpret_cast<float*>(take(cur, L.row));
  float* sqz = reinterpret_cast<float*>(take(cur, L.row));
  float* sst = reinterpret_cast<float*>(take(cur, L.st));  // stage 0, then [M | den]
  auto stage_buf = [&](int i) {  // i < kBufs
    return i == 0 ? sst : reinterpret_cast<float*>(i == 1 ? sk : skl);
  };

  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int t0 = c * kC, n = min(kC, d.T - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t row0 = int64_t(bh) * d.T + t0;  // row of token t0 in [B,H,T,*]
  const float* so = states + state_chunk(bh, c, d.NC, kD, F2);  // state_index's layout

  // 1. the tiles by cp.async (one group), then state stage 0 (the next group)
  cp_rows<kThreads>(sq, LQ, phiq + row0 * F2, F2, n, F2);
  cp_rows<kThreads>(sk, LQ, phik + row0 * F2, F2, n, F2);
  if constexpr (kSplit) {
    cp_rows<kThreads>(sql, LQ, phiq_lo + row0 * F2, F2, n, F2);
    cp_rows<kThreads>(skl, LQ, phik_lo + row0 * F2, F2, n, F2);
  }
  cp_rows<kThreads>(sv, kLV, v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * kD,
                    int64_t(d.Hkv) * kD, n, kD);
  {  // z: 2F contiguous floats (16-byte aligned) with the tiles
    const float* zg = so + state_z(kD, F2);
    for (int i = tid; i < F2 / 4; i += kThreads) cp_async16_u32(smem_u32(sz + 4 * i), zg + 4 * i);
  }
  cp_async_commit();
  cp_stage<kThreads, kD>(sst, so);
  cp_async_commit();
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < kC; i += kThreads) sbl[i] = i < n ? blr[t0 + i] : 0.f;
  cp_async_wait<1>();  // the tiles; stage 0 may still be in flight
  __syncthreads();

  // 2a. P on the tiles on or below the diagonal; item = (tile, part of the k range)
  {
    const int kper = (F2 / 16) / kParts;  // k-steps per part (2F / 16 is even)
    for (int item = warp; item < kUnits * kParts; item += kWarps) {
      const int unit = item % kUnits, part = item / kUnits;
      const int mt = unit == 0 ? 0 : 1, kp = unit == 2 ? 1 : 0;  // query m-tile, 16-key block
      // ldmatrix row addresses: A (phi_q rows, row-major) matrices (rows 0-7 | 8-15) x
      // (k 0-7 | 8-15); B (phi_k rows = keys, k contiguous) matrices (k 0-7, keys 0-7),
      // (k 8-15, keys 0-7), (k 0-7, keys 8-15), (k 8-15, keys 8-15): b0, b1 of two n-tiles
      const int ao = (mt * 16 + (lane & 15)) * LQ + (lane >> 4) * 8;
      const int bo = (kp * 16 + (lane & 7) + (lane >> 4) * 8) * LQ + ((lane >> 3) & 1) * 8;
      float acc[2][4] = {};
      for (int ks = part * kper; ks < (part + 1) * kper; ++ks) {
        uint32_t a[4], bb[4];
        ldsm_x4(a, smem_u32(sq + ao + ks * 16));
        ldsm_x4(bb, smem_u32(sk + bo + ks * 16));
        mma_bf16(acc[0], a, bb[0], bb[1]);
        mma_bf16(acc[1], a, bb[2], bb[3]);
        if constexpr (kSplit) {
          uint32_t al[4], bl[4];
          ldsm_x4(al, smem_u32(sql + ao + ks * 16));
          ldsm_x4(bl, smem_u32(skl + bo + ks * 16));
          mma_bf16(acc[0], al, bb[0], bb[1]);
          mma_bf16(acc[0], a, bl[0], bl[1]);
          mma_bf16(acc[1], al, bb[2], bb[3]);
          mma_bf16(acc[1], a, bl[2], bl[3]);
        }
      }
      float* dst = sP + part * kC * kLP;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int r = mt * 16 + g, s = kp * 16 + nt * 8 + 2 * q4;
        dst[r * kLP + s] = acc[nt][0];
        dst[r * kLP + s + 1] = acc[nt][1];
        dst[(r + 8) * kLP + s] = acc[nt][2];
        dst[(r + 8) * kLP + s + 1] = acc[nt][3];
      }
    }
  }
  __syncthreads();
  // phi_k is dead: its tile(s) take state stages 1 .. kBufs - 1 (one group each, empty past
  // the last stage, so the group count the waits of 3 rely on holds at every 2F)
#pragma unroll
  for (int u = 1; u < kBufs; ++u) {
    if (u < nst) cp_stage<kThreads, kD>(stage_buf(u), so + state_s(u * kStageRows, 0, kD));
    cp_async_commit();
  }

  // 2b. per row (one warp, lane = key s): the decayed strictly-causal P~ in bf16 (split: and
  // its lo half) and its row sum from the same rounded weights as the mma (M consistent),
  // the diagonal, phi_q.z; then phi_q scaled by exp(bl_t) in place, in the k-slot order of 3
  for (int r = warp; r < kC; r += kWarps) {
    auto pval = [&](int s) {
      float p = sP[r * kLP + s];
      if constexpr (kParts == 2) p += sP[kC * kLP + r * kLP + s];
      return p;
    };
    float rs = 0.f, qz = 0.f;
    {
      const int s = lane;
      float p = 0.f;
      if (s < r && r < n) p = pval(s) * __expf(sbl[r] - sbl[s]);
      const bf pb = __float2bfloat16(p);
      sPh[r * kLPb + s] = pb;
      rs += __bfloat162float(pb);
      if constexpr (kSplit) {
        const bf pl = __float2bfloat16(p - __bfloat162float(pb));
        sPl[r * kLPb + s] = pl;
        rs += __bfloat162float(pl);
      }
    }
    // phi_q's row, a 16-byte piece (8 features) per lane: f32 value (hi + lo in training),
    // phi_q.z, and phi_q e^{bl_t} rounded (split) into the k-slot order of 3: features
    // 32 m + 8 q + 4 e + 2 h + {0, 1} (q = lane % 4) -> columns 32 m + 16 e + 8 h + 2 q + {0, 1}
    const bool act = 8 * lane < F2;
    float ph[8];
    if (act) {
      const uint4 hv = *reinterpret_cast<const uint4*>(sq + r * LQ + 8 * lane);
      const uint32_t hw[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        ph[2 * i] = __uint_as_float(hw[i] << 16);
        ph[2 * i + 1] = __uint_as_float(hw[i] & 0xffff0000u);
      }
      if constexpr (kSplit) {
        const uint4 lv = *reinterpret_cast<const uint4*>(sql + r * LQ + 8 * lane);
        const uint32_t lw[4] = {lv.x, lv.y, lv.z, lv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          ph[2 * i] += __uint_as_float(lw[i] << 16);
          ph[2 * i + 1] += __uint_as_float(lw[i] & 0xffff0000u);
        }
      }
      const float4 z0 = *reinterpret_cast<const float4*>(sz + 8 * lane);
      const float4 z1 = *reinterpret_cast<const float4*>(sz + 8 * lane + 4);
      const float zz[8] = {z0.x, z0.y, z0.z, z0.w, z1.x, z1.y, z1.z, z1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) qz += ph[i] * zz[i];
    }
    rs = warp_sum(rs);
    qz = warp_sum(qz);
    __syncwarp();  // every lane has read the row before any lane overwrites it permuted
    if (act) {
      const float er = __expf(sbl[r]);
      bf* qrow = sq + r * LQ + 32 * (lane / 4) + 2 * (lane % 4);
#pragma unroll
      for (int i = 0; i < 8; i += 2) {  // i = 4 e + 2 h
        const int col = 16 * (i >> 2) + 8 * ((i >> 1) & 1);
        uint32_t hi, lo;
        split_pack<kSplit>(ph[i] * er, ph[i + 1] * er, hi, lo);
        *reinterpret_cast<uint32_t*>(qrow + col) = hi;
        if constexpr (kSplit)
          *reinterpret_cast<uint32_t*>(sql + (qrow - sq) + col) = lo;
      }
    }
    if (lane == 0) {
      srow[r] = rs;
      sdiag[r] = r < n ? pval(r) : 0.f;
      sqz[r] = qz;
    }
  }

  // 3. acc = (phi_q e^{bl_t}) S, a stage (two k-steps) at a time; the barrier that publishes
  // stage s also frees the buffer of stage s - 1, which then takes stage s - 1 + kBufs
  float acc[2][2][4] = {};  // [m-tile][n-tile][fragment]
  const int jw = warp * 16;  // the warp's first value column
  const int ao = (lane & 15) * LQ + (lane >> 4) * 8;
  // the lane's stage columns jw + g, jw + g + 8 in its rows 8 q4 + .. (stage_swizzle 2 q4)
  const int so_col[2] = {stage_col(8 * q4, jw + g), stage_col(8 * q4, jw + g + 8)};
  for (int s = 0; s < nst; ++s) {
    // groups after stage s: kBufs - 1 at s = 0 (the prologue's), kBufs - 2 after (one per
    // iteration since, the first of which issued none)
    if (s == 0) cp_async_wait<kBufs - 1>();
    else cp_async_wait<kBufs - 2>();
    __syncthreads();  // stage s visible to all; stage s - 1 read by all; 2b's writes visible
    if (s >= 1) {
      const int nx = s - 1 + kBufs;
      if (nx < nst)
        cp_stage<kThreads, kD>(stage_buf((s - 1) % kBufs), so + state_s(nx * kStageRows, 0, kD));
      cp_async_commit();
    }
    const float* sb = stage_buf(s % kBufs) + (8 * q4) * kD;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int ks = 2 * s + e;
      float st[8];
      load_state_step<kD>(st, sb + 4 * e * kD, so_col);
      uint32_t bhi[2][2], blo[2][2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        split_pack<kSplit>(st[nt * 4 + 0], st[nt * 4 + 1], bhi[nt][0], blo[nt][0]);
        split_pack<kSplit>(st[nt * 4 + 2], st[nt * 4 + 3], bhi[nt][1], blo[nt][1]);
      }
      uint32_t a[2][4], al[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        ldsm_x4(a[mt], smem_u32(sq + mt * 16 * LQ + ao + ks * 16));
        if constexpr (kSplit) ldsm_x4(al[mt], smem_u32(sql + mt * 16 * LQ + ao + ks * 16));
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          mma_bf16(acc[mt][nt], a[mt], bhi[nt][0], bhi[nt][1]);
          if constexpr (kSplit) {
            mma_bf16(acc[mt][nt], al[mt], bhi[nt][0], bhi[nt][1]);
            mma_bf16(acc[mt][nt], a[mt], blo[nt][0], blo[nt][1]);
          }
        }
    }
  }

  // 4. acc += P~ V (strictly lower triangular: m-tile mt needs key blocks 0 .. mt);
  // V [key][col] row-major, so ldmatrix.trans gives the (k = key, n = col) B fragments
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int kb = 0; kb <= mt; ++kb) {
      const int po = (mt * 16 + (lane & 15)) * kLPb + kb * 16 + (lane >> 4) * 8;
      uint32_t a[4], vb[4];
      ldsm_x4(a, smem_u32(sPh + po));
      ldsm_x4_trans(vb, smem_u32(sv + (kb * 16 + (lane & 15)) * kLV + jw + (lane >> 4) * 8));
      mma_bf16(acc[mt][0], a, vb[0], vb[1]);
      mma_bf16(acc[mt][1], a, vb[2], vb[3]);
      if constexpr (kSplit) {
        uint32_t al[4];
        ldsm_x4(al, smem_u32(sPl + po));
        mma_bf16(acc[mt][0], al, vb[0], vb[1]);
        mma_bf16(acc[mt][1], al, vb[2], vb[3]);
      }
    }

  // M = acc - dex v_t (dex: den without the self pair), den = dex + P_tt, into [32][D+8] over
  // the dedicated stage (free once every warp is past its last stage); float2 stores of a
  // half warp: rows g (x (D+8) = 8 mod 32 banks) and column pairs 2 q4: 32 distinct banks
  __syncthreads();
  float* sout = sst;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = mt * 16 + g + hf * 8;
      const float dex = __expf(sbl[r]) * sqz[r] + srow[r];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int j = jw + nt * 8 + 2 * q4;
        float2 o;
        o.x = acc[mt][nt][2 * hf] - dex * __bfloat162float(sv[r * kLV + j]);
        o.y = acc[mt][nt][2 * hf + 1] - dex * __bfloat162float(sv[r * kLV + j + 1]);
        *reinterpret_cast<float2*>(sout + r * kLO + j) = o;
      }
    }
  if (tid < kC) sout[tid * kLO + kD] = __expf(sbl[tid]) * sqz[tid] + srow[tid] + sdiag[tid];
  __syncthreads();
  // the chunk's n rows of numden are contiguous: consecutive lanes, consecutive floats
  float* nd = numden + row0 * kD1;
  for (int i = tid; i < n * kD1; i += kThreads) {
    const int r = i / kD1;
    nd[i] = sout[r * kLO + (i - r * kD1)];
  }
}

template <int kD, bool kSplit>
void launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo, const bf* v,
            const float* bl, const float* states, float* numden, const Dims& d, cudaStream_t s) {
  const size_t sm = out_mma_layout(2 * d.F, kD, p_parts<kD>()).total(kSplit);
  auto kernel = out_mma_kernel<kD, kSplit>;
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)) ==
               cudaSuccess,
           "lizard attention (CUDA): cannot grant ", sm, " bytes of shared memory to the output kernel");
  pdl_launch("lizard output kernel", kernel, dim3(d.NC, d.B * d.H), out_warps<kD>() * 32, sm, s,
             phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, d);
}

template <int kD>
void launch_d(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo, const bf* v,
              const float* bl, const float* states, float* numden, bool split, const Dims& d,
              cudaStream_t s) {
  if (split) launch<kD, true>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, d, s);
  else launch<kD, false>(phiq, nullptr, phik, nullptr, v, bl, states, numden, d, s);
}

}  // namespace

bool out_wmma_forced() { return env_switch("LIZARD_OUT_KERNEL", "mma", "wmma"); }

bool out_mma_selected(const Dims& d) {
  // the largest CTA, training at D = 128, 2F = 256, takes 107 KiB (two per SM)
  const bool forced = out_wmma_forced();  // first: a bad value is an error at every shape
  return !forced && (d.D == 32 || d.D == 64 || d.D == 128) && d.F % 16 == 0 && 2 * d.F <= 256;
}

void out_mma_launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo,
                    const bf* v, const float* bl, const float* states, float* numden, bool split,
                    const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || (phiq_lo && phik_lo), "lizard attention (CUDA): the split output kernel needs phi's lo halves");
  // the state stages are copied in 16-byte pieces; the op allocates states itself (cudaMalloc:
  // 256-byte aligned), so this only guards a future caller passing a view
  LZ_CHECK(reinterpret_cast<uintptr_t>(states) % 16 == 0,
           "lizard attention (CUDA): the output kernel needs 16-byte aligned states");
  switch (d.D) {
    case 32: return launch_d<32>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    case 64: return launch_d<64>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    case 128: return launch_d<128>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    default: break;
  }
  throw Error("out_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
