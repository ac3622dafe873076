// Output kernel of the Lizard global branch (DESIGN.md section 3) on register-resident tensor
// cores (issue #5): the default behind out_tc_launch (contract in lizard_attention_tc.cuh),
// replacing out_tc_kernel of lizard_attention_tc.cu, which LIZARD_OUT_KERNEL=wmma still
// selects. Same inputs, same outputs (numden [B,H,T,D+1] = [M | den]), same maths and the
// same split products (training: hi*hi + lo*hi + hi*lo, in that order per k-step, as mma_acc
// of the wmma kernel issues them).
//
// Shape: one CTA per (b, h, chunk of 32 tokens), D/16 warps (2, 4 or 8 for D = 32, 64, 128).
//   1. cp.async: phi_q, phi_k (and their lo halves in training) [32][2F] and v [32][D] into
//      shared memory; meanwhile every lane starts loading its share of the f32 state
//      straight into registers (see 3).
//   2. P = phi_q phi_k^T on the three 16x16 tiles on or below the diagonal, one tile per warp
//      (the k range halved over two warps when there are 8), f32 into shared memory; then a
//      warp per row as in the wmma kernel: P~ = P exp(bl_t - bl_s) (s < t) as bf16 (hi + lo),
//      its row sum, the diagonal, phi_q.z, and phi_q exp(bl_t) rounded (split) in place.
//   3. Warp w owns value columns 16w .. 16w + 15 of all 32 rows (2 m-tiles x 2 n-tiles of
//      mma.sync m16n8k16, 16 f32 accumulators per lane). Its B operand, the state S, never
//      touches shared memory: each lane loads exactly the f32 elements of its B fragments
//      (rows 2q, 2q+1, 2q+8, 2q+9 of a k-step, column g of an n-tile: 4 rows x 32 contiguous
//      bytes per warp load; the neighbouring n-tile and warp read the rest of each 32-byte
//      sector, through L1), converts them to bf16 (hi + lo) in registers and feeds the mma;
//      a ring of 4 k-steps of loads (32 KiB per CTA) stays in flight ahead of the mma's.
//      4-byte loads, not 16: a row of the state is D + 1 floats, so three rows in four start
//      off a 16-byte boundary, and a lane's fragment elements lie in one column. So each state
//      element is read from HBM once, by one thread, and converted once; the CTA needs about
//      90 KiB of shared memory in training at 2F = 256, D = 128 (the wmma kernel: 221.5 KiB
//      with the whole bf16 S pair), so two CTAs share an SM and one's loads overlap the
//      other's mma's. The A operand (phi_q exp(bl_t)) comes by ldmatrix.
//   4. acc += P~ V (P~ by ldmatrix from its bf16 tile, V by ldmatrix.trans), then
//      M = acc - (exp(bl_t) phi_q.z + rowsum P~) v_t and den straight from the fragments.
// P is shared by the D/16 warps of a CTA (each needs all 32 x 32), so it goes through shared
// memory once instead of being recomputed per warp (at D = 128, 2F = 256 its 288 mma's are a
// fifth of the state product's 1536).
// Registers (nvcc 13, sm_90a, -Xptxas -v): 80 / 84 / 87 (inference, D = 128 / 64 / 32) and
// 100 / 100 / 98 (training), no spills; two CTAs per SM by __launch_bounds__ and shared memory
// (three in inference: 54.5 KiB at D = 128, 2F = 256).
//
// Precision: the same rounding points as the wmma kernel (P f32, P~ and phi_q exp(bl_t) and S
// as bf16 or split pairs, row sums of the rounded weights, phi_q.z and the diagonal in f32);
// only the f32 accumulation order inside the mma's can differ (P's k range in two halves
// summed at the end when there are 8 warps), so the split path agrees with the wmma kernel
// to f32 rounding of sums of up to 2F + 32 products (about 1e-6 relative) and inference to
// the same (its operands are rounded identically too).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

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
constexpr int kRing = 4;    // k-steps of state loads in flight per lane
constexpr int kLP = kC + 4;  // f32 P row stride (floats)
constexpr int kLPb = kC + 8;  // bf16 P~ row stride: 80 bytes, 16-byte aligned rows for ldmatrix
constexpr int kUnits = 3;     // 16x16 P tiles on or below the diagonal: (0,0), (1,0), (1,1)

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

__host__ __device__ constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/// Byte sizes of the shared-memory regions (host and device agree through this one function).
struct OutMmaLayout {
  size_t phi, v, p, pb, z, row;
  __host__ __device__ size_t total(bool split) const {
    return phi * (split ? 4 : 2) + v + p + pb * (split ? 2 : 1) + z + 4 * row;
  }
};
__host__ __device__ inline OutMmaLayout out_mma_layout(int F2, int D, int parts) {
  OutMmaLayout l;
  l.phi = al128(sizeof(bf) * kC * (F2 + 8));         // [32][2F] phi tile, +16 bytes per row
  l.v = al128(sizeof(bf) * kC * (D + 8));            // [32][D] v
  l.p = al128(sizeof(float) * parts * kC * kLP);     // [parts][32][32] f32 P
  l.pb = al128(sizeof(bf) * kC * kLPb);              // [32][32] bf16 P~ (and its lo half)
  l.z = al128(sizeof(float) * F2);                   // z, the state's last column
  l.row = al128(sizeof(float) * kC);                 // bl, row sum, diagonal, phi_q.z
  return l;
}

/// Next region of `bytes` (already 128-rounded) from the shared-memory cursor.
__device__ __forceinline__ char* take(char*& p, size_t bytes) {
  char* r = p;
  p += bytes;
  return r;
}

/// 32 rows of `cols` bf16 (cols a multiple of 8; row r at src + r * gstride) into shared rows
/// of ld `ldd` by cp.async; rows >= valid become zeros.
template <int kThreads>
__device__ __forceinline__ void cp_rows(bf* dst, int ldd, const bf* src, int64_t gstride,
                                        int valid, int cols) {
  const int vpr = cols / 8;
  for (int i = threadIdx.x; i < kC * vpr; i += kThreads) {
    const int r = i / vpr, c = (i % vpr) * 8;
    const uint32_t a = smem_u32(dst + r * ldd + c);
    if (r < valid) cp_async16_u32(a, src + r * gstride + c);
    else st_shared_zero16(a);
  }
}

/// This lane's B-fragment elements of state k-step ks (rows 16 ks + {2q, 2q+1, 2q+8, 2q+9},
/// columns g and g + 8 of the warp's 16): `sl` points at row 2q, column 16 w + g.
template <int kD1>
__device__ __forceinline__ void load_state_step(float (&r)[8], const float* sl, int ks) {
  const float* p = sl + int64_t(ks) * 16 * kD1;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    r[nt * 4 + 0] = __ldg(p + nt * 8);
    r[nt * 4 + 1] = __ldg(p + kD1 + nt * 8);
    r[nt * 4 + 2] = __ldg(p + 8 * kD1 + nt * 8);
    r[nt * 4 + 3] = __ldg(p + 9 * kD1 + nt * 8);
  }
}

/// bf16 hi and (kSplit) lo = bf16(x - hi) of two values, packed as a B-fragment register (the
/// first value, the lower k, in the low half).
template <bool kSplit>
__device__ __forceinline__ void split_pack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const bf h0 = __float2bfloat16(x0), h1 = __float2bfloat16(x1);
  hi = pack_bf16(h0, h1);
  if constexpr (kSplit)
    lo = pack_bf16(__float2bfloat16(x0 - __bfloat162float(h0)),
                     __float2bfloat16(x1 - __bfloat162float(h1)));
}

/// Grid (NC, B*H), out_warps<kD>() warps. Contract: out_tc_launch (numden = [M | den] per
/// row of the chunk, M = (phi_q e^{bl_t}) S + P~ V - (e^{bl_t} phi_q.z + rowsum P~) v_t,
/// den = e^{bl_t} phi_q.z + rowsum P~ + P_tt). kSplit: phi_q, phi_k as hi + lo pairs (phiq_lo,
/// phik_lo), P~, phi_q e^{bl_t} and S split too (training); else bf16 operands (inference).
template <int kD, bool kSplit>
__global__ void __launch_bounds__(out_warps<kD>() * 32, 2)
    out_mma_kernel(const bf* __restrict__ phiq, const bf* __restrict__ phiq_lo,
                   const bf* __restrict__ phik, const bf* __restrict__ phik_lo,
                   const bf* __restrict__ v, const float* __restrict__ bl_all,
                   const float* __restrict__ states, float* __restrict__ numden, Dims d) {
  constexpr int kWarps = out_warps<kD>(), kThreads = kWarps * 32, kD1 = kD + 1;
  constexpr int kParts = p_parts<kD>(), kLV = kD + 8;
  extern __shared__ __align__(128) char smem[];
  const int F2 = 2 * d.F, LQ = F2 + 8, nks = F2 / 16;  // F % 16 == 0: nks even
  const OutMmaLayout L = out_mma_layout(F2, kD, kParts);
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(take(cur, L.phi));   // phi_q, then phi_q e^{bl_t} (hi)
  bf* sk = reinterpret_cast<bf*>(take(cur, L.phi));   // phi_k
  bf* sql = kSplit ? reinterpret_cast<bf*>(take(cur, L.phi)) : nullptr;  // lo of the above
  bf* skl = kSplit ? reinterpret_cast<bf*>(take(cur, L.phi)) : nullptr;  // phi_k lo
  bf* sv = reinterpret_cast<bf*>(take(cur, L.v));
  float* sP = reinterpret_cast<float*>(take(cur, L.p));
  bf* sPh = reinterpret_cast<bf*>(take(cur, L.pb));
  bf* sPl = kSplit ? reinterpret_cast<bf*>(take(cur, L.pb)) : nullptr;
  float* sz = reinterpret_cast<float*>(take(cur, L.z));
  float* sbl = reinterpret_cast<float*>(take(cur, L.row));
  float* srow = reinterpret_cast<float*>(take(cur, L.row));
  float* sdiag = reinterpret_cast<float*>(take(cur, L.row));
  float* sqz = reinterpret_cast<float*>(take(cur, L.row));

  const int c = blockIdx.x, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int t0 = c * kC, n = min(kC, d.T - t0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t row0 = int64_t(bh) * d.T + t0;  // row of token t0 in [B,H,T,*]

  // 1. the tiles by cp.async (one group), the first kRing k-steps of S into registers
  cp_rows<kThreads>(sq, LQ, phiq + row0 * F2, F2, n, F2);
  cp_rows<kThreads>(sk, LQ, phik + row0 * F2, F2, n, F2);
  if constexpr (kSplit) {
    cp_rows<kThreads>(sql, LQ, phiq_lo + row0 * F2, F2, n, F2);
    cp_rows<kThreads>(skl, LQ, phik_lo + row0 * F2, F2, n, F2);
  }
  cp_rows<kThreads>(sv, kLV, v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * kD,
                    int64_t(d.Hkv) * kD, n, kD);
  cp_async_commit();
  const float* so = states + (int64_t(bh) * d.NC + c) * F2 * kD1;  // contiguous [2F][D+1]
  const int jw = warp * 16;                                         // the warp's first column
  const float* sl = so + (2 * q4) * kD1 + jw + g;
  float ring[kRing][8];
#pragma unroll
  for (int u = 0; u < kRing; ++u)
    if (u < nks) load_state_step<kD1>(ring[u], sl, u);
  for (int f = tid; f < F2; f += kThreads) sz[f] = so[int64_t(f) * kD1 + kD];
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  for (int i = tid; i < kC; i += kThreads) sbl[i] = i < n ? blr[t0 + i] : 0.f;
  cp_async_wait<0>();
  __syncthreads();

  // 2a. P on the tiles on or below the diagonal; item = (tile, part of the k range)
  {
    const int kper = nks / kParts;
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

  // 2b. per row (one warp, lane = key s): the decayed strictly-causal P~ in bf16 (split: and
  // its lo half) and its row sum from the same rounded weights as the mma (M consistent),
  // the diagonal, phi_q.z; then phi_q scaled by exp(bl_t) in place (the A operand of 3)
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
    auto phq = [&](int f) {  // phi_q's f32 value (hi + lo in training)
      float ph = __bfloat162float(sq[r * LQ + f]);
      if constexpr (kSplit) ph += __bfloat162float(sql[r * LQ + f]);
      return ph;
    };
    for (int f = lane; f < F2; f += 32) qz += phq(f) * sz[f];
    rs = warp_sum(rs);
    qz = warp_sum(qz);
    __syncwarp();
    const float er = __expf(sbl[r]);
    for (int f = lane; f < F2; f += 32) {  // each lane rewrites only the f it read
      const float qe = phq(f) * er;
      const bf hi = __float2bfloat16(qe);
      sq[r * LQ + f] = hi;
      if constexpr (kSplit) sql[r * LQ + f] = __float2bfloat16(qe - __bfloat162float(hi));
    }
    if (lane == 0) {
      srow[r] = rs;
      sdiag[r] = r < n ? pval(r) : 0.f;
      sqz[r] = qz;
    }
  }
  __syncthreads();

  // 3. acc = (phi_q e^{bl_t}) S over the k-steps, S from the register ring
  float acc[2][2][4] = {};  // [m-tile][n-tile][fragment]
  const int ao = (lane & 15) * LQ + (lane >> 4) * 8;
  for (int ks0 = 0; ks0 < nks; ks0 += kRing) {
#pragma unroll
    for (int u = 0; u < kRing; ++u) {
      const int ks = ks0 + u;
      if (ks >= nks) break;
      uint32_t bhi[2][2], blo[2][2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        split_pack<kSplit>(ring[u][nt * 4 + 0], ring[u][nt * 4 + 1], bhi[nt][0], blo[nt][0]);
        split_pack<kSplit>(ring[u][nt * 4 + 2], ring[u][nt * 4 + 3], bhi[nt][1], blo[nt][1]);
      }
      if (ks + kRing < nks) load_state_step<kD1>(ring[u], sl, ks + kRing);
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

  // M = acc - dex v_t (dex: den without the self pair); den = dex + P_tt (one thread a row)
  float* nd = numden + row0 * kD1;  // the chunk's n rows are contiguous
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = mt * 16 + g + hf * 8;
      if (r >= n) continue;
      const float dex = __expf(sbl[r]) * sqz[r] + srow[r];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int j = jw + nt * 8 + 2 * q4;
        nd[r * kD1 + j] = acc[mt][nt][2 * hf] - dex * __bfloat162float(sv[r * kLV + j]);
        nd[r * kD1 + j + 1] = acc[mt][nt][2 * hf + 1] - dex * __bfloat162float(sv[r * kLV + j + 1]);
      }
    }
  if (tid < n) nd[tid * kD1 + kD] = __expf(sbl[tid]) * sqz[tid] + srow[tid] + sdiag[tid];
}

template <int kD, bool kSplit>
void launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo, const bf* v,
            const float* bl, const float* states, float* numden, const Dims& d, cudaStream_t s) {
  const size_t sm = out_mma_layout(2 * d.F, kD, p_parts<kD>()).total(kSplit);
  auto kernel = out_mma_kernel<kD, kSplit>;
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)) ==
               cudaSuccess,
           "lizard attention (CUDA): cannot grant ", sm, " bytes of shared memory to the output kernel");
  kernel<<<dim3(d.NC, d.B * d.H), out_warps<kD>() * 32, sm, s>>>(phiq, phiq_lo, phik, phik_lo, v,
                                                                 bl, states, numden, d);
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
  // the largest CTA, training at D = 128, 2F = 256, takes 90 KiB (two per SM)
  const bool forced = out_wmma_forced();  // first: a bad value is an error at every shape
  return !forced && (d.D == 32 || d.D == 64 || d.D == 128) && d.F % 16 == 0 && 2 * d.F <= 256;
}

void out_mma_launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo,
                    const bf* v, const float* bl, const float* states, float* numden, bool split,
                    const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || (phiq_lo && phik_lo), "lizard attention (CUDA): the split output kernel needs phi's lo halves");
  switch (d.D) {
    case 32: return launch_d<32>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    case 64: return launch_d<64>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    case 128: return launch_d<128>(phiq, phiq_lo, phik, phik_lo, v, bl, states, numden, split, d, s);
    default: break;
  }
  throw Error("out_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
