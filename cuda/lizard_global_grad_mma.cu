// Global-branch gradient of the Lizard attention on register-resident tensor cores (issue #5):
// the default behind grad_tc_launch (contract in lizard_attention_tc.cuh), replacing
// grad_tc_kernel of lizard_attention_tc.cu, which LIZARD_GRAD_KERNEL=wmma still selects.
// Same inputs (a grid of two CTAs per (chunk, b*h) by default, below), same formulas and the same split
// products (hi*hi + lo*hi + hi*lo) wherever grad_tc_kernel has them; read its doc comment for
// the maths. What changes is where the data lives:
//   - the f32 states [S|z] and dstates [dS|dz] (128 KiB each at 2F = 256, D = 128, the bulk
//     of the kernel's traffic) are read ONCE, straight from global memory into the registers
//     of mma.sync B fragments (thread t of a warp holds row t/4, columns 4(t%4) .. +3 of an
//     8x16 block, one 16-byte load: each load instruction of a warp reads 16 whole 32-byte
//     sectors, the S rows being kD floats, aligned, in state_index's layout; those columns
//     are the k slots 2(t%4), +1, +8, +9 of the mma, and the A tiles are stored in that k
//     order: slot_of), split
//     into bf16 hi + lo there, and the next 16 (8 warps: 32) columns are in flight while the
//     current ones feed the mma's (each register set refilled as soon as it has been split),
//     with an L2 prefetch two blocks further ahead. The wmma kernel read each state three
//     times (hi pass, lo pass, the <dX, X> dot product) through shared memory.
//   - warp w owns the state rows (features) f in [8 kNT w, 8 kNT (w + 1)) of its CTA's: the
//     products dO' S^T (dphi_q) and v dS^T (dphi_k) accumulate in registers over the D
//     columns and take their row factors e^b, e^(b_end - b) after (f32), L_c = <dX, X> is
//     summed from the same f32 registers, and only dS's bf16 hi half goes to shared memory
//     (the B operand of dv's inter-chunk term).
//   - by default two CTAs share a chunk, each 2F / 2 of the features (their state rows, phi
//     columns, dphi columns, and their parts of dv, Q_r, K_s, L_c), launched as a cluster of
//     two: each computes kk over its own features and reads the other's partial through
//     distributed shared memory (kk = kk_0 + kk_1 in both); both compute the other C x C
//     tiles. 112.6 KiB of shared memory and <= 128 registers at 8 warps: two CTAs per SM, so
//     one's state streaming overlaps the other's C x C, elementwise and dv phases (one CTA of
//     16 warps had them in sequence).
//   - the C x C tiles (kk, X = dO' V^T) are small at C = 32: one mma tile per warp, then the
//     elementwise step of grad_tc_kernel through shared memory unchanged (E, P, w dA f32).
// Shapes: D in {64, 128}, 2F a multiple of 32 up to 256 (kNT = 1 or 2 n-tiles of 8 features
// per warp by default and at mma16, 1, 2 or 4 at mma8); grad_mma_selected says when, everything else keeps
// the wmma kernel.
// Precision: the operands of grad_tc_kernel, so the same error budget (its comment and the
// file header of lizard_attention_tc.cu): f32 sums in another order, except that the state
// products' row factors multiply f32 sums rather than split bf16 operands (reasoned at the
// state loop: no term gets worse).
// Speed (issue #5; latency- and issue-bound): two CTAs of 8 warps per SM (above;
// LIZARD_GRAD_KERNEL=mma16 keeps the one-CTA 16-warp shape, mma8 the 8-warp one, for A/B
// timing), per-row exp factors computed once (sEb, sEk), bf16 splits in paired conversions,
// element loops without index division (runtime 2F), the kk / X and dv mma chains split over
// independent accumulators.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

using bf = __nv_bfloat16;

constexpr int kC = kChunk;  // 32 tokens: two 16-row m-tiles
static_assert(kC == 32, "the gradient mma kernel tiles a chunk as two 16-row m-tiles");
constexpr int kLP = kC + 4;  // f32 C x C tiles: row stride (floats)
constexpr int kLPb = kC + 8; // bf16 C x C tiles: row stride (elements), 80 bytes

__host__ __device__ constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/// Next region of `bytes` from the shared-memory cursor, 128-byte aligned.
__device__ __forceinline__ char* carve(char*& p, size_t bytes) {
  char* r = p;
  p += al128(bytes);
  return r;
}

// ldmatrix variants this file needs beyond mma_util.cuh's x4 (two 8x8 matrices: lanes 0-15
// give the row addresses). The "memory" clobber keeps them in program order with the plain
// shared stores around them.
__device__ __forceinline__ void ldsm_x2_t(uint32_t& r0, uint32_t& r1, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_m(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_tm(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}

// Fragment loads by the storage of the operand (ld in elements; lane = 8 i + r below):
/// A (16x16) at rows m0.., columns k0.. of a row-major A.
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const bf* A, int ld, int m0, int k0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4_m(a, A + (m0 + (i & 1) * 8 + r) * ld + k0 + (i >> 1) * 8);
}
/// A (16x16) = X^T at rows m0.., columns k0.., X stored row-major as [k][m].
__device__ __forceinline__ void frag_at(uint32_t (&a)[4], const bf* X, int ld, int m0, int k0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4_tm(a, X + (k0 + (i >> 1) * 8 + r) * ld + m0 + (i & 1) * 8);
}
/// B of two n-tiles (16 k x 16 n) from N stored [n][k] row-major: b[0], b[1] the n-tile n0..,
/// b[2], b[3] the n-tile n0 + 8.
__device__ __forceinline__ void frag_b_nk(uint32_t (&b)[4], const bf* N, int ld, int n0, int k0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4_m(b, N + (n0 + (i >> 1) * 8 + r) * ld + k0 + (i & 1) * 8);
}
/// B of two n-tiles from M stored [k][n] row-major (same register order as frag_b_nk).
__device__ __forceinline__ void frag_b_kn(uint32_t (&b)[4], const bf* M, int ld, int k0, int n0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4_tm(b, M + (k0 + (i & 1) * 8 + r) * ld + n0 + (i >> 1) * 8);
}
/// B of one n-tile (16 k x 8 n) from M stored [k][n] row-major.
__device__ __forceinline__ void frag_b_kn1(uint32_t& b0, uint32_t& b1, const bf* M, int ld, int k0,
                                           int n0, int lane) {
  const int i = (lane >> 3) & 1, r = lane & 7;
  ldsm_x2_t(b0, b1, M + (k0 + i * 8 + r) * ld + n0);
}

/// Two f32 as packed bf16 hi and lo registers (lower column in the low half): hi = bf16(x),
/// lo = bf16(x - hi) of each, bit for bit split2 of lizard_attention_tc.cu (both round to
/// nearest even), in one paired conversion per half instead of two scalar ones plus a pack.
__device__ __forceinline__ void split_pack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
  const float2 hf = __bfloat1622float2(h);
  const __nv_bfloat162 l = __floats2bfloat162_rn(x0 - hf.x, x1 - hf.y);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = *reinterpret_cast<const uint32_t*>(&l);
}
/// The packed bf16 pair at p (4-byte aligned) as two f32.
__device__ __forceinline__ float2 ld_pair(const bf* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
/// Stores a packed pair (from split_pack) at p (4-byte aligned).
__device__ __forceinline__ void st_pair(bf* p, uint32_t x) { *reinterpret_cast<uint32_t*>(p) = x; }

/// The k order of the state products (issue #5): a lane reads columns 4q .. 4q + 3 of a
/// 16-column block of S or dS with one 16-byte load (q = lane % 4), and those feed the mma k
/// slots 2q, 2q + 1 (b0) and 2q + 8, 2q + 9 (b1) of its B fragment. Every tile whose columns
/// are that k index (dO' hi and lo, v, dS hi) is stored in the same order: column
/// a = 16 blk + 4q + 2h + e (h, e in {0, 1}) at slot 16 blk + 8h + 2q + e. Any permutation of
/// k is the same sum, A and B agreeing; a pair (a, a + 1), a even, keeps adjacent slots.
__host__ __device__ __forceinline__ constexpr int slot_of(int a) {
  return (a & ~15) | (((a >> 1) & 1) << 3) | (((a >> 2) & 3) << 1) | (a & 1);
}
/// The inverse: the column at slot p.
__host__ __device__ __forceinline__ constexpr int col_of(int p) {
  return (p & ~15) | (((p >> 1) & 3) << 2) | (((p >> 3) & 1) << 1) | (p & 1);
}
static_assert(slot_of(0) == 0 && slot_of(2) == 8 && slot_of(4) == 2 && slot_of(7) == 11 &&
                  slot_of(13) == 7 && slot_of(31) == 31 && col_of(slot_of(22)) == 22 &&
                  col_of(9) == 3 && col_of(6) == 12,
              "slot_of, col_of: the k order of the state products and its inverse");

/// Copies `rows` rows of n bf16 (n a multiple of 8; row r at src + r * gstride, 16-byte
/// aligned) into shared rows of ld `ldd` by cp.async; rows >= valid become zeros. A warp per
/// row, 8 elements a lane: no index division (n is a runtime value). kWarps: of the CTA.
template <int kWarps>
__device__ __forceinline__ void cp_rows(bf* dst, int ldd, const bf* src, int64_t gstride, int rows,
                                        int valid, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rows; r += kWarps)
    for (int c = lane * 8; c < n; c += 32 * 8) {
      if (r < valid) cp_async16(dst + r * ldd + c, src + r * gstride + c);
      else *reinterpret_cast<uint4*>(dst + r * ldd + c) = make_uint4(0, 0, 0, 0);
    }
}

/// Shared-memory bytes of the kernel for d when kZ CTAs split the 2F features of a chunk (the
/// layout carved in grad_mma_kernel). D = 128, 2F = 256: 175 KiB at kZ = 1; 115,328 bytes
/// (112.6 KiB) at kZ = 2, two CTAs per SM: each may have 233,472 / 2 - 1,024 = 115,712 bytes
/// (228 KiB an SM, 1 KiB the runtime reserves per CTA), 384 to spare.
size_t grad_mma_smem(const Dims& d, int kZ) {
  const size_t F2z = 2 * d.F / kZ, LQ = F2z + 8, LV = d.D + 8;
  return 4 * al128(2 * kC * LQ) +        // phi_q, phi_q lo, phi_k, phi_k lo (the CTA's features)
         3 * al128(2 * kC * LV) +        // v, dO' hi/lo
         al128(2 * F2z * LV) +           // dS hi (the CTA's features)
         2 * al128(4 * kC * kLP) +       // kk (at kZ = 2 this CTA's partial), X
         // w dA: in kk's place at kZ = 1; at kZ = 2 its own C x C (the partner CTA reads this
         // CTA's partial kk while this one writes w dA)
         (kZ == 2 ? al128(4 * kC * kC) : 0) +
         2 * al128(2 * kC * kLPb) +      // E, P
         8 * al128(4 * kC) + al128(4);   // bl, den, cself, da, Q_r, K_s, e^b, e^(bend-b); L_c
}

// Thread-block clusters (sm_90; PTX ISA "barrier.cluster", "mapa", "ld.shared::cluster"): the
// kZ = 2 kernel runs each chunk's two CTAs as one cluster of 2 and exchanges the partial kk
// through distributed shared memory. The barriers are split: every thread of both CTAs arrives
// (release: its earlier shared-memory accesses, local or remote, are ordered before) and later
// waits (acquire: sees what every thread of the cluster did before arriving). The "memory"
// clobbers keep the compiler from moving shared-memory accesses across them.
/// Arrives at the cluster barrier (release).
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive;\n" ::: "memory"); }
/// Waits for every thread of the cluster to have arrived (acquire).
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait;\n" ::: "memory"); }
/// The shared::cluster address of the shared-memory address `addr` (this CTA's) in the CTA of
/// cluster rank `rank`: the same offset in that CTA's shared memory (the same carve).
__device__ __forceinline__ uint32_t map_shared_rank(uint32_t addr, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
/// The f32 at a shared::cluster address (another CTA's shared memory: distributed shared memory).
__device__ __forceinline__ float ld_shared_cluster(uint32_t addr) {
  float x;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(x) : "r"(addr) : "memory");
  return x;
}

/// grad_tc_kernel's contract (see its comment), on mma.sync. kD: the head dim; kNT: n-tiles
/// of 8 state rows per warp (2F / kZ <= 8 kNT kW); kW: warps of the CTA; kZ: CTAs per chunk,
/// each owning 2F / kZ of the features (state rows; blockIdx.x = kZ c + z). Shapes:
///   kZ = 2, kW = 8 (the default): two CTAs per SM (<= 113 KiB of shared memory, <= 128
///     registers), so one CTA's state streaming runs beside the other's C x C and elementwise
///     phases; both compute X, E, P (the C x C work, small), the z = 0 CTA alone adds the
///     intra-chunk da and dv terms, each its features' dphi, dv and da state terms. The two
///     CTAs of a chunk (z = 0, 1: consecutive in x) must be launched as one cluster of 2
///     (cluster rank = z; launch does): kk = phi_q phi_k^T sums over all 2F features, so
///     each CTA computes kk_z over its own features only, and both form kk = kk_0 + kk_1 (one
///     f32 addition, commutative: the same bits in both) reading the partner's kk_z from its shared memory;
///   kZ = 1, kW = 16 (LIZARD_GRAD_KERNEL=mma16, the previous default: 4 warps per scheduler
///     at 1 CTA per SM) and kW = 8 (mma8, up to 255 registers), kept for A/B timing.
/// kDv false (dv null: stage-1 distillation wants no dv, issue #11): none of the work whose
/// only output is dv runs (the bf16 P tile, dS hi to shared memory, the decayed phi_k, the dv
/// mma's and atomics); dphi_q, dphi_k and da are the same operations in the same order, so
/// the same bits.
template <int kD, int kNT, int kW, int kZ, bool kDv>
__global__ void __launch_bounds__(kW * 32, kZ == 2 ? 2 : 1)
    grad_mma_kernel(const bf* __restrict__ phiq, const bf* __restrict__ phiq_lo,
                    const bf* __restrict__ phik, const bf* __restrict__ phik_lo,
                    const bf* __restrict__ v, const float* __restrict__ bl_all,
                    const float* __restrict__ states, const float* __restrict__ dstates,
                    const float* __restrict__ dO, const float* __restrict__ cself,
                    float* __restrict__ dphiq, float* __restrict__ dphik, float* __restrict__ dv,
                    float* __restrict__ db, Dims d) {
  pdl_enter();
  extern __shared__ __align__(128) char smem[];
  static_assert(kW == 8 || kW == 16, "8 or 16 warps (kk / X take warps 0-7; C a multiple)");
  static_assert(kZ == 1 || kZ == 2, "the features of a chunk in one or two CTAs");
  constexpr int kWarps = kW, kThreads = kW * 32;
  constexpr int C = kC, D1 = kD + 1, LV = kD + 8, KJ = kD / 16;
  // F2: the state rows in global memory; F2z of them, from fz0 on, are this CTA's (the phi
  // tiles and sdS hold those only: local feature index = global - fz0)
  const int F2 = 2 * d.F, F2z = F2 / kZ, LQ = F2z + 8;
  char* cur = smem;
  bf* sq = reinterpret_cast<bf*>(carve(cur, 2 * C * LQ));
  bf* sql = reinterpret_cast<bf*>(carve(cur, 2 * C * LQ));
  bf* sk = reinterpret_cast<bf*>(carve(cur, 2 * C * LQ));  // phi_k; phi_k e^(bend-b) for dv last
  bf* skl = reinterpret_cast<bf*>(carve(cur, 2 * C * LQ));
  bf* sv = reinterpret_cast<bf*>(carve(cur, 2 * C * LV));
  bf* sGb = reinterpret_cast<bf*>(carve(cur, 2 * C * LV));   // dO'[:D] hi
  bf* sGbl = reinterpret_cast<bf*>(carve(cur, 2 * C * LV));  // dO'[:D] lo
  bf* sdS = reinterpret_cast<bf*>(carve(cur, 2 * size_t(F2z) * LV));  // [2F/kZ][D] dS hi
  // kk (s <= t tiles); at kZ = 2 this CTA's partial kk_z, which the partner CTA reads too
  float* sP = reinterpret_cast<float*>(carve(cur, 4 * C * kLP));
  // X = dO'[:D] V^T; dead after the elementwise step, then the warps' partial Q_r, K_s
  // [kW][2][C] (sQK below)
  float* sGV = reinterpret_cast<float*>(carve(cur, 4 * C * kLP));
  // w dA, s < t, f32, row stride kWP. kZ = 1: in kk's place (the elementwise step reads kk at
  // an index, then writes w dA at the same index, in the same thread; nothing else reads kk).
  // kZ = 2: the partner may still be reading sP, so its own C x C (stride C: written and read
  // a row a warp, consecutive lanes consecutive columns, no bank conflict without padding;
  // 4 KiB, the 2-CTA budget has no room for kLP's 4.5)
  constexpr int kWP = kZ == 2 ? C : kLP;
  float* sW = kZ == 2 ? reinterpret_cast<float*>(carve(cur, 4 * C * C)) : sP;
  bf* sE = reinterpret_cast<bf*>(carve(cur, 2 * C * kLPb));
  bf* sPb = reinterpret_cast<bf*>(carve(cur, 2 * C * kLPb));
  float* sbl = reinterpret_cast<float*>(carve(cur, 4 * C));
  float* sden = reinterpret_cast<float*>(carve(cur, 4 * C));  // dO' column D
  float* scs = reinterpret_cast<float*>(carve(cur, 4 * C));   // cself
  float* sdb = reinterpret_cast<float*>(carve(cur, 4 * C));   // da of the rows
  float* sQs = reinterpret_cast<float*>(carve(cur, 4 * C));   // Q_r (inter, query)
  float* sKs = reinterpret_cast<float*>(carve(cur, 4 * C));   // K_s (inter, key)
  float* sEb = reinterpret_cast<float*>(carve(cur, 4 * C));   // exp(bl_t), 0 for rows >= n
  float* sEk = reinterpret_cast<float*>(carve(cur, 4 * C));   // exp(bend - bl_s), 0 for rows >= n
  float* sL = reinterpret_cast<float*>(carve(cur, 4));        // L_c (of this CTA's features)
  float* sQK = sGV;  // [kW][2][C]: the warps' parts of Q_r, K_s (sGV is dead by then)
  static_assert(2 * kW * kC <= kC * kLP, "the partial Q_r, K_s fit in sGV's place");

  const int z = kZ == 1 ? 0 : int(blockIdx.x) % kZ, c = int(blockIdx.x) / kZ;
  const int fz0 = z * F2z;
  const int bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int t0 = c * C, n = min(C, d.T - t0);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  const int64_t row0 = int64_t(bh) * d.T + t0;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;
  // the chunk's state and dstate blocks (state_index's layout: S rows of kD floats, then z)
  const float* Sg = states + state_chunk(bh, c, d.NC, kD, F2);
  const float* dSg = dstates + state_chunk(bh, c, d.NC, kD, F2);

  // This warp's state rows: n-tile i covers the local features [fb + 8 i, fb + 8 i + 8) (global
  // fz0 + those); this thread reads row fb + 8 i + g of each. Tiles past 2F / kZ are skipped.
  const int fb = warp * 8 * kNT;
  auto tile_ok = [&](int i) { return fb + 8 * i < F2z; };
  // The B-fragment values of columns kj*16 + 4q .. 4q + 3 of S and dS (k slots 2q, 2q + 1,
  // 2q + 8, 2q + 9: slot_of), issued as early as possible: kDepth column blocks in flight at
  // any time, each block's registers refilled with the block kDepth ahead as soon as they have
  // been split into bf16 pairs. One 16-byte load per row and matrix: the S rows are kD floats,
  // 128-byte aligned (the block is, 2F a multiple of 32), so a warp's load reads 64 bytes of
  // each of its 8 rows, 16 whole 32-byte sectors, each once (rows of D + 1 floats took four
  // 4-byte loads, each touching up to 16 sectors for 128 bytes).
  // mma8: two (s0/d0 the even blocks, s1/d1 the odd ones: ~245 registers); the <= 128
  // register shapes: one (more warps per scheduler hide the latency; two would spill).
  constexpr int kDepth = kW == 8 && kZ == 1 ? 2 : 1;
  float s0[kNT][4], d0[kNT][4], s1[kNT][4], d1[kNT][4];
  auto fetch = [&](int kj, float (&ns)[kNT][4], float (&nd)[kNT][4]) {
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      if (tile_ok(i)) {
        const int64_t o = state_s(fz0 + fb + 8 * i + g, kj * 16 + 4 * q, kD);
        // read once, by this CTA alone: streaming loads (evict-first), no L1 allocation worth
        // keeping (each 64-byte row piece is consumed by its 4 lanes in this instruction)
        const float4 s4 = __ldcs(reinterpret_cast<const float4*>(Sg + o));
        const float4 d4 = __ldcs(reinterpret_cast<const float4*>(dSg + o));
        ns[i][0] = s4.x, ns[i][1] = s4.y, ns[i][2] = s4.z, ns[i][3] = s4.w;
        nd[i][0] = d4.x, nd[i][1] = d4.y, nd[i][2] = d4.z, nd[i][3] = d4.w;
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) ns[i][e] = nd[i][e] = 0.f;
      }
    }
  };
  // ---- tiles of the chunk (rows >= n zero): issued first, as they are needed first (the
  // state blocks below only after the C x C work). The four phi tiles of this CTA's features
  // [fz0, fz0 + F2z) only (at kZ = 2 the partner's part of kk comes through the cluster).
  cp_rows<kWarps>(sq, LQ, phiq + row0 * F2 + fz0, F2, C, n, F2z);
  cp_rows<kWarps>(sql, LQ, phiq_lo + row0 * F2 + fz0, F2, C, n, F2z);
  cp_rows<kWarps>(sk, LQ, phik + row0 * F2 + fz0, F2, C, n, F2z);
  cp_rows<kWarps>(skl, LQ, phik_lo + row0 * F2 + fz0, F2, C, n, F2z);
  cp_async_commit();
  // v [C][kD] in the k order of slot_of: a lane loads 8 columns (16 bytes) of a row into
  // registers here and stores their 4 pairs at their slots with the dO' split below (the
  // pairs of a piece are not contiguous in slot order: no 16-byte cp.async)
  constexpr int kVU = kD / 8, kVPer = (C * kVU + kThreads - 1) / kThreads;
  uint4 vr[kVPer];
  {
    const bf* vs = v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * kD;
#pragma unroll
    for (int k = 0; k < kVPer; ++k) {
      const int i = tid + k * kThreads, r = i / kVU, u = i % kVU;
      vr[k] = make_uint4(0, 0, 0, 0);
      if (i < C * kVU && r < n)
        vr[k] = *reinterpret_cast<const uint4*>(vs + int64_t(r) * d.Hkv * kD + u * 8);
    }
  }
  const float bend = blr[t0 + n - 1];
  for (int i = tid; i < C; i += kThreads) {
    const float bli = i < n ? blr[t0 + i] : 0.f;
    sbl[i] = bli;
    sden[i] = i < n ? dO[(row0 + i) * D1 + kD] : 0.f;
    scs[i] = i < n ? cself[row0 + i] : 0.f;
    sdb[i] = 0.f;
    // the per-row factors every later step used to recompute per element (same values:
    // rows >= n are zero in every tile they multiply, so 0 there changes nothing)
    sEb[i] = i < n ? __expf(bli) : 0.f;
    sEk[i] = i < n ? __expf(bend - bli) : 0.f;
  }
  if (tid == 0) sL[0] = 0.f;
  // dO'[:D] split: warp w the rows w + kW k, a lane two adjacent columns per 64; every load
  // issued before the first split, and the first state blocks between them. The row stride
  // D + 1 is odd: a row whose start is 8-byte aligned (every other row, given an aligned
  // base) takes one 8-byte load per pair (j even), the others two 4-byte loads; the same
  // values either way. The test is per row, so warp-uniform (a row a warp).
  constexpr int kRW = C / kWarps, kPU = kD / 64;
  float gv[kRW][kPU][2];
  {
#pragma unroll
    for (int k = 0; k < kRW; ++k) {
      const int r = warp + kWarps * k;
      const float* row = dO + (row0 + r) * D1;
      const bool pair = reinterpret_cast<uintptr_t>(row) % 8 == 0;
#pragma unroll
      for (int u = 0; u < kPU; ++u) {
        const int j = 2 * lane + 64 * u;
        if (r >= n) {
          gv[k][u][0] = gv[k][u][1] = 0.f;
        } else if (pair) {
          const float2 x = *reinterpret_cast<const float2*>(row + j);
          gv[k][u][0] = x.x, gv[k][u][1] = x.y;
        } else {
          gv[k][u][0] = row[j], gv[k][u][1] = row[j + 1];
        }
      }
    }
  }
  // L2 prefetch of the line holding column blocks kb and kb + 1 (kb even) of this warp's S and
  // dS rows, a lane a row. A block is 64 bytes of a row of kD floats (128-byte aligned), so
  // blocks 2j and 2j + 1 share a 128-byte line, and a prefetch asks L2 for the whole line (ncu
  // counts 4 sectors per prefetch): one per line, from every other step of the column loop
  // (block 1 shares block 0's line, which the first loads ask for). The register loads of a
  // block are issued kDepth blocks ahead of its use; the prefetch two blocks ahead of those,
  // so they find the block in L2 rather than waiting on HBM. Measured (ncu, B = 1, T = 2048,
  // one H200): one prefetch per sector (4 a block: 58.7M of L2's 92.8M sectors) 471 us with
  // L2 81% busy; one per line 428 us, L2 74%; none 477 us. (ptxas then spills 8 bytes in the
  // kD = 64, dv instance, at its 128-register cap; kD = 128 uses 120 registers.)
  auto prefetch_block = [&](int kb) {  // kb even (its line holds block kb + 1 too)
#pragma unroll
    for (int rr = lane; rr < 8 * kNT; rr += 32) {
      if (fb + rr >= F2z) continue;
      const int64_t o = state_s(fz0 + fb + rr, kb * 16, kD);  // the line of blocks kb, kb ^ 1
      prefetch_l2(Sg + o), prefetch_l2(dSg + o);
    }
  };
  if (KJ > 2) prefetch_block(2);  // blocks kDepth, kDepth + 1: the line of 2 and 3 (kDepth 1, 2)
  fetch(0, s0, d0);
  if constexpr (kDepth == 2) fetch(1, s1, d1);
  // z and dz of this thread's feature columns fb + 8 i + 2q, +1 (read here to be in flight
  // with the rest; used after the D columns): one 8-byte load each from the blocks' z parts
  float zq[kNT][2], zk[kNT][2];
#pragma unroll
  for (int i = 0; i < kNT; ++i) {
    const int64_t o = state_z(kD, F2) + fz0 + fb + 8 * i + 2 * q;  // even: 8-byte aligned
    const float2 zs = tile_ok(i) ? __ldcs(reinterpret_cast<const float2*>(Sg + o)) : make_float2(0.f, 0.f);
    const float2 zd = tile_ok(i) ? __ldcs(reinterpret_cast<const float2*>(dSg + o)) : make_float2(0.f, 0.f);
    zq[i][0] = zs.x, zq[i][1] = zs.y;
    zk[i][0] = zd.x, zk[i][1] = zd.y;
  }
  {
#pragma unroll
    for (int k = 0; k < kRW; ++k) {
      const int r = warp + kWarps * k;
#pragma unroll
      for (int u = 0; u < kPU; ++u) {
        const int o = r * LV + slot_of(2 * lane + 64 * u);
        uint32_t hi, lo;
        split_pack(gv[k][u][0], gv[k][u][1], hi, lo);
        st_pair(sGb + o, hi), st_pair(sGbl + o, lo);
      }
    }
#pragma unroll
    for (int k = 0; k < kVPer; ++k) {
      const int i = tid + k * kThreads, r = i / kVU, u = i % kVU;
      if (i >= C * kVU) continue;
      const uint32_t w[4] = {vr[k].x, vr[k].y, vr[k].z, vr[k].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) st_pair(sv + r * LV + slot_of(u * 8 + 2 * e), w[e]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // ---- kk = phi_q phi_k^T (split: hi hi, lo hi, hi lo) and X = dO'[:D] V^T (dO' split):
  // warps 0-3 kk, 4-7 X; warp (w % 4) takes m-tile (w % 4) / 2 and the 16 keys (w % 2) * 16..,
  // none above the diagonal block (never read). At kZ = 2 over this CTA's features only: the
  // partial kk_z, summed with the partner's in the elementwise step (a pass over the other
  // CTA's features, 4 more phi tiles to load and 8 more k-steps on the kk warps' critical
  // path while the X warps wait, was the alternative).
  {
    const int mt = (warp & 3) >> 1, nb = warp & 1;
    const bool is_x = warp >= 4, cc_warp = warp < 8 && nb <= mt;
    // one accumulator per split product (hi hi, lo hi, hi lo), summed at the end: chains of
    // ks dependent mma's instead of 3 ks
    float acc[3][2][4] = {};
    auto cc_pass = [&]() {
      const bf *A = is_x ? sGb : sq, *Al = is_x ? sGbl : sql, *Bm = is_x ? sv : sk;
      const int lda = is_x ? LV : LQ, ks = is_x ? KJ : F2z / 16;
      for (int k = 0; k < ks; ++k) {
        uint32_t a[4], al[4], bb[4];
        frag_a(a, A, lda, mt * 16, k * 16, lane);
        frag_a(al, Al, lda, mt * 16, k * 16, lane);
        frag_b_nk(bb, Bm, lda, nb * 16, k * 16, lane);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          mma_bf16(acc[0][u], a, bb[2 * u], bb[2 * u + 1]);
          mma_bf16(acc[1][u], al, bb[2 * u], bb[2 * u + 1]);
        }
        if (!is_x) {  // phi_q hi x phi_k lo (V has no lo half)
          frag_b_nk(bb, skl, LQ, nb * 16, k * 16, lane);
#pragma unroll
          for (int u = 0; u < 2; ++u) mma_bf16(acc[2][u], a, bb[2 * u], bb[2 * u + 1]);
        }
      }
    };
    auto cc_store = [&]() {
      float* dst = is_x ? sGV : sP;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int col = nb * 16 + u * 8 + 2 * q, r = mt * 16 + g;
        float x[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) x[e] = acc[0][u][e] + acc[1][u][e] + acc[2][u][e];
        *reinterpret_cast<float2*>(dst + r * kLP + col) = make_float2(x[0], x[1]);
        *reinterpret_cast<float2*>(dst + (r + 8) * kLP + col) = make_float2(x[2], x[3]);
      }
    };
    if (cc_warp) {
      cc_pass();
      cc_store();
    }
  }
  // kZ = 2: the cluster barrier also orders this CTA's own threads (a superset of
  // __syncthreads): after it both CTAs' partials and X are complete and visible
  if constexpr (kZ == 2) {
    cluster_arrive();
    cluster_wait();
  } else {
    __syncthreads();
  }

  // ---- dA, E, P and the intra-chunk pair gradients w dA (f32, for da): grad_tc_kernel's step 3
  // kZ = 2: kk = kk_0 + kk_1, the partial of the z = 0 CTA (features [0, 2F/2)) plus that of
  // the z = 1 CTA, one f32 addition (commutative: the same bits in both CTAs, so E, P and w dA
  // agree between the two). The partner's four values of this thread are read first, all in flight at once
  // (distributed shared memory: higher latency than local), then this CTA arrives at the
  // cluster barrier whose wait ends the kernel: the partner, which waits there before it
  // exits, keeps its shared memory until these reads are done (and this CTA its own for the
  // partner's).
  constexpr int kEl = C * C / kThreads;
  static_assert(C * C % kThreads == 0, "the elementwise step: the same count of elements a thread");
  float kk_other[kEl];  // kZ = 2 only
  if constexpr (kZ == 2) {
    const uint32_t other = map_shared_rank(smem_u32(sP), uint32_t(z ^ 1));
#pragma unroll
    for (int k = 0; k < kEl; ++k) {
      const int i = tid + k * kThreads, r = i / C, s2 = i % C;
      // rows >= n and s > t are never used (and the partial is not written above the diagonal
      // blocks): read the written values only
      kk_other[k] = s2 <= r && r < n ? ld_shared_cluster(other + 4u * uint32_t(r * kLP + s2)) : 0.f;
    }
    cluster_arrive();
  }
#pragma unroll
  for (int k = 0; k < kEl; ++k) {
    const int i = tid + k * kThreads, r = i / C, s2 = i % C;
    float p = 0.f, ea = 0.f, wda = 0.f;
    if (s2 <= r && r < n) {
      const float own = sP[r * kLP + s2];
      const float kk = kZ == 1 ? own : own + kk_other[k];  // f32 + commutes: the same bits in both
      const float e = __expf(sbl[r] - sbl[s2]);
      // dA = cself_t + dO'_t.(v_s - v_t): exactly cself_t on the diagonal
      const float da = scs[r] + (s2 < r ? sGV[r * kLP + s2] - sGV[r * kLP + r] : 0.f);
      p = kk * e;
      ea = da * e;
      if (s2 < r) wda = kk * ea;
    }
    sE[r * kLPb + s2] = __float2bfloat16(ea);
    if constexpr (kDv) sPb[r * kLPb + s2] = __float2bfloat16(p);  // P: dv's intra-chunk term only
    sW[r * kWP + s2] = wda;
  }
  __syncthreads();

  // ---- the state products over the D columns, 16 at a time:
  //   aq = dO' S^T   (G hi S hi + G lo S hi + G hi S lo), times e^(bl_t) per row after the loop
  //   ak = v dS^T    (v dS hi + v dS lo: v is bf16, exact), times e^(bend - bl_s) per row after
  // and L_c = <S, dS> (f32, the D columns here, z below); dS hi to shared for dv.
  // Precision: grad_tc_kernel splits the scaled rows (dO' e^b, v e^(bend-b)) into hi + lo; here
  // the row factor multiplies the f32 sum instead (one f32 rounding, 2^-24), the operands are
  // the unscaled dO' hi + lo (the X pass's own tiles) and v itself. The dropped product of two
  // lo halves is 2^-16 relative in both; for ak the split of v e^(bend-b) had its own 2^-17
  // residual, which v exact removes: the error budget of the header holds, no term is worse.
  static_assert(KJ % 2 == 0, "with kDepth 2 the column blocks alternate between two register sets");
  float aq[2][kNT][4] = {}, ak[2][kNT][4] = {};
  float lsum = 0.f;
  // pf: this step asks L2 for block kj + kDepth + 2 (even)
  auto step = [&](int kj, float (&cs_)[kNT][4], float (&cd_)[kNT][4], bool pf) {
    uint32_t sh[kNT][2], sl[kNT][2], dh[kNT][2], dl[kNT][2];
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      if (!tile_ok(i)) continue;
#pragma unroll
      for (int e = 0; e < 4; ++e) lsum += cs_[i][e] * cd_[i][e];
      split_pack(cs_[i][0], cs_[i][1], sh[i][0], sl[i][0]);
      split_pack(cs_[i][2], cs_[i][3], sh[i][1], sl[i][1]);
      split_pack(cd_[i][0], cd_[i][1], dh[i][0], dl[i][0]);
      split_pack(cd_[i][2], cd_[i][3], dh[i][1], dl[i][1]);
      if constexpr (kDv) {  // dS hi in shared memory: the B operand of dv's inter-chunk term only
        bf* row = sdS + (fb + 8 * i + g) * LV + kj * 16 + 2 * q;
        st_pair(row, dh[i][0]);
        st_pair(row + 8, dh[i][1]);
      }
    }
    if (kj + kDepth < KJ) fetch(kj + kDepth, cs_, cd_);
    if (pf && kj + kDepth + 2 < KJ) prefetch_block(kj + kDepth + 2);
#pragma unroll
    for (int m = 0; m < 2; ++m) {  // the A fragments one m-tile at a time (16 registers live)
      uint32_t ag[4], agl[4], av[4];
      frag_a(ag, sGb, LV, m * 16, kj * 16, lane);
      frag_a(agl, sGbl, LV, m * 16, kj * 16, lane);
      frag_a(av, sv, LV, m * 16, kj * 16, lane);
#pragma unroll
      for (int i = 0; i < kNT; ++i) {
        if (!tile_ok(i)) continue;
        mma_bf16(aq[m][i], ag, sh[i][0], sh[i][1]);
        mma_bf16(aq[m][i], agl, sh[i][0], sh[i][1]);
        mma_bf16(aq[m][i], ag, sl[i][0], sl[i][1]);
        mma_bf16(ak[m][i], av, dh[i][0], dh[i][1]);
        mma_bf16(ak[m][i], av, dl[i][0], dl[i][1]);
      }
    }
  };
  // the prefetch of an even block from the step whose kj + kDepth + 2 is even: the first of
  // each pair at kDepth 2, the odd kj at kDepth 1
  if constexpr (kDepth == 2) {
    for (int kj = 0; kj < KJ; kj += 2) {
      step(kj, s0, d0, true);
      step(kj + 1, s1, d1, false);
    }
  } else {
    for (int kj = 0; kj < KJ; ++kj) step(kj, s0, d0, (kj & 1) != 0);
  }

  // ---- the row factors of the state products, the z columns: dphi_q += exp(bl_t) dO'_t[D] z,
  // dphi_k += exp(bend - bl_s) dz; the partial Q_r, K_s of this warp's features (f32, phi as
  // hi + lo), L_c's z part
#pragma unroll
  for (int i = 0; i < kNT; ++i)
    if (g == 0) lsum += zq[i][0] * zk[i][0] + zq[i][1] * zk[i][1];
  lsum = warp_sum(lsum);
  if (lane == 0) atomicAdd(sL, lsum);
#pragma unroll
  for (int m = 0; m < 2; ++m) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = m * 16 + g + 8 * hh;
      const float eq = sEb[r], wq = eq * sden[r];  // 0 for rows >= n
      const float wk = sEk[r];
      float qx = 0.f, kx = 0.f;
#pragma unroll
      for (int i = 0; i < kNT; ++i) {
        if (!tile_ok(i)) continue;
        const int o = r * LQ + fb + 8 * i + 2 * q;
        const float2 ph = ld_pair(sq + o), pl = ld_pair(sql + o);
        const float2 kh = ld_pair(sk + o), kl = ld_pair(skl + o);
        const float pq[2] = {ph.x + pl.x, ph.y + pl.y}, pk[2] = {kh.x + kl.x, kh.y + kl.y};
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& xq = aq[m][i][2 * hh + e];
          float& xk = ak[m][i][2 * hh + e];
          xq = xq * eq + wq * zq[i][e];
          xk = xk * wk + wk * zk[i][e];
          qx += pq[e] * xq;
          kx += pk[e] * xk;
        }
      }
      qx += __shfl_xor_sync(0xffffffffu, qx, 1);
      qx += __shfl_xor_sync(0xffffffffu, qx, 2);
      kx += __shfl_xor_sync(0xffffffffu, kx, 1);
      kx += __shfl_xor_sync(0xffffffffu, kx, 2);
      // this warp's parts of Q_r (the pairs of query r with every key before the chunk) and
      // K_s (key r with every query after it), summed over the warps after the next barrier
      // (a shared-memory float atomicAdd is a compare-and-swap loop; eight of them a lane,
      // contended by the 8 warps, were what these sums cost before)
      if (q == 0) {
        sQK[(warp * 2) * C + r] = qx;
        sQK[(warp * 2 + 1) * C + r] = kx;
      }
    }
  }

  // ---- dphi_q += E phi_k (phi_k hi + lo), dphi_k += E^T phi_q (phi_q hi + lo); K = C
#pragma unroll
  for (int kt = 0; kt < C / 16; ++kt) {
    uint32_t ae[2][4], aet[2][4];
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      frag_a(ae[m], sE, kLPb, m * 16, kt * 16, lane);
      frag_at(aet[m], sE, kLPb, m * 16, kt * 16, lane);
    }
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      if (!tile_ok(i)) continue;
      const int f0 = fb + 8 * i;
      uint32_t bk0, bk1, bkl0, bkl1, bq0, bq1, bql0, bql1;
      frag_b_kn1(bk0, bk1, sk, LQ, kt * 16, f0, lane);
      frag_b_kn1(bkl0, bkl1, skl, LQ, kt * 16, f0, lane);
      frag_b_kn1(bq0, bq1, sq, LQ, kt * 16, f0, lane);
      frag_b_kn1(bql0, bql1, sql, LQ, kt * 16, f0, lane);
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        mma_bf16(aq[m][i], ae[m], bk0, bk1);
        mma_bf16(aq[m][i], ae[m], bkl0, bkl1);
        mma_bf16(ak[m][i], aet[m], bq0, bq1);
        mma_bf16(ak[m][i], aet[m], bql0, bql1);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < 2; ++m) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = m * 16 + g + 8 * hh;
      if (r >= n) continue;
#pragma unroll
      for (int i = 0; i < kNT; ++i) {
        if (!tile_ok(i)) continue;
        const int64_t o = (row0 + r) * F2 + fz0 + fb + 8 * i + 2 * q;
        *reinterpret_cast<float2*>(dphiq + o) = make_float2(aq[m][i][2 * hh], aq[m][i][2 * hh + 1]);
        *reinterpret_cast<float2*>(dphik + o) = make_float2(ak[m][i][2 * hh], ak[m][i][2 * hh + 1]);
      }
    }
  }
  __syncthreads();
  // Q_r, K_s: the warps' parts in warp order (rows >= n are never read)
  if (tid < 2 * C) {
    const float* pq = sQK + (tid / C) * C + tid % C;
    float x = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) x += pq[w * 2 * C];
    (tid < C ? sQs : sKs)[tid % C] = x;
  }
  __syncthreads();

  // ---- da_t: every pair (t', s) with s < t <= t' (grad_tc_kernel's sum, same terms)
  // (lane s < t sums the column s of the rectangle t' in [t, n): no index division, and the
  // lanes of a warp read one shared row: no bank conflict). The intra-chunk pairs (w dA) once,
  // by the z = 0 CTA; Q_r, K_s and L_c are this CTA's features' parts (the da atomics sum them).
  const float ebend = __expf(bend);
  for (int r = warp; r < n; r += kWarps) {
    float acc = 0.f, acc2 = 0.f;
    if (lane < r) {
      int tp = z == 0 ? r : n;
      for (; tp + 1 < n; tp += 2) acc += sW[tp * kWP + lane], acc2 += sW[(tp + 1) * kWP + lane];
      if (tp < n) acc += sW[tp * kWP + lane];
      acc += sKs[lane];
    }
    if (r + lane < n) acc += sQs[r + lane];
    acc = warp_sum(acc + acc2);
    if (lane == 0) sdb[r] = acc + ebend * sL[0];
  }
  // phi_k exp(bl_end - bl_s) for dv: a warp per row, 8 features a lane (16-byte accesses)
  if constexpr (kDv) {
    for (int r = warp; r < C; r += kWarps) {
      const float e = sEk[r];
      for (int f = lane * 8; f < F2z; f += 32 * 8) {
        const uint4 hv = *reinterpret_cast<const uint4*>(sk + r * LQ + f);
        const uint4 lv = *reinterpret_cast<const uint4*>(skl + r * LQ + f);
        const uint32_t hw[4] = {hv.x, hv.y, hv.z, hv.w}, lw[4] = {lv.x, lv.y, lv.z, lv.w};
        uint32_t ow[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float2 h2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&hw[u]));
          const float2 l2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&lw[u]));
          const __nv_bfloat162 o2 = __floats2bfloat162_rn((h2.x + l2.x) * e, (h2.y + l2.y) * e);
          ow[u] = *reinterpret_cast<const uint32_t*>(&o2);
        }
        *reinterpret_cast<uint4*>(sk + r * LQ + f) = make_uint4(ow[0], ow[1], ow[2], ow[3]);
      }
    }
  }
  __syncthreads();  // sdb (and for dv the decayed phi_k) complete

  // ---- dv = P^T dO'[:D] (dO' hi) + (phi_k exp(bl_end - bl_s)) dS (dS hi): warp w takes the
  // 16 columns (w % (D/16)) * 16.. and every (kW / (D/16))-th of the k-steps (C/16 of P^T, the
  // z = 0 CTA only, then 2F/(16 kZ) of the state term, this CTA's features); partial sums go to
  // global by atomics like the rest.
  if constexpr (kDv) {
    constexpr int kJB = kD / 16, kGroups = kWarps / kJB;
    const int KP = z == 0 ? C / 16 : 0;  // the P^T k-steps of this CTA
    const int jb = warp % kJB, kg = warp / kJB, KS = KP + F2z / 16;
    // two k-steps per pass into two accumulator sets (both steps' fragments loaded before
    // their mma's: half the dependent chain, loads overlapped)
    float acc[2][2][2][4] = {};
    auto load = [&](int ks, uint32_t (&a)[2][4], uint32_t (&bb)[4]) {
      if (ks < KP) {
#pragma unroll
        for (int m = 0; m < 2; ++m) frag_at(a[m], sPb, kLPb, m * 16, ks * 16, lane);
        frag_b_kn(bb, sGb, LV, ks * 16, jb * 16, lane);
      } else {
        const int kf = ks - KP;
#pragma unroll
        for (int m = 0; m < 2; ++m) frag_a(a[m], sk, LQ, m * 16, kf * 16, lane);
        frag_b_kn(bb, sdS, LV, kf * 16, jb * 16, lane);
      }
    };
    for (int ks = kg; ks < KS; ks += 2 * kGroups) {
      const bool two = ks + kGroups < KS;
      uint32_t a[2][2][4], bb[2][4];
      load(ks, a[0], bb[0]);
      if (two) load(ks + kGroups, a[1], bb[1]);
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        if (p == 1 && !two) break;
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int u = 0; u < 2; ++u) mma_bf16(acc[p][m][u], a[p][m], bb[p][2 * u], bb[p][2 * u + 1]);
      }
    }
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = m * 16 + g + 8 * hh;
        if (r >= n) continue;
        // the n index (columns of dO' and dS) is in slot order: slots jb*16 + 8u + 2q, +1
        // are columns jb*16 + 4q + 2u, +1 (col_of)
        float* dst = dv + ((int64_t(b) * d.T + t0 + r) * d.Hkv + kvh) * kD + jb * 16 + 4 * q;
#pragma unroll
        for (int u = 0; u < 2; ++u) {  // adjacent columns: one 8-byte atomic (sm_90)
          const float2 x = make_float2(acc[0][m][u][2 * hh] + acc[1][m][u][2 * hh],
                                       acc[0][m][u][2 * hh + 1] + acc[1][m][u][2 * hh + 1]);
          atomicAdd(reinterpret_cast<float2*>(dst + 2 * u), x);
        }
      }
  }
  for (int r = tid; r < n; r += kThreads) atomicAdd(db + (int64_t(b) * d.Hg + gh) * d.T + t0 + r, sdb[r]);
  // kZ = 2: no exit before the partner has read this CTA's partial kk (it arrived after)
  if constexpr (kZ == 2) cluster_wait();
}

template <int kD, int kNT, int kW, int kZ>
void launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo, const bf* v,
            const float* bl, const float* states, const float* dstates, const float* dO,
            const float* cself, float* dphiq, float* dphik, float* dv, float* da, const Dims& d,
            cudaStream_t s) {
  const size_t sm = grad_mma_smem(d, kZ);
  // dv null: the instance without dv's work (the same shared-memory layout)
  auto* k = dv ? grad_mma_kernel<kD, kNT, kW, kZ, true> : grad_mma_kernel<kD, kNT, kW, kZ, false>;
  LZ_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)) == cudaSuccess,
           "lizard attention gradient (mma): cannot grant ", sm, " bytes of shared memory");
  // all of the unified L1 / shared storage as shared memory: two CTAs of kZ = 2 need
  // 2 x (112.6 + 1) KiB of the SM's 228 (a hint; the launch is correct with one CTA per SM too)
  LZ_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                int(cudaSharedmemCarveoutMaxShared)) == cudaSuccess,
           "lizard attention gradient (mma): cannot set the shared-memory carveout");
  const dim3 grid(d.NC * kZ, d.B * d.H);
  if constexpr (kZ == 1) {
    pdl_launch("lizard attention gradient (mma)", k, grid, kW * 32, sm, s, phiq, phiq_lo, phik,
               phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d);
  } else {
    // the kernel's contract at kZ = 2: a chunk's two CTAs (x = 2c, 2c + 1) one cluster, in
    // which x % 2 is the CTA's rank (a cluster spans consecutive x)
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(kW * 32);
    cfg.dynamicSmemBytes = sm;
    cfg.stream = s;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kZ;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1] = pdl_attribute();  // the kernel begins with pdl_enter (pdl.cuh)
    cfg.attrs = attr;
    cfg.numAttrs = 2;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, k, phiq, phiq_lo, phik, phik_lo, v, bl, states,
                                             dstates, dO, cself, dphiq, dphik, dv, da, d);
    LZ_CHECK(e == cudaSuccess, "lizard attention gradient (mma): cluster launch of ", grid.x, " x ",
             grid.y, " CTAs (clusters of ", kZ, ", ", sm, " bytes of shared memory each) failed: ",
             cudaGetErrorString(e));
  }
}

/// The shape LIZARD_GRAD_KERNEL asks of grad_mma_kernel: "mma8" (8 warps, one CTA per chunk,
/// up to 255 registers), "mma16" (16 warps, one CTA per chunk: the default before the feature
/// split), anything else the default (kZ = 2). Read per call, like grad_wmma_forced.
enum class MmaShape { kSplit, kW16, kW8 };
MmaShape grad_mma_shape() {
  const char* e = std::getenv("LIZARD_GRAD_KERNEL");
  if (!e) return MmaShape::kSplit;
  const std::string v(e);
  return v == "mma8" ? MmaShape::kW8 : v == "mma16" ? MmaShape::kW16 : MmaShape::kSplit;
}

template <int kD>
void launch_d(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo, const bf* v,
              const float* bl, const float* states, const float* dstates, const float* dO,
              const float* cself, float* dphiq, float* dphik, float* dv, float* da, const Dims& d,
              cudaStream_t s) {
  const int F2 = 2 * d.F;
  switch (grad_mma_shape()) {
    case MmaShape::kW8:
      if (F2 <= 64)
        return launch<kD, 1, 8, 1>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
      if (F2 <= 128)
        return launch<kD, 2, 8, 1>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
      return launch<kD, 4, 8, 1>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
    case MmaShape::kW16:
      if (F2 <= 128)
        return launch<kD, 1, 16, 1>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
      return launch<kD, 2, 16, 1>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
    case MmaShape::kSplit:
      break;
  }
  // 2F / 2 features per CTA over 8 warps: 1 n-tile a warp up to 64, 2 up to 128
  if (F2 / 2 <= 64)
    return launch<kD, 1, 8, 2>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
  return launch<kD, 2, 8, 2>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
}

}  // namespace

bool grad_wmma_forced() {
  // values besides the default "mma" and "wmma": "mma8" and "mma16" (grad_mma_shape)
  return grad_mma_shape() == MmaShape::kSplit && env_switch("LIZARD_GRAD_KERNEL", "mma", "wmma");
}

bool grad_mma_selected(const Dims& d) {
  // the largest, D = 128 and 2F = 256, carves 175 KiB (one CTA per chunk) of the 227 KiB a
  // CTA may have, 112.6 KiB at the default feature split
  constexpr size_t kSmemMax = 227 * 1024;
  const bool forced = grad_wmma_forced();  // first: a bad value is an error at every shape
  return !forced && (d.D == 64 || d.D == 128) && d.F % 16 == 0 && 2 * d.F <= 256 &&
         grad_mma_smem(d, 1) <= kSmemMax;
}

void grad_mma_launch(const bf* phiq, const bf* phiq_lo, const bf* phik, const bf* phik_lo,
                     const bf* v, const float* bl, const float* states, const float* dstates,
                     const float* dO, const float* cself, float* dphiq, float* dphik, float* dv,
                     float* da, const Dims& d, cudaStream_t s) {
  // 16-byte loads of the state rows (the op allocates both: cudaMalloc, 256-byte aligned;
  // this guards a future caller passing a view)
  LZ_CHECK(reinterpret_cast<uintptr_t>(states) % 16 == 0 && reinterpret_cast<uintptr_t>(dstates) % 16 == 0,
           "lizard attention gradient (mma): the states and dstates must be 16-byte aligned");
  switch (d.D) {
    case 64:
      return launch_d<64>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
    case 128:
      return launch_d<128>(phiq, phiq_lo, phik, phik_lo, v, bl, states, dstates, dO, cself, dphiq, dphik, dv, da, d, s);
    default:
      break;
  }
  throw Error("grad_mma_launch: head dim " + std::to_string(d.D) + " has no instance (64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
