// The global branch's state sweeps on mma.sync (issue #5): the forward state sweep behind
// state_tc_launch and the reverse dstate sweep behind dstate_tc_launch, the same contracts,
// the same operands and the same split products as state_tc_kernel (lizard_attention_tc.cu),
// register-resident:
//   * one CTA per (b, h, 64 rows of the 2F x (D+1) state [S|z]), 4 warps; warp w keeps rows
//     16w..16w+15 (all D columns) as m16n8k16 f32 accumulators and the z column of those rows
//     in two f32 registers per lane (rows g and g+8, lane = 4 g + q);
//   * per chunk the operand tiles (phi and phi_lo rows [32][64]; v [32][D] forward, dO'
//     [32][D+1] f32 reverse) arrive by cp.async into the buffer not being read, issued right
//     after the barrier that frees it, so chunk c+1's loads overlap chunk c's work;
//   * the decay exp(bl_end) scales the accumulators in registers; the decayed phi is formed on
//     the A fragments themselves (ldmatrix.trans of phi [r][f] gives phi^T, the weight
//     exp(bl_end - bl_r) forward or exp(bl_r) reverse per token, every exponent <= 0) with the
//     very f32 expression of the wmma kernel, so the bf16 operands are bit-identical to its
//     and only the order of the f32 sums differs;
//   * the state before each chunk leaves through a shared-memory stage: each warp writes its
//     16 rows of S (row stride D + 8: conflict-free 8-byte stores) and their 16 z values, and
//     lanes 0-15 move one row each (D floats, 16-byte aligned in the layout of state_index),
//     lane 16 the 16 z values, with Hopper bulk copies (cp.async.bulk shared -> global, L2
//     evict-first: nothing re-reads the states soon) while the warp goes on to the chunk's
//     products. Those lanes wait until their copies have read the stage (wait_group.read) and
//     the warp syncs before it is rewritten a chunk later, and they wait for the whole last
//     copies before the CTA ends. No warp spends store instructions,
//     registers or shared-memory reads on the 2.1 GB of states (B 8, T 2048, H 32, 2F 256),
//     and the stage needs no CTA barrier;
//   * forward, each lane forms the weights of its own 8 tokens from the chunk's bl row (copied
//     with the tiles), so a chunk needs one CTA barrier (the one that publishes its tiles);
//     reverse, the dO' tiles converted by all threads still need a second one;
//   * the f32 -> bf16 rounding of a pair is one cvt.rn.bf16x2 (the same bits as two
//     cvt.rn.bf16), and the reverse dO' conversion runs as an unrolled loop with constant
//     offsets (rows past the end of the last chunk are zero in the raw buffer itself, so that
//     loop has no bounds test).
// Splits (training, kSplit): phi = hi + lo, the decayed phi as a bf16 hi + lo pair (hi B +
// lo B; v is exact in bf16); reverse: dO' as a pair too (hi hi + lo hi + hi lo). z stays on
// the CUDA cores in f32 from the same rounded pair (z = the sum of the weights S sums), so the
// backward's identities hold as with the wmma kernel. D in {32, 64, 128} (template), any T
// (rows past the end are zero), GQA (v of kv head h / (H / Hkv)), 2F <= 256.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lizard/core/error.h"
#include "lizard_attention_tc.cuh"
#include "mma_util.cuh"

namespace lizard::cuda::lizard_detail {
namespace {

using bf = __nv_bfloat16;

constexpr int kRows = 64;           // state rows (of 2F) per CTA
constexpr int kWarps = kRows / 16;  // one m-tile per warp
constexpr int kThreads = kWarps * 32;
constexpr int kLK = kRows + 8;      // bf16 ld of the phi tiles: 144 bytes, ldmatrix conflict-free
static_assert(kChunk == 32, "two 16-token k-steps per chunk; one token per lane for the weights");

// The shared-memory asm below clobbers "memory" so the compiler keeps it in program order
// with the plain shared stores around it (zero rows, the dO' conversion, the stage).
__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
// 4 bytes (dO' rows are D+1 floats: a chunk's block starts anywhere modulo 16 bytes)
__device__ __forceinline__ void cp4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
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
// Bulk copy shared -> global (sm_90, the async proxy). Order of use here, per warp: the lanes
// that wrote the warp's stage rows fence (their generic-proxy writes become visible to the
// async proxy), __syncwarp, then lanes 0-16 copy (a row or the z values each) and commit;
// before the stage is written again each of them waits until its copy has read it
// (wait_group.read) and a __syncwarp follows; before the CTA exits they wait for their whole
// copies (the shared source must outlive the read, and nothing may be left in flight when the
// kernel ends). Bulk groups are apart from the
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

constexpr size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/// Shared-memory layout (byte offsets) of one instance; host and device use the same numbers.
template <int D, bool kRev, bool kSplit>
struct Layout {
  static constexpr int D1 = D + 1, LV = D + 8;
  static constexpr int kRaw = kChunk * D1 + 8;  // f32 dO' block of a chunk + misalignment slack
  static constexpr size_t kTileK = sizeof(bf) * kChunk * kLK;  // one phi tile
  static constexpr size_t kTileV = sizeof(bf) * kChunk * LV;   // one v or dO' tile
  static constexpr size_t k_hi = 0;                            // phi, 2 buffers
  static constexpr size_t k_lo = k_hi + al128(2 * kTileK);     // phi_lo, 2 buffers (kSplit)
  static constexpr size_t v_hi = k_lo + (kSplit ? al128(2 * kTileK) : 0);  // v: 2 buffers; dO' hi: 1
  static constexpr size_t v_lo = v_hi + al128((kRev ? 1 : 2) * kTileV);    // dO' lo (kRev && kSplit)
  static constexpr size_t raw = v_lo + (kRev && kSplit ? al128(kTileV) : 0);  // dO' f32, 2 buffers
  static constexpr size_t stage = raw + (kRev ? al128(2 * sizeof(float) * kRaw) : 0);
  static constexpr int LS = D + 8;  // f32 stage row stride: 16-byte aligned rows, 8 mod 32 banks
  // the stage: kRows rows of S, then their kRows z values
  static constexpr size_t wts = stage + al128(sizeof(float) * kRows * (LS + 1));  // weights, eend, dden
  static constexpr size_t bls = wts + (kRev ? al128(sizeof(float) * (2 * kChunk + 8)) : 0);
  static constexpr size_t bytes = bls + (kRev ? 0 : al128(sizeof(float) * 2 * kChunk));  // bl rows
};

/// Grid (ceil(2F / 64), B*H), kThreads threads; the contract of state_tc_kernel<kRev, kSplit>:
/// forward (kRev false) X <- exp(bl_end) X + (phi_k exp(bl_end - bl_s))^T [V | 1] over the
/// chunks in order from phi = phi_k and v [B,T,Hkv,D] bf16; reverse (kRev true) dX <-
/// exp(bl_end) dX + (phi_q exp(bl_t))^T dO' from the last chunk, dO' f32 [B,H,T,D+1] (its
/// column D the den column). out[b,h,c] [2F][D+1] f32 = X when chunk c is reached (the
/// per-chunk layout of state_index: S rows of D floats, then z).
template <int D, bool kRev, bool kSplit>
__global__ void __launch_bounds__(kThreads, kRev ? 2 : 3)
    state_mma_kernel(const bf* __restrict__ phi, const bf* __restrict__ phi_lo,
                     const bf* __restrict__ v, const float* __restrict__ dO,
                     const float* __restrict__ bl_all, float* __restrict__ out, Dims d) {
  using L = Layout<D, kRev, kSplit>;
  constexpr int D1 = L::D1, LV = L::LV, LS = L::LS, NT = D / 8;
  extern __shared__ __align__(128) char smem[];
  bf* sK = reinterpret_cast<bf*>(smem + L::k_hi);
  bf* sKl = reinterpret_cast<bf*>(smem + L::k_lo);
  bf* sV = reinterpret_cast<bf*>(smem + L::v_hi);
  bf* sVl = reinterpret_cast<bf*>(smem + L::v_lo);
  float* sRaw = reinterpret_cast<float*>(smem + L::raw);
  float* stage = reinterpret_cast<float*>(smem + L::stage);
  float* sw = reinterpret_cast<float*>(smem + L::wts);  // reverse: [0, 32) weights, [32] eend
  float* sdd = sw + kChunk + 8;                          // reverse: [32] dden
  float* sBl = reinterpret_cast<float*>(smem + L::bls);  // forward: bl of the chunk, 2 buffers

  const int F2 = 2 * d.F, f0 = blockIdx.x * kRows, bh = blockIdx.y, b = bh / d.H, h = bh % d.H;
  const int kvh = h / (d.H / d.Hkv), gh = d.Hg == 1 ? 0 : h;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, q = lane % 4;
  const int rows = min(kRows, F2 - f0);  // valid state rows here: 32 or 64 (F2 % 32 == 0)
  const bool active = warp * 16 < rows;  // warp-uniform
  const float* blr = bl_all + (int64_t(b) * d.Hg + gh) * d.T;

  // Issues chunk c's operand copies into buffer `buf` (rows past the end zero-filled).
  auto issue = [&](int c, int buf) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    constexpr int kUK = kRows / 8;  // 16-byte units per phi row
    for (int i = tid; i < kChunk * kUK; i += kThreads) {
      const int r = i / kUK, u = i % kUK;
      const int so = (buf * kChunk + r) * kLK + u * 8;
      if (r < n && u * 8 < rows) {
        const int64_t o = (int64_t(bh) * d.T + t0 + r) * F2 + f0 + u * 8;
        cp16(smem_u32(sK + so), phi + o);
        if constexpr (kSplit) cp16(smem_u32(sKl + so), phi_lo + o);
      } else {
        zero16(smem_u32(sK + so));
        if constexpr (kSplit) zero16(smem_u32(sKl + so));
      }
    }
    if constexpr (!kRev) {
      // bl of the chunk's tokens; slots n.. repeat token n - 1 (slot 31 is then bl_end)
      if (tid < kChunk) cp4(smem_u32(sBl + buf * kChunk + tid), blr + t0 + min(tid, n - 1));
      constexpr int kUV = D / 8;
      const bf* src = v + ((int64_t(b) * d.T + t0) * d.Hkv + kvh) * D;
      for (int i = tid; i < kChunk * kUV; i += kThreads) {
        const int r = i / kUV, u = i % kUV;
        const uint32_t dst = smem_u32(sV + (buf * kChunk + r) * LV + u * 8);
        if (r < n) cp16(dst, src + int64_t(r) * d.Hkv * D + u * 8);
        else zero16(dst);
      }
    } else {
      // the chunk's n rows of D+1 floats are one block dO[s, s + n (D+1)); raw[i] holds
      // dO[s0 + i] (s0 = s rounded down to 16 bytes), so the rows are raw[lo, hi)
      const int64_t s = (int64_t(bh) * d.T + t0) * D1, s0 = s & ~int64_t(3);
      const int lo = int(s - s0), hi = lo + n * D1, units = (hi + 3) / 4;
      const float* src = dO + s0;
      float* raw = sRaw + buf * L::kRaw;
      for (int i = tid; i < units; i += kThreads) {
        const int a = 4 * i;
        if (a >= lo && a + 4 <= hi) {
          cp16(smem_u32(raw + a), src + a);
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k)
            if (a + k >= lo && a + k < hi) cp4(smem_u32(raw + a + k), src + a + k);
        }
      }
      // a partial (last) chunk: its rows n.. read as zeros (plain stores to bytes no copy
      // writes; the barrier before the conversion orders both)
      for (int i = hi + tid; i < lo + kChunk * D1; i += kThreads) raw[i] = 0.f;
    }
  };
  // bl of token t0 + tid and of the chunk's last token (threads tid < 32 use them)
  auto load_bl = [&](int c, float& bt, float& bend) {
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    bt = tid < n ? blr[t0 + tid] : 0.f;
    bend = blr[t0 + n - 1];
  };

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  float z0 = 0.f, z1 = 0.f;  // z of this warp's rows g and g + 8
  float blc = 0.f, bec = 0.f;  // reverse: bl of token t0 + tid and of the chunk's last token
  // lanes 0-16 of each active warp copy the warp's 16 stage rows and its z values
  const bool copier = active && lane <= 16;
  const uint64_t policy = copier ? evict_first_policy() : 0;
  {
    const int c = kRev ? d.NC - 1 : 0;
    issue(c, 0);
    cp_commit();
    if constexpr (kRev)
      if (tid < kChunk) load_bl(c, blc, bec);
  }
  for (int it = 0; it < d.NC; ++it) {
    const int c = kRev ? d.NC - 1 - it : it, buf = it & 1;
    const int t0 = c * kChunk, n = min(kChunk, d.T - t0);
    cp_wait_all();    // this thread's copies of chunk c (the only group in flight)
    __syncthreads();  // everyone's copies visible; every read of buffer buf ^ 1 and (reverse)
                      // of the weights and dO' tiles of the previous chunk is done
    float bln = 0.f, ben = 0.f;
    if (it + 1 < d.NC) {
      const int cn = kRev ? c - 1 : c + 1;
      issue(cn, buf ^ 1);
      cp_commit();
      if constexpr (kRev)
        if (tid < kChunk) load_bl(cn, bln, ben);  // used next iteration: latency hidden
    }
    if constexpr (kRev) {
      // the weights of chunk c, the very expressions of state_tc_kernel (same operand bits)
      if (tid < kChunk) sw[tid] = tid < n ? __expf(blc) : 0.f;
      if (tid == 0) sw[kChunk] = __expf(bec);
      // dO' of chunk c as bf16 tiles [32][D] (hi, and lo when split) and the den column; the
      // thread's pairs are rows r0 + kStep k, columns j, j + 1 (rows past n are zeros in raw)
      constexpr int kStep = 2 * kThreads / D;  // rows per pass of the 128 threads
      static_assert(2 * kThreads % D == 0 && kChunk % kStep == 0, "whole passes");
      const int64_t s = (int64_t(bh) * d.T + t0) * D1;
      const float* raw = sRaw + buf * L::kRaw + int(s & 3);
      const int r0 = tid / (D / 2), j = 2 * (tid % (D / 2));
      const float* rp = raw + r0 * D1 + j;
      uint32_t* hp = reinterpret_cast<uint32_t*>(sV + r0 * LV + j);
      uint32_t* lp = reinterpret_cast<uint32_t*>(sVl + r0 * LV + j);
#pragma unroll
      for (int k = 0; k < kChunk / kStep; ++k) {
        const float x0 = rp[k * kStep * D1], x1 = rp[k * kStep * D1 + 1];
        if constexpr (kSplit) {
          uint32_t h, l;
          float2 hf;
          split_pair2(x0, x1, h, l, hf);
          hp[k * kStep * LV / 2] = h;
          lp[k * kStep * LV / 2] = l;
        } else {
          hp[k * kStep * LV / 2] = pack_bf16(x0, x1);
        }
      }
      if (tid < kChunk) sdd[tid] = raw[tid * D1 + D];
    }
    if (active) {
      // the state before chunk c, the warp's 16 rows, into its part of the stage once the
      // bulk copies of the previous chunk have read it; then lane l < 16 copies row l to row
      // f0 + 16 warp + l of out[b,h,c] (D floats: 16-byte aligned, as state_index lays the
      // block out with 2F a multiple of 32) and lane 16 the 16 z values (64 bytes, contiguous
      // in the block's z part).
      //
      // Row stride LS = D + 8 is 8 modulo the 32 banks: the 8-byte store of an accumulator
      // pair (rows g, columns 8 j + 2q, +1) by the whole warp covers words 8 g + 2 q, +1,
      // 64 distinct words, two per bank: the minimum of 2 wavefronts for 256 bytes.
      if (lane <= 16) bulk_wait_read();
      __syncwarp();
      float* sw0 = stage + warp * 16 * LS;
      float* szw = stage + kRows * LS + warp * 16;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        *reinterpret_cast<float2*>(sw0 + g * LS + 8 * j + 2 * q) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(sw0 + (g + 8) * LS + 8 * j + 2 * q) =
            make_float2(acc[j][2], acc[j][3]);
      }
      if (q == 0) {
        szw[g] = z0;
        szw[g + 8] = z1;
      }
      fence_proxy_async_smem();  // this lane's stage writes, visible to the bulk copies
      __syncwarp();
      float* ob = out + state_chunk(bh, c, d.NC, D, F2);
      if (lane < 16) {
        bulk_store(ob + state_s(f0 + warp * 16 + lane, 0, D), smem_u32(sw0 + lane * LS),
                   uint32_t(sizeof(float) * D), policy);
        bulk_commit();
      } else if (lane == 16) {
        bulk_store(ob + state_z(D, F2) + f0 + warp * 16, smem_u32(szw), uint32_t(sizeof(float) * 16),
                   policy);
        bulk_commit();
      }
    }
    if constexpr (kRev) __syncthreads();  // weights and dO' tiles complete
    if (active) {
      // the weights of the lane's tokens 16 kk + 8 hh + 2q, +1 and the decay exp(bl_end)
      float eend;
      float2 wv[kChunk / 16][2];
      if constexpr (kRev) {
        eend = sw[kChunk];
#pragma unroll
        for (int kk = 0; kk < kChunk / 16; ++kk)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh)
            wv[kk][hh] = *reinterpret_cast<const float2*>(sw + 16 * kk + 8 * hh + 2 * q);
      } else {
        // forward: from the chunk's bl row (every slot past n holds bl of token n - 1, so
        // slot 31 is bl_end), the very expressions of state_tc_kernel; tokens past n get
        // weight 1, not 0, but their phi rows are zero, so their products and z terms are
        // still exactly 0 (every exponent <= 0: no overflow)
        const float* bs = sBl + buf * kChunk;
        const float bend = bs[kChunk - 1];
        eend = __expf(bend);
#pragma unroll
        for (int kk = 0; kk < kChunk / 16; ++kk)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const float2 b2 = *reinterpret_cast<const float2*>(bs + 16 * kk + 8 * hh + 2 * q);
            wv[kk][hh] = make_float2(__expf(bend - b2.x), __expf(bend - b2.y));
          }
      }
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] *= eend;
      float zs0 = 0.f, zs1 = 0.f;
      const bf* kt = sK + buf * kChunk * kLK;
      const bf* ktl = sKl + buf * kChunk * kLK;
      const bf* vt = sV + (kRev ? 0 : buf * kChunk * LV);
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        // A = (decayed phi)^T rows 16 warp.., k = tokens 16 kk..: ldmatrix.trans of phi [r][f];
        // matrices (r 0-7, f 0-7), (r 0-7, f 8-15), (r 8-15, f 0-7), (r 8-15, f 8-15) are
        // a0 (row g, k 2q..), a1 (row g+8), a2 (row g, k 2q+8..), a3 (row g+8, k 2q+8..)
        const int ar = 16 * kk + (lane & 7) + ((lane >> 4) & 1) * 8;
        const int af = warp * 16 + ((lane >> 3) & 1) * 8;
        uint32_t ah[4], al[4];
        ldsm_t(ah, smem_u32(kt + ar * kLK + af));
        if constexpr (kSplit) ldsm_t(al, smem_u32(ktl + ar * kLK + af));
        uint32_t a[4], alo[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = 16 * kk + 2 * q + (i >= 2 ? 8 : 0);  // tokens r, r + 1 (r even)
          float2 ph = unpack2(ah[i]);
          if constexpr (kSplit) {
            const float2 pl = unpack2(al[i]);
            ph.x += pl.x;
            ph.y += pl.y;
          }
          const float2 w = wv[kk][i >> 1];
          const float x0 = ph.x * w.x, x1 = ph.y * w.y;
          float k0, k1;  // the rounded weights as f32 (what the mma sees)
          if constexpr (kSplit) {
            float2 hf;
            split_pair2(x0, x1, a[i], alo[i], hf);
            const float2 lf = unpack2(alo[i]);
            k0 = hf.x + lf.x;
            k1 = hf.y + lf.y;
          } else {
            a[i] = pack_bf16(x0, x1);
            const float2 hf = unpack2(a[i]);
            k0 = hf.x;
            k1 = hf.y;
          }
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
        // B = [v] or dO' rows 16 kk.., columns 16 p..: ldmatrix.trans of [r][j]; matrices
        // (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) are b0, b1 of
        // n-tile 2p and b0, b1 of n-tile 2p + 1
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
            ldsm_t(bb, smem_u32(sVl + br * LV + 16 * p + bc));
            mma_bf16(acc[2 * p], a, bb[0], bb[1]);
            mma_bf16(acc[2 * p + 1], a, bb[2], bb[3]);
          }
        }
      }
      // the quad's partial sums: lanes 4g..4g+3 hold the tokens of rows g and g + 8
      zs0 += __shfl_xor_sync(0xffffffffu, zs0, 1);
      zs0 += __shfl_xor_sync(0xffffffffu, zs0, 2);
      zs1 += __shfl_xor_sync(0xffffffffu, zs1, 1);
      zs1 += __shfl_xor_sync(0xffffffffu, zs1, 2);
      z0 = eend * z0 + zs0;
      z1 = eend * z1 + zs1;
    }
    blc = bln;
    bec = ben;
  }
  // the last states are written before the CTA (and its stage) ends
  if (copier) bulk_wait_all();
}

template <int D, bool kRev, bool kSplit>
void launch(const bf* phi, const bf* phi_lo, const bf* v, const float* dO, const float* bl,
            float* out, const Dims& d, cudaStream_t s) {
  using L = Layout<D, kRev, kSplit>;
  if (d.NC <= 0 || d.B * d.H == 0) return;  // no chunk: no state to write (and an empty grid)
  auto kernel = state_mma_kernel<D, kRev, kSplit>;
  LZ_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                int(L::bytes)) == cudaSuccess,
           "lizard state sweep (CUDA): cannot grant ", L::bytes, " bytes of shared memory");
  const dim3 grid((2 * d.F + kRows - 1) / kRows, d.B * d.H);
  kernel<<<grid, kThreads, L::bytes, s>>>(phi, phi_lo, v, dO, bl, out, d);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Whether LIZARD_STATE_KERNEL selects the wmma sweeps of lizard_attention_tc.cu (read per
/// call; kept as what the GPU tests compare the new sweeps against). Throws InputError naming
/// the variable for any value but mma, wmma or empty.
bool state_wmma_forced() { return env_switch("LIZARD_STATE_KERNEL", "mma", "wmma"); }

}  // namespace

bool state_mma_selected(const Dims& d) {
  const bool forced = state_wmma_forced();  // first: a bad value is an error at every shape
  return !forced && (d.D == 32 || d.D == 64 || d.D == 128) && d.F % 16 == 0 && 2 * d.F <= 256;
}

void state_mma_launch(const bf* phik, const bf* phik_lo, const bf* v, const float* bl,
                      float* states, bool split, const Dims& d, cudaStream_t s) {
  LZ_CHECK(!split || phik_lo, "lizard state sweep (CUDA): the split sweep needs phi_k's lo half");
  LZ_CHECK(aligned16(phik) && (!split || aligned16(phik_lo)) && aligned16(v) && aligned16(states),
           "lizard state sweep (CUDA): phi, phi_lo, v and the states must be 16-byte aligned");
#define LZ_STATE_FWD(D_)                                                       \
  case D_:                                                                     \
    if (split) return launch<D_, false, true>(phik, phik_lo, v, nullptr, bl, states, d, s); \
    return launch<D_, false, false>(phik, nullptr, v, nullptr, bl, states, d, s);
  switch (d.D) {
    LZ_STATE_FWD(32)
    LZ_STATE_FWD(64)
    LZ_STATE_FWD(128)
    default: break;
  }
#undef LZ_STATE_FWD
  throw Error("state_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

void dstate_mma_launch(const bf* phiq, const bf* phiq_lo, const float* dO, const float* bl,
                       float* dstates, const Dims& d, cudaStream_t s) {
  LZ_CHECK(phiq_lo, "lizard state sweep (CUDA): the dstate sweep needs phi_q's lo half");
  // dO' too: its chunk blocks are copied in aligned 16-byte units from the base
  LZ_CHECK(aligned16(phiq) && aligned16(phiq_lo) && aligned16(dO) && aligned16(dstates),
           "lizard state sweep (CUDA): phi, phi_lo, dO' and the dstates must be 16-byte aligned");
  // always split, as dstate_tc_launch: dstates feed the gate gradient's pair sums
  switch (d.D) {
    case 32: return launch<32, true, true>(phiq, phiq_lo, nullptr, dO, bl, dstates, d, s);
    case 64: return launch<64, true, true>(phiq, phiq_lo, nullptr, dO, bl, dstates, d, s);
    case 128: return launch<128, true, true>(phiq, phiq_lo, nullptr, dO, bl, dstates, d, s);
    default: break;
  }
  throw Error("dstate_mma_launch: head dim " + std::to_string(d.D) + " is not covered (32, 64, 128)");
}

}  // namespace lizard::cuda::lizard_detail
