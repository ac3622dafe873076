// The global branch's state sweeps on mma.sync (issue #5): the forward state sweep behind
// state_tc_launch and the reverse dstate sweep behind dstate_tc_launch, the same contracts,
// the same operands and the same split products as state_tc_kernel (lizard_attention_tc.cu),
// register-resident:
//   * one CTA per (b, h, kRows rows of the 2F x (D+1) state), kRows / 16 kCS warps (kRows =
//     64 or 32 per launch: LIZARD_STATE_ROWS or the grid size, state_mma_rows; kCS = 1, 2 or
//     4 per launch: LIZARD_STATE_COLS, default 2, timed in state_cols): m-tile mt
//     (rows 16mt..16mt+15) is kept by warps kCS mt.. kCS mt + kCS - 1, warp cs of them on
//     columns cs D/kCS.. as m16n8k16 f32 accumulators; warp cs = kCS - 1 keeps the z column of
//     the rows in two f32 registers per lane (rows g and g+8, lane = 4 g + q). More warps per
//     chain at small B*H: at B 1, H 32 the 128 CTAs of 4 warps left one warp per scheduler
//     (issue #5: 0.23 issued per cycle, 4.4 cycles per instruction);
//   * per chunk the operand tiles (phi and phi_lo rows [32][kRows]; v [32][D] forward, dO'
//     as its bf16 hi and lo tiles [32][D] reverse, which the window backward writes beside the
//     f32 dO', so no CTA converts f32 rows; the den column, 32 floats, by threads 0-31 a chunk
//     ahead with the log-gates) arrive by cp.async into the buffer not being read, issued right
//     after the barrier that frees it, so chunk c+1's loads overlap chunk c's work (unrolled
//     loops of compile-time trip counts from per-thread bases);
//   * the decay exp(bl_end) scales the accumulators in registers; the decayed phi is formed on
//     the A fragments themselves (ldmatrix.trans of phi [r][f] gives phi^T, the weight
//     exp(bl_end - bl_r) forward or exp(bl_r) reverse per token, every exponent <= 0) with the
//     very f32 expression of the wmma kernel, so the bf16 operands are bit-identical to its
//     and only the order of the f32 sums differs. kCS 1: by the warp, in registers; kCS > 1
//     (kShare): each fragment once, by one warp (a unit = m-tile, k-step, token half), into
//     shared memory with the quad sums of its z terms, and the kCS warps load it (one
//     ld.shared.v4 per k-step), so the split costs no repeated formation;
//   * the weights of a chunk are formed once per CTA by threads 0-31 at the end of the
//     previous chunk into a double buffer (forward; reverse with kShare), from bl values
//     loaded a chunk ahead;
//   * the state before each chunk leaves through a shared-memory stage: the kCS warps of an
//     m-tile write its 16 rows of S (each its columns; row stride D + 8: conflict-free 8-byte
//     stores) and the 16 z values, and after a barrier lanes 0-15 of warp cs 0 move one row
//     each (D floats, 16-byte aligned in the split layout of state_index: S rows, then z) and
//     lane 16 the z values, with Hopper bulk copies (cp.async.bulk shared -> global, L2
//     evict-first: nothing re-reads the states soon) while the warps go on to the chunk's
//     products. Those lanes wait until their copies have read the stage (wait_group.read)
//     before the next chunk's first barrier (after which it is rewritten), and for their whole
//     last copies before the CTA ends. No warp spends global store instructions, registers or
//     shared-memory reads on the 2.1 GB of states (B 8, T 2048, H 32, 2F 256);
//   * barriers per chunk: the one that publishes the tiles, and a second one (reverse without
//     kShare: the weights and den values; kShare: the fragments) except forward with kCS 1,
//     whose stage needs only a __syncwarp;
//   * the f32 -> bf16 rounding of a pair is one cvt.rn.bf16x2 (the same bits as two
//     cvt.rn.bf16).
// Splits (training, kSplit): phi = hi + lo, the decayed phi as a bf16 hi + lo pair (hi B +
// lo B; v is exact in bf16); reverse: dO' as a pair too (hi hi + lo hi + hi lo; the pair is
// hi = bf16(dO'), lo = bf16(dO' - hi), as this kernel formed it from the f32 rows before the
// window backward wrote it: the same operand bits). z stays on
// the CUDA cores in f32 from the same rounded pair (z = the sum of the weights S sums), so the
// backward's identities hold as with the wmma kernel. D in {32, 64, 128} (template), any T
// (rows past the end are zero), GQA (v of kv head h / (H / Hkv)), 2F <= 256.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

using bf = __nv_bfloat16;

// kRows: state rows (of 2F) per CTA, 64 or 32 per launch (state_mma_rows); kRows / 16 m-tiles,
// each kept by kCS warps (D / kCS columns each).
/// The bf16 row stride of the phi tiles [32][kRows]: 144 bytes (kRows 64) or 80 (32); the 8
/// row addresses of an ldmatrix then fall on 8 distinct groups of 4 banks (36 or 20 words
/// apart modulo 32), conflict-free, and rows stay 16-byte aligned for cp.async.
constexpr int phi_ld(int kRows) { return kRows + 8; }

/// The row stride (floats) of the dO' rows [..][T][ld]: D + 1, the den column last. (The
/// states / dstates have the split per-chunk layout of state_index, lizard_attention_common.cuh.)
constexpr int sweep_ld(int D) { return D + 1; }

/// Minimum resident CTAs per SM for __launch_bounds__, 64 rows: 4-warp CTAs as before (forward
/// 3, reverse 2); 8 warps 2 (<= 128 registers); 16 warps 1. 32 rows (half the warps, each with
/// the same work): twice as many, so every warp gets the same register cap as with 64 rows
/// (65536 / (threads x blocks) unchanged) and the same code.
constexpr int min_blocks(bool rev, int cs, int rows) {
  return (cs == 1 ? (rev ? 2 : 3) : cs == 2 ? 2 : 1) * (64 / rows);
}
static_assert(kChunk == 32, "two 16-token k-steps per chunk; one token per lane for the weights");

// The shared-memory asm below clobbers "memory" so the compiler keeps it in program order
// with the plain shared stores around it (zero rows, the dO' conversion, the stage).
__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void zero16(uint32_t dst) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(dst), "r"(0) : "memory");
}
/// ldmatrix x4 .trans: r[i] = (stored rows 2(lane%4)..+1, stored column lane/4) of matrix i,
/// whose 8 row addresses lanes 8i..8i+7 give.
__device__ __forceinline__ void ldsm_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
/// ldmatrix x2 .trans: r[i] as for ldsm_t, matrices 0 and 1 (row addresses from lanes 0-15).
__device__ __forceinline__ void ldsm_t2(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr)
               : "memory");
}
// Bulk copy shared -> global (sm_90, the async proxy). Order of use here, per warp: the lanes
// that wrote the warp's stage rows fence (their generic-proxy writes become visible to the
// async proxy), __syncwarp, then lane 0 copies and commits; before the rows are written again
// lane 0 waits until the copy has read them (wait_group.read) and a __syncwarp follows; before
// the CTA exits lane 0 waits for the whole copy (its shared source must outlive the read, and
// nothing may be left in flight when the kernel ends). Bulk groups are apart from the
// cp.async groups: cp.async.wait_group does not wait for them, nor the reverse.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/// An L2 policy that evicts the written lines first (the states are read by a later kernel).
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
/// `bytes` (a multiple of 16) from shared `src` to global `dst`, both 16-byte aligned.
__device__ __forceinline__ void bulk_store(void* dst, uint32_t src, uint32_t bytes, uint64_t pol) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group.L2::cache_hint [%0], [%1], %2, %3;\n"
               ::"l"(dst), "r"(src), "r"(bytes), "l"(pol)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
/// Until every committed bulk copy of this thread has read its shared source.
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
/// Until every committed bulk copy of this thread is complete.
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

__device__ __forceinline__ float2 unpack2(uint32_t r) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&r));
}
/// The split2 of lizard_attention_tc.cu (hi = bf16(v), lo = bf16(v - hi), round to nearest)
/// of the pair (x0, x1), each half packed like pack_bf16: one cvt.rn.bf16x2 per half, the same
/// bits as four cvt.rn.bf16. `hf` gets hi as f32 (exact).
__device__ __forceinline__ void split_pair2(float x0, float x1, uint32_t& hi, uint32_t& lo,
                                            float2& hf) {
  hi = pack_bf16(x0, x1);
  hf = unpack2(hi);
  lo = pack_bf16(x0 - hf.x, x1 - hf.y);
}
/// One pair of the decayed phi as the mma's A operand: phi (h, plus l when kSplit) times the
/// token weights w in f32, rounded to a (and its lo half alo when kSplit). Returns the rounded
/// weights a (+ alo) as f32: what the mma sees, so what the z sums must add.
template <bool kSplit>
__device__ __forceinline__ float2 decay_pair(uint32_t h, uint32_t l, float2 w, uint32_t& a,
                                             uint32_t& alo) {
  float2 ph = unpack2(h);
  if constexpr (kSplit) {
    const float2 pl = unpack2(l);
    ph.x += pl.x;
    ph.y += pl.y;
  }
  const float x0 = ph.x * w.x, x1 = ph.y * w.y;
  float2 k;
  if constexpr (kSplit) {
    split_pair2(x0, x1, a, alo, k);
    const float2 lf = unpack2(alo);
    k.x += lf.x;
    k.y += lf.y;
  } else {
    a = pack_bf16(x0, x1);
    k = unpack2(a);
  }
  return k;
}

constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/// Shared-memory layout (byte offsets) of one instance; host and device use the same numbers.
template <int D, bool kRev, bool kSplit, bool kShare, int kRows>
struct Layout {
  static constexpr int kMTiles = kRows / 16, kLK = phi_ld(kRows);
  static constexpr int D1 = sweep_ld(D), LV = D + 8;
  static constexpr size_t kTileK = sizeof(bf) * kChunk * kLK;  // one phi tile
  static constexpr size_t kTileV = sizeof(bf) * kChunk * LV;   // one v or dO' tile
  static constexpr size_t k_hi = 0;                            // phi, 2 buffers
  static constexpr size_t k_lo = k_hi + al128(2 * kTileK);     // phi_lo, 2 buffers (kSplit)
  static constexpr size_t v_hi = k_lo + (kSplit ? al128(2 * kTileK) : 0);  // v or dO' hi: 2 buffers
  static constexpr size_t v_lo = v_hi + al128(2 * kTileV);  // dO' lo (kRev && kSplit): 2 buffers
  static constexpr size_t stage = v_lo + (kRev && kSplit ? al128(2 * kTileV) : 0);
  static constexpr int LS = D + 8;  // f32 stage row stride: 16-byte aligned rows, 8 mod 32 banks
  // the stage: kRows rows of S, then their kRows z values; then, reverse without kShare:
  // weights, eend, dden of the chunk
  static constexpr size_t wts = stage + al128(sizeof(float) * kRows * (LS + 1));
  static constexpr size_t bls = wts + (kRev && !kShare ? al128(sizeof(float) * (2 * kChunk + 8)) : 0);
  // forward, and reverse with kShare: the chunk's weights and exp(bl_end), 2 buffers of
  // kChunk + 8 floats; reverse with kShare: then the chunk's dden values, 2 buffers as many
  static constexpr size_t frag =
      bls + (!kRev || kShare ? al128(sizeof(float) * (kRev ? 4 : 2) * (kChunk + 8)) : 0);
  // kShare: the A fragments of every (m-tile, k-step, lane), 16 bytes each, hi then lo
  // (kSplit), and the z partial sums [m-tile][k-step][half][16 rows]
  static constexpr size_t kFrag = size_t(kMTiles) * (kChunk / 16) * 32 * 16;
  static constexpr size_t zp = frag + (kShare ? (kSplit ? 2 : 1) * kFrag : 0);
  static constexpr size_t bytes =
      zp + (kShare ? al128(sizeof(float) * kMTiles * (kChunk / 16) * 2 * 16) : 0);
};

/// Grid (ceil(2F / kRows), B*H), 2 kRows kCS threads (kRows / 16 m-tiles of kCS warps): m-tile
/// mt = warp / kCS (rows f0 + 16 mt..) is kept by the kCS warps cs = warp % kCS, each on
/// columns cs D / kCS.. (D / kCS >= 32); the contract of
/// state_tc_kernel<kRev, kSplit>:
/// forward (kRev false) X <- exp(bl_end) X + (phi_k exp(bl_end - bl_s))^T [V | 1] over the
/// chunks in order from phi = phi_k and v [B,T,Hkv,D] bf16; reverse (kRev true) dX <-
/// exp(bl_end) dX + (phi_q exp(bl_t))^T dO' from the last chunk, dO' f32 [B,H,T,D+1] (its
/// column D the den column). out[b,h,c] f32 = X when chunk c is reached, in the per-chunk
/// layout of state_index (S rows of D floats, then z).
///
/// Why kCS: at small B*H (B 1, H 32: 128 CTAs) a 4-warp CTA leaves one warp per scheduler, and
/// each warp's chunk (about 900 instructions) is one dependent chain; kCS warps per m-tile
/// split its products, decay and stage stores kCS ways and the A fragments' formation 4 kCS
/// ways (kShare), so kCS times as many warps share the chain.
///
/// Why kRows 32 (state_mma_rows): with fewer CTAs than about two per SM, each SM runs one chain
/// (or none), and its barriers and latencies go unhidden; halving the rows per CTA doubles
/// the independent chains (B 1, H 32, 2F 256: 256 CTAs on 132 SMs), at the price of each CTA
/// reading (and, reverse, converting) the whole v / dO' tile of a chunk for half the rows.
/// Bit-identical outputs for either kRows: every state row's arithmetic is the same whichever
/// CTA holds it (its m-tile's A fragments from the same phi elements and token weights by the
/// same f32 expressions, the same mma sequence over the same B tiles, the same z sums in the
/// same order, the same exp(bl_end)); kRows only decides which rows share a CTA. The GPU test
/// EveryRowSplitGivesTheSameBits holds this for states, dstates and y.
template <int D, bool kRev, bool kSplit, int kCS, int kRows>
__global__ void __launch_bounds__(2 * kRows * kCS, min_blocks(kRev, kCS, kRows))
    state_mma_kernel(const bf* __restrict__ phi, const bf* __restrict__ phi_lo,
                     const bf* __restrict__ v, const float* __restrict__ dO,
                     const bf* __restrict__ dOh, const bf* __restrict__ dOl,
                     const float* __restrict__ bl_all, float* __restrict__ out, Dims d) {
  pdl_enter();
  static_assert(!kRev || kSplit, "the reverse sweep is always split");
  // kShare (kCS > 1): each A fragment is formed once, by one warp, into shared memory, not
  // by all kCS warps that use it (a second CTA barrier per chunk forward)
  constexpr bool kShare = kCS > 1;
  using L = Layout<D, kRev, kSplit, kShare, kRows>;
  static_assert(kRows == 64 || kRows == 32, "2 or 4 m-tiles per CTA");
  constexpr int kMTiles = L::kMTiles, kLK = L::kLK;
  constexpr int D1 = L::D1, LV = L::LV;
  constexpr int kThreads = kMTiles * 32 * kCS;
  constexpr int DC = D / kCS, NT = DC / 8;  // columns and n-tiles of one warp
  static_assert(DC % 32 == 0, "a warp's columns start on a bank multiple (the stage order)");
  extern __shared__ __align__(128) char smem[];
  bf* sK = reinterpret_cast<bf*>(smem + L::k_hi);
  bf* sKl = reinterpret_cast<bf*>(smem + L::k_lo);
  bf* sV = reinterpret_cast<bf*>(smem + L::v_hi);
  bf* sVl = reinterpret_cast<bf*>(smem + L::v_lo);
  float* stage = reinterpret_cast<float*>(smem + L::stage);
  float* sw = reinterpret_cast<float*>(smem + L::wts);  // reverse: [0, 32) weights, [32] eend
  float* sdd = sw + kChunk + 8;                          // reverse: [32] dden
  float* sWf = reinterpret_cast<float*>(smem + L::bls);  // weights [32], eend [32], x2 (not
                                                         // reverse without kShare)
  float* sDn = sWf + 2 * (kChunk + 8);                   // reverse with kShare: dden [32], x2
  uint32_t* sAf = reinterpret_cast<uint32_t*>(smem + L::frag);  // kShare: A hi fragments
  uint32_t* sAfl = sAf + L::kFrag / 4;                          // kShare && kSplit: A lo
  float* sZp = reinterpret_cast<float*>(smem + L::zp);          // kShare: z partial sums

  const int F2 = 2 * d.F, f0 = blockIdx.x * kRows, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  const int mt = warp / kCS, cs = warp % kCS, col0 = cs * DC;
  const int rows = min(kRows, F2 - f0);  // valid state rows here: 32 or 64 (F2 % 32 == 0)
  const bool active = mt * 16 < rows;    // warp-uniform, and the same for an m-tile's warps
  // warp cs kCS - 1 of an m-tile sums the z column of its rows; lane 0 of warp cs 0 copies
  // the m-tile's stage rows (written by all kCS warps): two jobs on two warps when kCS > 1
  const bool zw = cs == kCS - 1;
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;

  // Issues chunk c's operand copies into buffer `buf` (rows past the end zero-filled).
  // The copies are loops of compile-time trip counts over the thread's units tid + kThreads k
  // (fully unrolled: no loop control, constant offsets from per-thread bases).
  constexpr int kUK = kRows / 8, kUV = D / 8;  // 16-byte units per phi row, per v row
  static_assert(kThreads % kUK == 0 && kThreads % kUV == 0, "a thread keeps its unit column");
  const int kr = tid / kUK, ku = tid % kUK, vr = tid / kUV, vu = tid % kUV;
  const bool k_in = ku * 8 < rows;
  const int64_t phi_t = (int64_t(bh) * d.T + kr) * F2 + f0 + ku * 8;  // token kr, its unit
  const bf* v_t = v + ((int64_t(b) * d.T + vr) * d.Hkv + kvh) * D + vu * 8;
  // Issues chunk c's operand copies into buffer `buf` (rows past the end zero-filled).
  auto issue = [&](int c, int buf) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
#pragma unroll
    for (int k = 0; k < (kChunk * kUK + kThreads - 1) / kThreads; ++k) {
      const int r = kr + k * (kThreads / kUK);
      if (kChunk * kUK % kThreads != 0 && r >= kChunk) break;
      const int so = (buf * kChunk + r) * kLK + ku * 8;
      if (r < n && k_in) {
        const int64_t o = phi_t + int64_t(t0 + k * (kThreads / kUK)) * F2;
        cp16(smem_u32(sK + so), phi + o);
        if constexpr (kSplit) cp16(smem_u32(sKl + so), phi_lo + o);
      } else {
        zero16(smem_u32(sK + so));
        if constexpr (kSplit) zero16(smem_u32(sKl + so));
      }
    }
    // v (forward) or dO' as its bf16 hi and lo tiles (reverse; rows of D, [B,H,T,D]): the
    // chunk's rows, rows past n zero
    const int64_t vrow = kRev ? D : int64_t(d.Hkv) * D;  // row stride
    const bf* src = kRev ? dOh + (int64_t(bh) * d.T + t0 + vr) * D + vu * 8
                         : v_t + int64_t(t0) * d.Hkv * D;
    const bf* srcl = kRev ? dOl + (int64_t(bh) * d.T + t0 + vr) * D + vu * 8 : nullptr;
#pragma unroll
    for (int k = 0; k < (kChunk * kUV + kThreads - 1) / kThreads; ++k) {
      const int r = vr + k * (kThreads / kUV);
      if (kChunk * kUV % kThreads != 0 && r >= kChunk) break;
      const uint32_t dst = smem_u32(sV + (buf * kChunk + r) * LV + vu * 8);
      const uint32_t dstl = smem_u32(sVl + (buf * kChunk + r) * LV + vu * 8);
      if (r < n) {
        cp16(dst, src + int64_t(k * (kThreads / kUV)) * vrow);
        if constexpr (kRev) cp16(dstl, srcl + int64_t(k * (kThreads / kUV)) * vrow);
      } else {
        zero16(dst);
        if constexpr (kRev) zero16(dstl);
      }
    }
  };
  // bl of token t0 + tid and of the chunk's last token (threads tid < 32 use them); forward,
  // tokens n.. take bl of token n - 1 (their weight exp(0) = 1; their phi rows are zero)
  // reverse: dn = the den column of token t0 + tid's dO' row (0 past n: zero weight there)
  auto load_bl = [&](int c, float& bt, float& bend, float& dn) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    if constexpr (kRev) {
      bt = tid < n ? blr[t0 + tid] : 0.f;
      dn = tid < n ? dO[(int64_t(bh) * d.T + t0 + tid) * D1 + D] : 0.f;
    } else {
      bt = blr[t0 + min(tid, n - 1)];
    }
    bend = blr[t0 + n - 1];
  };
  // Chunk c's weights from load_bl's values into buffer wb of sWf (threads tid < 32), the very
  // expressions of state_tc_kernel (same operand bits): forward exp(bl_end - bl_s) (tokens
  // past n weight 1 on zero phi rows; every exponent <= 0), reverse exp(bl_t) (0 past n);
  // slot 32 exp(bl_end); reverse, the dden values into buffer wb of sDn.
  auto put_weights = [&](int c, int wb, float bt, float bend, float dn) {
    const int n = min(kChunk, d.T - c * kChunk);
    float* ws = sWf + wb * (kChunk + 8);
    if constexpr (kRev) {
      ws[tid] = tid < n ? __expf(bt) : 0.f;
      sDn[wb * (kChunk + 8) + tid] = dn;
    } else {
      ws[tid] = __expf(bend - bt);
    }
    if (tid == 0) ws[kChunk] = __expf(bend);
  };

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  float z0 = 0.f, z1 = 0.f;  // z of this m-tile's rows g and g + 8 (warp cs kCS - 1)
  float blc = 0.f, bec = 0.f;  // bl of token t0 + tid and of the chunk's last token (tid < 32)
  float dnc = 0.f;             // reverse: the dden of token t0 + tid (tid < 32)
  const bool copier = active && cs == 0 && lane <= 16;
  const uint64_t policy = copier ? evict_first_policy() : 0;
  {
    const int c = kRev ? d.NC - 1 : 0;
    issue(c, 0);
    cp_commit();
    if (tid < kChunk) {
      load_bl(c, blc, bec, dnc);
      // the first chunk's weights, published by the loop's first barrier
      if constexpr (!kRev || kShare) put_weights(c, 0, blc, bec, dnc);
    }
  }
  for (int it = 0; it < d.NC; ++it) {
    const int c = kRev ? d.NC - 1 - it : it, buf = it & 1;
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    // the m-tile's previous bulk copy has read the stage rows before the barrier below, after
    // which its kCS warps rewrite them (it was issued a whole chunk of products ago)
    if (copier) bulk_wait_read();
    cp_wait_all();    // this thread's copies of chunk c (the only group in flight)
    __syncthreads();  // everyone's copies visible; every read of buffer buf ^ 1 and (reverse)
                      // of the weights and dO' tiles of the previous chunk is done
    float bln = 0.f, ben = 0.f, dnn = 0.f;
    if (it + 1 < d.NC) {
      const int cn = kRev ? c - 1 : c + 1;
      issue(cn, buf ^ 1);
      cp_commit();
      if (tid < kChunk) load_bl(cn, bln, ben, dnn);  // used at the end or the next iteration
    }
    if constexpr (kRev) {
      if constexpr (!kShare) {
        // the weights of chunk c, the very expressions of state_tc_kernel (same operand bits)
        if (tid < kChunk) sw[tid] = tid < n ? __expf(blc) : 0.f;
        if (tid == 0) sw[kChunk] = __expf(bec);
      }
      // (dO' of chunk c arrived as its bf16 hi and lo tiles with the phi tiles) and the den
      // column
      if constexpr (!kShare)
        if (tid < kChunk) sdd[tid] = dnc;
    }
    if constexpr (kShare) {
      // The A fragments of chunk c, each formed once: unit u = (m-tile, k-step kk, half hh)
      // is one warp's job, the lanes' a[2 hh], a[2 hh + 1] (and lo) of the fragment that the
      // kCS warps of the m-tile load (tokens 16 kk + 8 hh + 2q, +1 of rows g, g + 8), the
      // same f32 expressions as below; with their z terms summed over the quad (the z column
      // then adds the 4 units' sums in a fixed order).
      const float* ws = sWf + buf * (kChunk + 8);
      const bf* kt = sK + buf * kChunk * kLK;
      const bf* ktl = sKl + buf * kChunk * kLK;
      // reverse: the den column of the chunk's dO' rows (zeros past n)
      const float* den = sDn + buf * (kChunk + 8);
      constexpr int kUnits = kMTiles * (kChunk / 16) * 2;
      static_assert(kUnits % (kMTiles * kCS) == 0, "whole units per warp");
#pragma unroll
      for (int k = 0; k < kUnits / (kMTiles * kCS); ++k) {
        const int u = warp + k * kMTiles * kCS, ump = u / 4, ukk = (u / 2) % 2, uh = u % 2;
        if (ump * 16 >= rows) continue;  // warp-uniform: an m-tile without rows
        // ldmatrix x2 .trans of phi [r][f]: matrices (r 8 uh.., f 0-7), (r 8 uh.., f 8-15)
        const int ar = 16 * ukk + 8 * uh + (lane & 7);
        const int af = ump * 16 + ((lane >> 3) & 1) * 8;
        uint32_t ah[2], al[2], a[2], alo[2];
        ldsm_t2(ah, smem_u32(kt + ar * kLK + af));
        if constexpr (kSplit) ldsm_t2(al, smem_u32(ktl + ar * kLK + af));
        const int r = 16 * ukk + 8 * uh + 2 * q;  // tokens r, r + 1
        const float2 w = *reinterpret_cast<const float2*>(ws + r);
        float zs[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const float2 k = decay_pair<kSplit>(ah[i], al[i], w, a[i], alo[i]);
          const float k0 = k.x, k1 = k.y;  // the rounded weights (what the mma sees)
          if constexpr (kRev) zs[i] = k0 * den[r] + k1 * den[r + 1];
          else zs[i] = k0 + k1;
        }
        const int fo = ((ump * 2 + ukk) * 32 + lane) * 4 + 2 * uh;  // a[2 uh] of the lane
        *reinterpret_cast<uint2*>(sAf + fo) = make_uint2(a[0], a[1]);
        if constexpr (kSplit) *reinterpret_cast<uint2*>(sAfl + fo) = make_uint2(alo[0], alo[1]);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          zs[i] += __shfl_xor_sync(0xffffffffu, zs[i], 1);
          zs[i] += __shfl_xor_sync(0xffffffffu, zs[i], 2);
        }
        if (q == 0) {
          float* zp = sZp + ((ump * 2 + ukk) * 2 + uh) * 16;
          zp[g] = zs[0];
          zp[g + 8] = zs[1];
        }
      }
    }
    if (active) {
      // the state before chunk c, the warp's 16 rows x DC columns, into its part of the stage
      // (rows of S LS = D + 8 floats apart, then the z values); lane l < 16 of warp cs 0 then
      // copies row l of the m-tile to S row f0 + 16 mt + l of out[b,h,c] (D floats, 16-byte
      // aligned in the split layout of state_index, 2F a multiple of 32) and its lane 16 the
      // 16 z values (64 bytes, contiguous in the block's z part).
      //
      // LS is 8 modulo the 32 banks (and a warp's first column col0 a multiple of 32): the
      // 8-byte store of an accumulator pair (rows g, columns col0 + 8 j + 2q, +1) by the whole
      // warp covers words 8 g + 2 q, +1 (mod 32 banks, plus a constant): 64 distinct words,
      // two per bank, the minimum of 2 wavefronts for 256 bytes.
      constexpr int LS = L::LS;
      static_assert(LS % 32 == 8 && LS % 4 == 0, "conflict-free pair stores, 16-byte aligned rows");
      float* sw0 = stage + mt * 16 * LS + col0 + 2 * q;
      float* szw = stage + kRows * LS + mt * 16;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        *reinterpret_cast<float2*>(sw0 + g * LS + 8 * j) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(sw0 + (g + 8) * LS + 8 * j) = make_float2(acc[j][2], acc[j][3]);
      }
      if (zw && q == 0) {
        szw[g] = z0;
        szw[g + 8] = z1;
      }
      fence_proxy_async_smem();  // this lane's stage writes, visible to the bulk copy
    }
    // the m-tile's stage rows complete (and, reverse, the weights and dO' tiles; kShare, the
    // A fragments and z sums)
    if constexpr (kRev || kShare) __syncthreads();
    else __syncwarp();
    if (copier) {
      float* ob = out + state_chunk(bh, c, d.NC, D, F2);
      if (lane < 16)
        bulk_store(ob + state_s(f0 + mt * 16 + lane, 0, D), smem_u32(stage + (mt * 16 + lane) * L::LS),
                   uint32_t(sizeof(float) * D), policy);
      else
        bulk_store(ob + state_z(D, F2) + f0 + mt * 16, smem_u32(stage + kRows * L::LS + mt * 16),
                   uint32_t(sizeof(float) * 16), policy);
      bulk_commit();
    }
    if (active) {
      // the weights of the lane's tokens 16 kk + 8 hh + 2q, +1 and the decay exp(bl_end)
      float eend;
      float2 wv[kChunk / 16][2];  // without kShare
      if constexpr (kRev && !kShare) {
        eend = sw[kChunk];
#pragma unroll
        for (int kk = 0; kk < kChunk / 16; ++kk)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh)
            wv[kk][hh] = *reinterpret_cast<const float2*>(sw + 16 * kk + 8 * hh + 2 * q);
      } else {
        // formed once per CTA by threads tid < 32 (end of the previous iteration)
        const float* ws = sWf + buf * (kChunk + 8);
        eend = ws[kChunk];
        if constexpr (!kShare)
#pragma unroll
          for (int kk = 0; kk < kChunk / 16; ++kk)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
              wv[kk][hh] = *reinterpret_cast<const float2*>(ws + 16 * kk + 8 * hh + 2 * q);
      }
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] *= eend;
      float zs0 = 0.f, zs1 = 0.f;
      const bf* kt = sK + buf * kChunk * kLK;
      const bf* ktl = sKl + buf * kChunk * kLK;
      const bf* vt = sV + buf * kChunk * LV + col0;
      const bf* vtl = sVl + buf * kChunk * LV + col0;
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        uint32_t a[4], alo[4];
        if constexpr (kShare) {
          // formed by this chunk's units (above)
          const int fo = ((mt * 2 + kk) * 32 + lane) * 4;
          const uint4 A = *reinterpret_cast<const uint4*>(sAf + fo);
          a[0] = A.x, a[1] = A.y, a[2] = A.z, a[3] = A.w;
          if constexpr (kSplit) {
            const uint4 Al = *reinterpret_cast<const uint4*>(sAfl + fo);
            alo[0] = Al.x, alo[1] = Al.y, alo[2] = Al.z, alo[3] = Al.w;
          }
        } else {
          // A = (decayed phi)^T rows 16 mt.., k = tokens 16 kk..: ldmatrix.trans of phi [r][f];
          // matrices (r 0-7, f 0-7), (r 0-7, f 8-15), (r 8-15, f 0-7), (r 8-15, f 8-15) are
          // a0 (row g, k 2q..), a1 (row g+8), a2 (row g, k 2q+8..), a3 (row g+8, k 2q+8..)
          const int ar = 16 * kk + (lane & 7) + ((lane >> 4) & 1) * 8;
          const int af = mt * 16 + ((lane >> 3) & 1) * 8;
          uint32_t ah[4], al[4];
          ldsm_t(ah, smem_u32(kt + ar * kLK + af));
          if constexpr (kSplit) ldsm_t(al, smem_u32(ktl + ar * kLK + af));
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int r = 16 * kk + 2 * q + (i >= 2 ? 8 : 0);  // tokens r, r + 1 (r even)
            const float2 k = decay_pair<kSplit>(ah[i], al[i], wv[kk][i >> 1], a[i], alo[i]);
            if (zw) {  // warp-uniform: the z terms from the rounded weights (what the mma sees)
              const float k0 = k.x, k1 = k.y;
              float zt;
              if constexpr (kRev) {
                const float2 dd = *reinterpret_cast<const float2*>(sdd + r);
                zt = k0 * dd.x + k1 * dd.y;
              } else {
                zt = k0 + k1;
              }
              if (i & 1) zs1 += zt;
              else zs0 += zt;
            }
          }
        }
        // B = [v] or dO' rows 16 kk.., the warp's columns col0 + 16 p..: ldmatrix.trans of
        // [r][j]; matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
        // are b0, b1 of n-tile 2p and b0, b1 of n-tile 2p + 1
        const int br = 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int bc = ((lane >> 4) & 1) * 8;
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
          uint32_t bb[4];
          ldsm_t(bb, smem_u32(vt + br * LV + 16 * p + bc));
          mma_bf16(acc[2 * p], a, bb[0], bb[1]);
          mma_bf16(acc[2 * p + 1], a, bb[2], bb[3]);
          if constexpr (kSplit) {
            mma_bf16(acc[2 * p], alo, bb[0], bb[1]);
            mma_bf16(acc[2 * p + 1], alo, bb[2], bb[3]);
          }
          if constexpr (kSplit && kRev) {
            ldsm_t(bb, smem_u32(vtl + br * LV + 16 * p + bc));
            mma_bf16(acc[2 * p], a, bb[0], bb[1]);
            mma_bf16(acc[2 * p + 1], a, bb[2], bb[3]);
          }
        }
      }
      if (zw) {
        if constexpr (kShare) {
          // the 4 units' sums of rows g, g + 8, (kk, half) (0, 0) + (0, 1) + (1, 0) + (1, 1)
          const float* zp = sZp + mt * 4 * 16;
          zs0 = (zp[g] + zp[16 + g]) + (zp[32 + g] + zp[48 + g]);
          zs1 = (zp[g + 8] + zp[24 + g]) + (zp[40 + g] + zp[56 + g]);
        } else {
          // the quad's partial sums: lanes 4g..4g+3 hold the tokens of rows g and g + 8
          zs0 += __shfl_xor_sync(0xffffffffu, zs0, 1);
          zs0 += __shfl_xor_sync(0xffffffffu, zs0, 2);
          zs1 += __shfl_xor_sync(0xffffffffu, zs1, 1);
          zs1 += __shfl_xor_sync(0xffffffffu, zs1, 2);
        }
        z0 = eend * z0 + zs0;
        z1 = eend * z1 + zs1;
      }
    }
    if constexpr (!kRev || kShare) {
      // the weights of the next chunk into the other buffer, whose last reads (previous
      // chunk) preceded this iteration's first barrier; the next one publishes them
      if (tid < kChunk && it + 1 < d.NC) put_weights(kRev ? c - 1 : c + 1, buf ^ 1, bln, ben, dnn);
    }
    blc = bln;
    bec = ben;
    dnc = dnn;
  }
  // the last states are written before the CTA (and its stage) ends
  if (copier) bulk_wait_all();
}

template <int D, bool kRev, bool kSplit, int kCS, int kRows>
void launch_shape(const bf* phi, const bf* phi_lo, const bf* v, const float* dO, const bf* dOh,
                  const bf* dOl, const float* bl, float* out, const Dims& d, cudaStream_t s) {
  using L = Layout<D, kRev, kSplit, (kCS > 1), kRows>;
  static_assert(L::bytes <= 227 * 1024, "an SM's shared memory");
  auto kernel = state_mma_kernel<D, kRev, kSplit, kCS, kRows>;
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                int(L::bytes)) == cudaSuccess,
           "lizard state sweep (CUDA): cannot grant ", L::bytes, " bytes of shared memory");
  const dim3 grid((2 * d.F + kRows - 1) / kRows, d.B * d.H);
  pdl_launch("lizard state sweep", kernel, grid, 2 * kRows * kCS, L::bytes, s, phi, phi_lo, v, dO,
             dOh, dOl, bl, out, d);
}

/// One of `values` from the environment variable `var`: 0 when it is unset or empty, the value
/// when its text is exactly one of them (decimal), else InputError naming `var`, the values,
/// `what` they count and what unset means (`dflt`). The launch switches below (column and
/// row split) read it per call.
int env_choice(const char* var, std::initializer_list<int> values, const char* what,
               const char* dflt) {
  const char* e = std::getenv(var);
  if (!e || !*e) return 0;
  const std::string v(e);
  std::string list;
  size_t i = 0;
  for (const int x : values) {
    if (v == std::to_string(x)) return x;
    list += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + std::to_string(x);
    ++i;
  }
  throw InputError(std::string(var) + "='" + v + "': expected " + list + " (" + what +
                   ") or unset (" + dflt + ")");
}

/// Warps per m-tile for d: LIZARD_STATE_COLS (1, 2 or 4; unset or empty: 2), at most D / 32 (a
/// warp keeps 32 columns or more). 2 won or tied at every shape timed on an H200 (2026-11-28,
/// 64 rows, `lizard bench attention`, fwd+bwd ms for cols 1 / 2 / 4): B 8, T 2048 10.58 / 10.37
/// / 11.15 (the dstate sweep 1.07 -> 0.88 ms with 2); B 2, T 8192 10.61 / 10.40 / 11.21; B 1,
/// T 32768 22.59 / 22.07 / 22.22; B 1, T 2048 1.650 / 1.631 / 1.629. Kept at 2 with 32 rows:
/// the split divides the same per-m-tile work whichever rows share the CTA (32 rows and 2
/// columns: 4-warp CTAs, two per SM at B 1, H 32). Throws InputError naming the variable for
/// any other value.
int state_cols(const Dims& d) {
  const int want = env_choice("LIZARD_STATE_COLS", {1, 2, 4}, "warps per 16 state rows", "2");
  return std::min(want ? want : 2, d.D / 32);
}

/// How many CTAs of an instance one SM holds at once (sm_90, the only build target: 228 KiB of
/// shared memory per SM, 1 KiB of it reserved per CTA, 2048 threads), at most min_blocks (the
/// residency its register cap guarantees; more may fit, so this errs towards fewer).
template <int D, bool kRev, bool kSplit, int kCS, int kRows>
constexpr int resident_per_sm() {
  using L = Layout<D, kRev, kSplit, (kCS > 1), kRows>;
  constexpr int by_smem = int(228 * 1024 / (L::bytes + 1024)), by_threads = 2048 / (2 * kRows * kCS);
  return std::min({by_smem, by_threads, min_blocks(kRev, kCS, kRows)});
}

/// 32-row CTAs of the reverse sweep (whose shared memory is the largest of the sweeps': the
/// dO' hi and lo tiles) one SM holds at D and `cols` warps per m-tile: 3 at D 128.
int dstate_resident32(int D, int cols) {
  switch (D) {
    case 32: return resident_per_sm<32, true, true, 1, 32>();
    case 64: return cols == 2 ? resident_per_sm<64, true, true, 2, 32>()
                              : resident_per_sm<64, true, true, 1, 32>();
    case 128: return cols == 4   ? resident_per_sm<128, true, true, 4, 32>()
                     : cols == 2 ? resident_per_sm<128, true, true, 2, 32>()
                                 : resident_per_sm<128, true, true, 1, 32>();
    default: return 0;
  }
}
static_assert(resident_per_sm<128, true, true, 2, 32>() == 3 &&
                  resident_per_sm<128, false, true, 2, 32>() == 4,
              "the residency state_mma_rows' comment counts on");

template <int D, bool kRev, bool kSplit, int kRows>
void launch_rows(const bf* phi, const bf* phi_lo, const bf* v, const float* dO, const bf* dOh,
                 const bf* dOl, const float* bl, float* out, const Dims& d, cudaStream_t s) {
  const int cols = state_cols(d);
  if constexpr (D >= 128)
    if (cols == 4)
      return launch_shape<D, kRev, kSplit, 4, kRows>(phi, phi_lo, v, dO, dOh, dOl, bl, out, d, s);
  if constexpr (D >= 64)
    if (cols == 2)
      return launch_shape<D, kRev, kSplit, 2, kRows>(phi, phi_lo, v, dO, dOh, dOl, bl, out, d, s);
  launch_shape<D, kRev, kSplit, 1, kRows>(phi, phi_lo, v, dO, dOh, dOl, bl, out, d, s);
}

template <int D, bool kRev, bool kSplit>
void launch(const bf* phi, const bf* phi_lo, const bf* v, const float* dO, const bf* dOh,
            const bf* dOl, const float* bl, float* out, const Dims& d, cudaStream_t s) {
  if (d.NC <= 0 || d.B * d.H == 0) return;  // no chunk: no state to write (and an empty grid)
  if (state_mma_rows(d) == 32)
    return launch_rows<D, kRev, kSplit, 32>(phi, phi_lo, v, dO, dOh, dOl, bl, out, d, s);
  launch_rows<D, kRev, kSplit, 64>(phi, phi_lo, v, dO, dOh, dOl, bl, out, d, s);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Whether LIZARD_STATE_KERNEL selects the wmma sweeps of lizard_attention_tc.cu (read per
/// call; kept as what the GPU tests compare the new sweeps against). Throws InputError naming
/// the variable for any value but mma, wmma or empty.
bool state_wmma_forced() { return env_switch("LIZARD_STATE_KERNEL", "mma", "wmma"); }

}  // namespace

int state_mma_rows(const Dims& d) {
  if (const int r = env_choice("LIZARD_STATE_ROWS", {32, 64}, "state rows per CTA",
                               "by the grid size"))
    return r;
  // Both sweeps follow the rule below. At B 1, T 2048, H 32, 2F 256 (H200, ncu) 32 rows took
  // the forward from 0.144 to 0.123 ms (training) and 0.118 to 0.111 (inference); the
  // reverse from 0.161 to 0.144 once it read dO' as the window backward's bf16 pair (when each
  // CTA converted the whole f32 dO' tile of a chunk for its rows, 32 rows took it from 0.174 to
  // 0.184, and the reverse kept 64).
  // A CTA walks its chunks as one dependent chain (cp.async wait, barrier, fragments, barrier,
  // products, stage), so an SM with one CTA idles through every latency of it: B 1, T 2048,
  // H 32, 2F 256 (128 CTAs on 132 SMs) took 2.4 us a chunk forward, 3 reverse, twice the HBM
  // time of the states it writes, while B 8 (1024 CTAs, several resident per SM) streams them
  // at 3.4-3.7 TB/s. Two CTAs per SM are the fewest that overlap one's waits with the other's
  // work, so below two 64-row CTAs per SM (on average) take 32 rows, twice the chains for the
  // same rows; from two on 64, since 32 rows also read every chunk's
  // v / dO' tile once per CTA, twice over, for no more overlap than the SMs already have.
  // And only when every 32-row CTA is resident at once: a CTA holds its SM slot for the whole
  // sequence, so CTAs beyond one wave would start after the first wave's entire chains, twice
  // the time. The reverse sweep at D 128 holds three 32-row CTAs per SM (66 KiB each; the
  // forward four), so on 132 SMs at H 32, 2F 256 only B 1 (256 CTAs of 32 rows) takes 32;
  // B 2 (256 of 64 rows, 512 of 32) would need a second wave of the reverse sweep. The
  // forward keeps that rule (the reverse's residency: B 2 untimed at 32 rows).
  const int64_t sms = sm_count(), ctas64 = int64_t(d.B) * d.H * ((2 * d.F + 63) / 64);
  const int per_sm32 = dstate_resident32(d.D, state_cols(d));
  return ctas64 < 2 * sms && 2 * ctas64 <= per_sm32 * sms ? 32 : 64;
}

bool state_mma_selected(const Dims& d) {
  const bool forced = state_wmma_forced();  // first: a bad value is an error at every shape
  return !forced && (d.D == 32 || d.D == 64 || d.D == 128) && d.F % 16 == 0 && 2 * d.F <= 256;
}

void state_mma_launch(const bf* phik, const bf* phik_lo, const bf* v, const float* bl,
                      float* states, bool split, const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || phik_lo, "lizard state sweep (CUDA): the split sweep needs phi_k's lo half");
  LZ_CHECK(aligned16(phik) && (!split || aligned16(phik_lo)) && aligned16(v) && aligned16(states),
           "lizard state sweep (CUDA): phi, phi_lo, v and the states must be 16-byte aligned");
#define LZ_STATE_FWD(D_)                                                                     \
  case D_:                                                                                   \
    if (split)                                                                               \
      return launch<D_, false, true>(phik, phik_lo, v, nullptr, nullptr, nullptr, bl, states, \
                                     d, s);                                                  \
    return launch<D_, false, false>(phik, nullptr, v, nullptr, nullptr, nullptr, bl, states, d, s);
  switch (d.D) {
    LZ_STATE_FWD(32)
    LZ_STATE_FWD(64)
    LZ_STATE_FWD(128)
    default: break;
  }
#undef LZ_STATE_FWD
  throw Error("state_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

void dstate_mma_launch(const bf* phiq, const bf* phiq_lo, const float* dO, const bf* dO_hi,
                       const bf* dO_lo, const float* bl, float* dstates, const Dims& d,
                       cudaStream_t s) {
  LZ_CHECK(dO_hi && dO_lo, "lizard state sweep (CUDA): the dstate sweep needs dO' as a bf16 pair");
  LZ_CHECK(phiq_lo, "lizard state sweep (CUDA): the dstate sweep needs phi_q's lo half");
  LZ_CHECK(aligned16(phiq) && aligned16(phiq_lo) && aligned16(dO_hi) && aligned16(dO_lo) &&
               aligned16(dstates),
           "lizard state sweep (CUDA): phi, phi_lo, dO' hi, lo and the dstates must be 16-byte aligned");
  // always split, as dstate_tc_launch: dstates feed the gate gradient's pair sums
  switch (d.D) {
    case 32: return launch<32, true, true>(phiq, phiq_lo, nullptr, dO, dO_hi, dO_lo, bl, dstates, d, s);
    case 64: return launch<64, true, true>(phiq, phiq_lo, nullptr, dO, dO_hi, dO_lo, bl, dstates, d, s);
    case 128: return launch<128, true, true>(phiq, phiq_lo, nullptr, dO, dO_hi, dO_lo, bl, dstates, d, s);
    default: break;
  }
  throw Error("dstate_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
