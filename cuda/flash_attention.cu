// Causal softmax attention (the teacher), forward and backward, GQA without repeating K/V,
// optional sliding window. Nothing T x T is ever stored: the forward keeps an online softmax
// (running max m and sum l per query row) and saves only lse = m + log l per row.
//
// Two implementations:
//  * Tensor-core forward (bf16, D a multiple of 8 up to 128, padded to 64 or 128 in shared
//    memory with zeros, which changes no dot product): FlashAttention-2 style. A block owns 16
//    query rows per warp; K/V tiles of 64 keys stream through shared memory with cp.async,
//    double-buffered; S = Q K^T and O += P V run on mma.sync m16n8k16 (bf16 in, fp32
//    accumulate), fragments fed by ldmatrix (ldmatrix.trans for V). Rows are padded by 16
//    bytes so the 8 rows an ldmatrix reads fall in distinct banks.
//  * Reference kernels (any float dtype, D <= 256): one warp per query row (forward, dq) or
//    key row (dk/dv), fp32 throughout. They are the backward for now and the fallback for
//    f32 and odd head dims. Deterministic: every sum has a fixed order, no atomics.
#include <cuda_bf16.h>

#include <cstdlib>
#include <type_traits>

#include "kernel_util.cuh"
#include "lizard/cuda/flash_attention.h"
#include "mma_util.cuh"

namespace lizard::cuda {
namespace {

// ---------------------------------------------------------------------------------------
// Shared problem description.
struct AttnDims {
  int64_t B, T, H, Hkv, D;
  int64_t window;  // 0 = full causal
  float scale;
};

__device__ __forceinline__ bool visible(int64_t t, int64_t s, int64_t window) {
  return s <= t && (window <= 0 || t - s < window);
}

// ---------------------------------------------------------------------------------------
// Reference kernels: one warp per row, lane l holds dims l, l+32, ... (coalesced rows).
constexpr int kRefPer = 8;  // D <= 256

template <class T>
__device__ __forceinline__ void load_row(const T* p, int64_t D, float (&r)[kRefPer]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kRefPer; ++i) {
    const int64_t d = lane + 32 * i;
    r[i] = d < D ? load_f(p[d]) : 0.f;
  }
}
__device__ __forceinline__ float dot_row(const float (&a)[kRefPer], const float (&b)[kRefPer]) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kRefPer; ++i) s += a[i] * b[i];
  return warp_sum(s);
}
template <class T>
__device__ __forceinline__ void store_row(T* p, int64_t D, const float (&r)[kRefPer], float mul) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kRefPer; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) p[d] = Store<T>::from(r[i] * mul);
  }
}

// Row r = ((b * T) + t) * H + h.
template <class T>
__global__ void ref_fwd_kernel(const T* q, const T* k, const T* v, T* o, float* lse, AttnDims a) {
  const int64_t rows = a.B * a.T * a.H;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  const int64_t group = a.H / a.Hkv;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int64_t h = r % a.H, t = (r / a.H) % a.T, b = r / (a.H * a.T);
    const int64_t hk = h / group;
    float qr[kRefPer], acc[kRefPer] = {}, kr[kRefPer], vr[kRefPer];
    load_row(q + r * a.D, a.D, qr);
    float m = -INFINITY, l = 0.f;
    const int64_t s0 = a.window > 0 ? max(int64_t(0), t - a.window + 1) : 0;
    for (int64_t s = s0; s <= t; ++s) {
      const int64_t kv = ((b * a.T + s) * a.Hkv + hk) * a.D;
      load_row(k + kv, a.D, kr);
      load_row(v + kv, a.D, vr);
      const float x = dot_row(qr, kr) * a.scale;
      const float mn = fmaxf(m, x);
      const float corr = expf(m - mn), p = expf(x - mn);
      l = l * corr + p;
#pragma unroll
      for (int i = 0; i < kRefPer; ++i) acc[i] = acc[i] * corr + p * vr[i];
      m = mn;
    }
    store_row(o + r * a.D, a.D, acc, 1.f / l);
    if ((threadIdx.x & 31) == 0) lse[(b * a.H + h) * a.T + t] = m + logf(l);
  }
}

// delta[b, h, t] = sum_d dout * o (the softmax backward's row correction).
template <class T>
__global__ void delta_kernel(const T* dout, const T* o, float* delta, AttnDims a) {
  const int64_t rows = a.B * a.T * a.H;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int64_t h = r % a.H, t = (r / a.H) % a.T, b = r / (a.H * a.T);
    float dr[kRefPer], orow[kRefPer];
    load_row(dout + r * a.D, a.D, dr);
    load_row(o + r * a.D, a.D, orow);
    const float s = dot_row(dr, orow);
    if ((threadIdx.x & 31) == 0) delta[(b * a.H + h) * a.T + t] = s;
  }
}

// dq_t = scale * sum_s p_ts (dout_t . v_s - delta_t) k_s, p_ts = exp(scale q_t.k_s - lse_t).
template <class T>
__global__ void ref_dq_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                              const float* delta, T* dq, AttnDims a) {
  const int64_t rows = a.B * a.T * a.H;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  const int64_t group = a.H / a.Hkv;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int64_t h = r % a.H, t = (r / a.H) % a.T, b = r / (a.H * a.T);
    const int64_t hk = h / group;
    float qr[kRefPer], dr[kRefPer], kr[kRefPer], vr[kRefPer], acc[kRefPer] = {};
    load_row(q + r * a.D, a.D, qr);
    load_row(dout + r * a.D, a.D, dr);
    const float L = lse[(b * a.H + h) * a.T + t], dl = delta[(b * a.H + h) * a.T + t];
    const int64_t s0 = a.window > 0 ? max(int64_t(0), t - a.window + 1) : 0;
    for (int64_t s = s0; s <= t; ++s) {
      const int64_t kv = ((b * a.T + s) * a.Hkv + hk) * a.D;
      load_row(k + kv, a.D, kr);
      load_row(v + kv, a.D, vr);
      const float p = expf(dot_row(qr, kr) * a.scale - L);
      const float ds = p * (dot_row(dr, vr) - dl);
#pragma unroll
      for (int i = 0; i < kRefPer; ++i) acc[i] += ds * kr[i];
    }
    store_row(dq + r * a.D, a.D, acc, a.scale);
  }
}

// Key row r = ((b * T) + s) * Hkv + hk: sums over the heads of its group and the queries
// that see it, in a fixed order. dv_s = sum p dout_t; dk_s = scale * sum ds q_t.
template <class T>
__global__ void ref_dkdv_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                                const float* delta, T* dk, T* dv, AttnDims a) {
  const int64_t rows = a.B * a.T * a.Hkv;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  const int64_t group = a.H / a.Hkv;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int64_t hk = r % a.Hkv, s = (r / a.Hkv) % a.T, b = r / (a.Hkv * a.T);
    float kr[kRefPer], vr[kRefPer], qr[kRefPer], dr[kRefPer], ak[kRefPer] = {}, av[kRefPer] = {};
    load_row(k + r * a.D, a.D, kr);
    load_row(v + r * a.D, a.D, vr);
    const int64_t t1 = a.window > 0 ? min(a.T, s + a.window) : a.T;
    for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t t = s; t < t1; ++t) {
        const int64_t qrow = ((b * a.T + t) * a.H + h) * a.D;
        load_row(q + qrow, a.D, qr);
        load_row(dout + qrow, a.D, dr);
        const int64_t st = (b * a.H + h) * a.T + t;
        const float p = expf(dot_row(qr, kr) * a.scale - lse[st]);
        const float ds = p * (dot_row(dr, vr) - delta[st]);
#pragma unroll
        for (int i = 0; i < kRefPer; ++i) {
          av[i] += p * dr[i];
          ak[i] += ds * qr[i];
        }
      }
    }
    store_row(dk + r * a.D, a.D, ak, a.scale);
    store_row(dv + r * a.D, a.D, av, 1.f);
  }
}

// ---------------------------------------------------------------------------------------
// Tensor-core forward.
constexpr int kBlockN = 64;  // keys per tile
// Forward block shapes measured on an H200 at B=8,T=2048 / B=2,T=8192 (H=32, Hkv=8, D=128;
// `lizard bench ops`), with the first (untuned) kernel: 4 warps x 1 m-tile of 16 rows 1.45 /
// 5.19 ms, 8x1 1.42 / 4.79, 4x2 1.27 / 4.37, 4x2 with 32-key tiles 1.37 / 4.73, 8x2 (32 keys)
// 1.54 / 4.87. The tuned kernel below keeps 4x2 and 64-key tiles; tuned, it takes 0.84 / 2.96-3.21
// (docs/benchmarks/2026-11-27-attention-h200.md), and the untuned kernel is gone.
// The cp.async / ldmatrix / mma.sync helpers are in mma_util.cuh.

// Copies rows [r0, r0 + kRows) of a [T, ld]-strided bf16 matrix (first D columns) into shared
// memory rows of kStride elements; rows past T and columns past D become zeros.
template <int kRows, int kD, int kStride, int kThreads>
__device__ __forceinline__ void load_tile(__nv_bfloat16* sm, const __nv_bfloat16* g, int64_t r0,
                                          int64_t T, int64_t ld, int64_t D) {
  constexpr int kChunks = kD / 8;
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    __nv_bfloat16* dst = sm + r * kStride + c;
    if (r0 + r < T && c < D)
      cp_async16(dst, g + (r0 + r) * ld + c);
    else
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
}

// The forward grid: x = query tiles (launched latest first), y = batch x head; or with
// heavy_first, x = batch x head and y = query tiles, so the whole grid's latest (longest) tiles
// start first and the short early tiles fill the tail (longest-processing-time-first). Either
// way the query heads that share a kv head are adjacent, so their K/V reads meet in L2.
dim3 fwd_grid(const AttnDims& a, int block_m, bool heavy_first) {
  const unsigned tiles = static_cast<unsigned>((a.T + block_m - 1) / block_m);
  if (heavy_first) {
    LZ_CHECK(tiles < 65536, "flash_attention_forward: T = ", a.T, " gives ", tiles,
             " query tiles, over the grid's y limit (65535)");
    return dim3(static_cast<unsigned>(a.B * a.H), tiles);
  }
  LZ_CHECK(a.B * a.H < 65536, "flash_attention_forward: B * H = ", a.B * a.H,
           " exceeds the grid's y limit (65535)");
  return dim3(tiles, static_cast<unsigned>(a.B * a.H));
}

// ---------------------------------------------------------------------------------------
// Tuned tensor-core forward (every variant of flash_attention_forward_variant). FlashAttention-2's
// maths and fragment layouts at 4 warps x 2 m-tiles x kN keys (128 query
// rows per block, 2 blocks per SM; kN = 64, or 32 for the S registers of half a tile, which
// ends the spills at the cost of twice the barriers); what changes is what the loop carries:
//  * one barrier per key tile: the prefetch of tile j+1 is issued after the barrier that ends
//    tile j-1, so no second barrier has to protect the buffer it overwrites;
//  * the causal/window mask is compiled only into the tiles that need it (the one or two on
//    the diagonal, the window's first), so the interior tiles carry no index arithmetic, and
//    a warp skips a masked tile that hides every key from all its rows;
//  * 32-bit indices, 32-bit shared addresses and per-thread copy plans (fewer registers in a
//    kernel that sits at the 255 limit);
//  * the output goes through shared memory as 16-byte row stores;
//  * the accumulators are rescaled only when some row of the warp has a new max (a
//    warp-uniform vote on each thread's share of its rows' max; the quad shuffles that
//    complete the max run only then);
//  * kLazyRescale (FlashAttention-4's trick): the running max that the exponents subtract is
//    moved, and the accumulators rescaled, only when some row of the warp grows by more than
//    kRescaleSlack (log2 units); otherwise exponents are taken against the stale max, so
//    P <= 2^8, which fp32 sums and bf16 (8 exponent bits) hold with their usual relative
//    precision, and o = acc / l is unchanged.
constexpr float kRescaleSlack = 8.f;  // log2 units: P values stay <= 256

// Rows [r0, r0 + kRows) of a bf16 matrix with leading dimension ld (first D columns) into
// shared memory rows of kStride elements, by cp.async; rows at or past T and columns at or past
// D become zeros. Thread i copies column chunk i % (kD/8) of rows i / (kD/8) + p * kRowsPerPass.
template <int kRows, int kD, int kStride, int kThreads>
__device__ __forceinline__ void copy_rows(uint32_t sm, const __nv_bfloat16* g, int r0, int T,
                                          int64_t ld, int D) {
  constexpr int kChunks = kD / 8, kRowsPerPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kRows % kRowsPerPass == 0, "copy plan");
  const int row = threadIdx.x / kChunks, col = (threadIdx.x % kChunks) * 8;
  const bool col_ok = col < D;
  const __nv_bfloat16* src = g + int64_t(r0 + row) * ld + col;
  const uint32_t dst = sm + (row * kStride + col) * 2;
#pragma unroll
  for (int p = 0; p < kRows / kRowsPerPass; ++p) {
    if (col_ok && r0 + row + p * kRowsPerPass < T)
      cp_async16_u32(dst + p * kRowsPerPass * kStride * 2, src + p * kRowsPerPass * ld);
    else
      st_shared_zero16(dst + p * kRowsPerPass * kStride * 2);
  }
}

template <int kD, bool kLazyRescale, bool kHeavyFirst, int kN = 64>
__global__ void __launch_bounds__(128)
    fa_fwd_tuned_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                        const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o,
                        float* __restrict__ lse, AttnDims a) {
  constexpr int kMT = 2, kThreads = 128, kBlockM = 16 * 4 * kMT;
  constexpr int kStride = kD + 8;  // +16 bytes per row: conflict-free ldmatrix
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kBlockM][kStride]
  __nv_bfloat16* sK = sQ + kBlockM * kStride;                       // [2][kN][kStride]
  __nv_bfloat16* sV = sK + 2 * kN * kStride;                        // [2][kN][kStride]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int m_block = kHeavyFirst ? gridDim.y - 1 - blockIdx.y : gridDim.x - 1 - blockIdx.x;
  const int bh = kHeavyFirst ? blockIdx.x : blockIdx.y;
  const int H = static_cast<int>(a.H), T = static_cast<int>(a.T), D = static_cast<int>(a.D);
  const int b = bh / H, h = bh % H, hk = h / (H / static_cast<int>(a.Hkv));
  // A window at least T long hides nothing: treat it as full causal.
  const int window = a.window > 0 && a.window < a.T ? static_cast<int>(a.window) : 0;
  const int m0 = m_block * kBlockM;
  const int64_t ldq = a.H * a.D, ldk = a.Hkv * a.D;
  const __nv_bfloat16* qg = q + (int64_t(b) * a.T * a.H + h) * a.D;
  const __nv_bfloat16* kg = k + (int64_t(b) * a.T * a.Hkv + hk) * a.D;
  const __nv_bfloat16* vg = v + (int64_t(b) * a.T * a.Hkv + hk) * a.D;

  const int q_last = min(T - 1, m0 + kBlockM - 1);
  const int kv_begin = window > 0 ? max(0, m0 - window + 1) / kN * kN : 0;
  const int n_tiles = (q_last + 1 - kv_begin + kN - 1) / kN;

  // 32-bit shared addresses (bytes); a K or V buffer is kTileBytes.
  constexpr uint32_t kTileBytes = kN * kStride * 2;
  const uint32_t sQ_a = smem_u32(sQ), sK_a = smem_u32(sK), sV_a = smem_u32(sV);
  copy_rows<kBlockM, kD, kStride, kThreads>(sQ_a, qg, m0, T, ldq, D);
  copy_rows<kN, kD, kStride, kThreads>(sK_a, kg, kv_begin, T, ldk, D);
  copy_rows<kN, kD, kStride, kThreads>(sV_a, vg, kv_begin, T, ldk, D);
  cp_async_commit();

  const float scale_log2 = a.scale * 1.4426950408889634f;
  float acc[kMT][kD / 8][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
  // m_r: the max (log2 units) the row's exponents subtract; l_r: this thread's share of the
  // row sum against m_r (the quad's four shares are added at the end).
  float m_r[kMT][2], l_r[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) m_r[mt][0] = m_r[mt][1] = -INFINITY, l_r[mt][0] = l_r[mt][1] = 0.f;
  const int wrow = warp * 16 * kMT;  // the warp's first row within the block
  const int row0 = m0 + wrow + g;    // this thread's rows: row0 + 16 mt + 8 rr
  // ldmatrix offsets (elements) of this lane: A fragments of Q, B fragments of K (stored
  // [key][d]) and of V (stored [key][d], read transposed).
  const uint32_t q_a = sQ_a + 2 * ((wrow + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8);
  const uint32_t k_a = sK_a + 2 * (((lane & 7) + (lane >> 4) * 8) * kStride + ((lane >> 3) & 1) * 8);
  const uint32_t v_a = sV_a + 2 * (((lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8);

  // One key tile: S = Q K^T, mask (kMask only), online softmax, O += P V.
  auto tile = [&](auto mask_tag, uint32_t kb, uint32_t vb, int n0) {
    constexpr bool kMask = decltype(mask_tag)::value;
    if constexpr (kMask) {
      // A tile that hides every key from every row of this warp (the second diagonal tile for
      // the block's first 64 rows; tiles before a window) changes nothing: skip its work.
      const int w_first = m0 + wrow, w_last = w_first + 16 * kMT - 1;
      if (n0 > w_last || (window > 0 && w_first - (n0 + kN - 1) >= window)) return;
    }
    float s[kMT][kN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int i = 0; i < kN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldsm_x4(qa[mt], q_a + 2 * (mt * 16 * kStride + kk * 16));
#pragma unroll
      for (int nn = 0; nn < kN / 16; ++nn) {
        uint32_t bk[4];
        ldsm_x4(bk, kb + 2 * (nn * 16 * kStride + kk * 16));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_bf16(s[mt][2 * nn], qa[mt], bk[0], bk[1]);
          mma_bf16(s[mt][2 * nn + 1], qa[mt], bk[2], bk[3]);
        }
      }
    }
    if constexpr (kMask) {
      // Keys past T need no test: every stored row t < T already hides key > t.
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < kN / 8; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int t = row0 + mt * 16 + (e >> 1) * 8, key = n0 + i * 8 + 2 * t4 + (e & 1);
            if (key > t || (window > 0 && t - key >= window)) s[mt][i][e] = -INFINITY;
          }
    }
    // This thread's share of each row's max of the raw scores (scale > 0 keeps the order).
    float mx[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float m = fmaxf(s[mt][0][2 * rr], s[mt][0][2 * rr + 1]);
#pragma unroll
        for (int i = 1; i < kN / 8; ++i) m = fmaxf(m, fmaxf(s[mt][i][2 * rr], s[mt][i][2 * rr + 1]));
        mx[mt][rr] = m;
      }
    // Rescale only when some row of the warp grows past its max (plus the slack): a
    // warp-uniform branch, so no divergence; with no slack the result is exactly the eager one.
    // A row grows iff one of its quad's shares does (m_r is the same in the four lanes), so
    // the quad reduction is needed only inside the branch.
    bool grow = false;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr)
        grow |= mx[mt][rr] * scale_log2 > m_r[mt][rr] + (kLazyRescale ? kRescaleSlack : 0.f);
    if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
      for (int sh = 1; sh <= 2; sh <<= 1)
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int rr = 0; rr < 2; ++rr)
            mx[mt][rr] = fmaxf(mx[mt][rr], __shfl_xor_sync(0xffffffffu, mx[mt][rr], sh));
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const float m_new = fmaxf(m_r[mt][rr], mx[mt][rr] * scale_log2);
          // exp2(-inf - 0) = 0 for a row with nothing visible yet: its acc and l are zero.
          const float corr = fast_exp2(m_r[mt][rr] - (m_new == -INFINITY ? 0.f : m_new));
          m_r[mt][rr] = m_new;
          l_r[mt][rr] *= corr;
#pragma unroll
          for (int i = 0; i < kD / 8; ++i) {
            acc[mt][i][2 * rr] *= corr;
            acc[mt][i][2 * rr + 1] *= corr;
          }
        }
    }
    // P = exp2(scale_log2 s - m) in one FFMA + ex2 each, packed to bf16 A fragments (the S
    // accumulators of two adjacent 8-key tiles are exactly one A fragment of P V). Done in
    // 16-key chunks, in the order P V consumes them, so the tensor cores can start on chunk
    // kk while the exponents of chunk kk+1 are computed.
    float base[kMT][2], sum[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        base[mt][rr] = m_r[mt][rr] == -INFINITY ? 0.f : m_r[mt][rr];  // fully hidden row: P = 0
        sum[mt][rr] = 0.f;
      }
    uint32_t pa[kMT][kN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int i = 2 * kk; i < 2 * kk + 2; ++i)
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            s[mt][i][2 * rr] = fast_exp2(fmaf(s[mt][i][2 * rr], scale_log2, -base[mt][rr]));
            s[mt][i][2 * rr + 1] = fast_exp2(fmaf(s[mt][i][2 * rr + 1], scale_log2, -base[mt][rr]));
            sum[mt][rr] += s[mt][i][2 * rr] + s[mt][i][2 * rr + 1];
          }
        pa[mt][kk][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][kk][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][kk][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][kk][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) l_r[mt][rr] += sum[mt][rr];
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
#pragma unroll
      for (int dn = 0; dn < kD / 16; ++dn) {
        uint32_t bv[4];
        ldsm_x4_trans(bv, vb + 2 * (kk * 16 * kStride + dn * 16));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_bf16(acc[mt][2 * dn], pa[mt][kk], bv[0], bv[1]);
          mma_bf16(acc[mt][2 * dn + 1], pa[mt][kk], bv[2], bv[3]);
        }
      }
    }
  };

  for (int j = 0; j < n_tiles; ++j) {
    const int n0 = kv_begin + j * kN;
    cp_async_wait<0>();
    // Tile j is visible to every thread, and every warp is done with tile j-1, whose buffers
    // the prefetch below overwrites: the only barrier of the iteration.
    __syncthreads();
    if (j + 1 < n_tiles) {
      const int nb = (j + 1) & 1;
      copy_rows<kN, kD, kStride, kThreads>(sK_a + nb * kTileBytes, kg, n0 + kN, T, ldk, D);
      copy_rows<kN, kD, kStride, kThreads>(sV_a + nb * kTileBytes, vg, n0 + kN, T, ldk, D);
      cp_async_commit();
    }
    const uint32_t kb = k_a + (j & 1) * kTileBytes, vb = v_a + (j & 1) * kTileBytes;
    // The diagonal tiles (a key past the block's first row) and the window's first tiles.
    const bool need_mask = n0 + kN - 1 > m0 || (window > 0 && m0 + kBlockM - 1 - n0 >= window);
    if (need_mask)
      tile(std::true_type{}, kb, vb, n0);
    else
      tile(std::false_type{}, kb, vb, n0);
  }

  // o = acc / l, staged in the warp's own rows of sQ (no other warp reads them) so that the
  // global stores are whole 16-byte chunks of a row.
  float inv[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float l = l_r[mt][rr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[mt][rr] = l > 0.f ? 1.f / l : 0.f;
      const int t = row0 + mt * 16 + rr * 8;
      if (t4 == 0 && t < T) lse[(int64_t(b) * a.H + h) * a.T + t] = (m_r[mt][rr] + log2f(l)) * 0.6931471805599453f;
    }
  __syncwarp();  // every lane of the warp is past its last ldmatrix of sQ
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int i = 0; i < kD / 8; ++i)
        *reinterpret_cast<__nv_bfloat162*>(sQ + (wrow + mt * 16 + rr * 8 + g) * kStride + i * 8 + 2 * t4) =
            __floats2bfloat162_rn(acc[mt][i][2 * rr] * inv[mt][rr], acc[mt][i][2 * rr + 1] * inv[mt][rr]);
  __syncwarp();
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
#pragma unroll
  for (int it = 0; it < 16 * kMT * kChunks / 32; ++it) {
    const int c = lane + 32 * it, r = c / kChunks, col = (c % kChunks) * 8, t = m0 + wrow + r;
    if (t < T && col < D)
      *reinterpret_cast<uint4*>(o + ((int64_t(b) * a.T + t) * a.H + h) * a.D + col) =
          *reinterpret_cast<const uint4*>(sQ + (wrow + r) * kStride + col);
  }
}

template <int kD, bool kLazyRescale, bool kHeavyFirst, int kN = 64>
void launch_fwd_tuned(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o, Tensor& lse,
                      const AttnDims& a, void* stream) {
  constexpr int kBlockM = 128;
  LZ_CHECK(a.T <= (int64_t(1) << 30), "flash_attention_forward: T = ", a.T,
           " exceeds the tuned kernel's 32-bit row indices (2^30)");
  const size_t smem = size_t(kBlockM + 4 * kN) * (kD + 8) * sizeof(__nv_bfloat16);
  auto kern = fa_fwd_tuned_kernel<kD, kLazyRescale, kHeavyFirst, kN>;
  const cudaError_t e =
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  LZ_CHECK(e == cudaSuccess, "flash_attention_forward: cannot reserve ", smem,
           " bytes of shared memory: ", cudaGetErrorString(e));
  kern<<<fwd_grid(a, kBlockM, kHeavyFirst), 128, smem, as_stream(stream)>>>(
      static_cast<const __nv_bfloat16*>(q.raw()), static_cast<const __nv_bfloat16*>(k.raw()),
      static_cast<const __nv_bfloat16*>(v.raw()), static_cast<__nv_bfloat16*>(o.raw()),
      lse.data<float>(), a);
}

// ---------------------------------------------------------------------------------------
// Tensor-core backward (FlashAttention-2 recurrences, split into two kernels so every output
// is owned by one block: deterministic, no atomics; S and dP are recomputed in both).
//   dkdv: a block owns 64 keys of one kv head and walks every query tile (of every head in
//         the GQA group) that sees them: dV += P^T dO, dK += dS^T Q.
//   dq:   a block owns 64 query rows and walks their key tiles: dQ += dS K.
// with P = exp(scale S - lse), dS = P * (dO V^T - delta), delta = rowsum(dO * O).

// A fragment (16x16) from row-major shared memory [m][k] at (m0, k0).
__device__ __forceinline__ void ld_a(uint32_t (&r)[4], const __nv_bfloat16* sm, int m0, int k0,
                                     int stride) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(r, sm + (m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + k0 + (lane >> 4) * 8);
}
// B fragments of n-tiles n0 and n0+8 (k 16 deep) from shared memory stored [n][k].
__device__ __forceinline__ void ld_b_nk(uint32_t (&r)[4], const __nv_bfloat16* sm, int n0, int k0,
                                        int stride) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(r, sm + (n0 + (lane & 7) + (lane >> 4) * 8) * stride + k0 + ((lane >> 3) & 1) * 8);
}
// B fragments of n-tiles n0 and n0+8 (k 16 deep) from shared memory stored [k][n].
__device__ __forceinline__ void ld_b_kn(uint32_t (&r)[4], const __nv_bfloat16* sm, int k0, int n0,
                                        int stride) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4_trans(r, sm + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + n0 + (lane >> 4) * 8);
}

constexpr int kBwdTile = 64;  // keys per dkdv block, queries per dq block, and the inner tile
constexpr float kLog2e = 1.4426950408889634f;

/// The A fragment (16x16 bf16, round to nearest) of k-block kk of a row of m16n8 f32
/// accumulators x: n-tiles 2kk (k 0-7) and 2kk+1 (k 8-15), the C layout being A's.
template <int N>
__device__ __forceinline__ void pack_a(uint32_t (&r)[4], const float (&x)[N][4], int kk) {
  r[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
  r[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
  r[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
  r[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

/// One 16-deep k step kk of the backward's two score products over a kBwdTile-wide tile:
/// s += as bs^T and dp += ad bd^T, bs and bd in shared memory stored [n][k] (row stride kS).
__device__ __forceinline__ void mma_s_dp(float (&s)[kBwdTile / 8][4], float (&dp)[kBwdTile / 8][4],
                                         const uint32_t (&as)[4], const uint32_t (&ad)[4],
                                         const __nv_bfloat16* bs, const __nv_bfloat16* bd, int kk,
                                         int kS) {
#pragma unroll
  for (int nn = 0; nn < kBwdTile / 16; ++nn) {
    uint32_t fs[4], fd[4];
    ld_b_nk(fs, bs, nn * 16, kk * 16, kS);
    ld_b_nk(fd, bd, nn * 16, kk * 16, kS);
    mma_bf16_x2(s[2 * nn], s[2 * nn + 1], as, fs);
    mma_bf16_x2(dp[2 * nn], dp[2 * nn + 1], ad, fd);
  }
}

template <int kD>
__global__ void __launch_bounds__(128)
    fa_bwd_dkdv_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                       const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ dout,
                       const float* __restrict__ lse, const float* __restrict__ delta,
                       __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv, AttnDims a) {
  constexpr int kS = kD + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sV = sK + kBwdTile * kS;
  __nv_bfloat16* sQ = sV + kBwdTile * kS;
  __nv_bfloat16* sO = sQ + kBwdTile * kS;  // dO tile
  float* sL = reinterpret_cast<float*>(sO + kBwdTile * kS);
  float* sDl = sL + kBwdTile;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t bk = blockIdx.y, b = bk / a.Hkv, hk = bk % a.Hkv, group = a.H / a.Hkv;
  const int64_t k0 = int64_t(blockIdx.x) * kBwdTile;
  const int64_t ldq = a.H * a.D, ldk = a.Hkv * a.D;
  const __nv_bfloat16* kg = k + (b * a.T * a.Hkv + hk) * a.D;
  const __nv_bfloat16* vg = v + (b * a.T * a.Hkv + hk) * a.D;
  load_tile<kBwdTile, kD, kS, 128>(sK, kg, k0, a.T, ldk, a.D);
  load_tile<kBwdTile, kD, kS, 128>(sV, vg, k0, a.T, ldk, a.D);
  cp_async_commit();

  float dk_acc[kD / 8][4], dv_acc[kD / 8][4];
#pragma unroll
  for (int i = 0; i < kD / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[i][e] = dv_acc[i][e] = 0.f;
  const float sl2 = a.scale * kLog2e;
  const int64_t q_end = a.window > 0 ? min(a.T, k0 + kBwdTile - 1 + a.window) : a.T;

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const __nv_bfloat16* qg = q + (b * a.T * a.H + h) * a.D;
    const __nv_bfloat16* og = dout + (b * a.T * a.H + h) * a.D;
    for (int64_t q0 = k0; q0 < q_end; q0 += kBwdTile) {
      __syncthreads();  // previous tile fully consumed
      load_tile<kBwdTile, kD, kS, 128>(sQ, qg, q0, a.T, ldq, a.D);
      load_tile<kBwdTile, kD, kS, 128>(sO, og, q0, a.T, ldq, a.D);
      cp_async_commit();
      if (threadIdx.x < kBwdTile) {
        const int64_t t = q0 + threadIdx.x;
        // A row past T gets lse = +inf, so its P is exactly 0.
        sL[threadIdx.x] = t < a.T ? lse[(b * a.H + h) * a.T + t] * kLog2e : INFINITY;
        sDl[threadIdx.x] = t < a.T ? delta[(b * a.H + h) * a.T + t] : 0.f;
      }
      cp_async_wait<0>();
      __syncthreads();

      // S^T = K Q^T: this warp's 16 keys x 64 queries.
      float s[kBwdTile / 8][4], dp[kBwdTile / 8][4];
#pragma unroll
      for (int i = 0; i < kBwdTile / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        uint32_t ka[4], va[4];
        ld_a(ka, sK, warp * 16, kk * 16, kS);
        ld_a(va, sV, warp * 16, kk * 16, kS);
        mma_s_dp(s, dp, ka, va, sQ, sO, kk, kS);  // dP^T = V dO^T
      }
      const bool need_mask = q0 < k0 + kBwdTile || q0 + kBwdTile > a.T || k0 + kBwdTile > a.T ||
                             (a.window > 0 && q0 + kBwdTile - 1 - k0 >= a.window);
#pragma unroll
      for (int i = 0; i < kBwdTile / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = i * 8 + 2 * t4 + (e & 1);
          const int64_t key = k0 + warp * 16 + g + (e >> 1) * 8, t = q0 + qi;
          float p = exp2f(s[i][e] * sl2 - sL[qi]);
          if (need_mask && (key >= a.T || t >= a.T || !visible(t, key, a.window))) p = 0.f;
          s[i][e] = p;
          dp[i][e] = p * (dp[i][e] - sDl[qi]);  // dS^T
        }
      }
      // dV += P^T dO and dK += dS^T Q (k = the 64 queries).
#pragma unroll
      for (int kk = 0; kk < kBwdTile / 16; ++kk) {
        uint32_t pa[4], da[4];
        pack_a(pa, s, kk);
        pack_a(da, dp, kk);
#pragma unroll
        for (int dn = 0; dn < kD / 16; ++dn) {
          uint32_t bo[4], bq[4];
          ld_b_kn(bo, sO, kk * 16, dn * 16, kS);
          ld_b_kn(bq, sQ, kk * 16, dn * 16, kS);
          mma_bf16_x2(dv_acc[2 * dn], dv_acc[2 * dn + 1], pa, bo);
          mma_bf16_x2(dk_acc[2 * dn], dk_acc[2 * dn + 1], da, bq);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t key = k0 + warp * 16 + g + rr * 8;
    if (key >= a.T) continue;
    const int64_t off = ((b * a.T + key) * a.Hkv + hk) * a.D;
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) {
      const int d = i * 8 + 2 * t4;
      if (d < a.D) {
        *reinterpret_cast<__nv_bfloat162*>(dk + off + d) =
            __floats2bfloat162_rn(dk_acc[i][2 * rr] * a.scale, dk_acc[i][2 * rr + 1] * a.scale);
        *reinterpret_cast<__nv_bfloat162*>(dv + off + d) =
            __floats2bfloat162_rn(dv_acc[i][2 * rr], dv_acc[i][2 * rr + 1]);
      }
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(128)
    fa_bwd_dq_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                     const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ dout,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     __nv_bfloat16* __restrict__ dq, AttnDims a) {
  constexpr int kS = kD + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sO = sQ + kBwdTile * kS;
  __nv_bfloat16* sK = sO + kBwdTile * kS;      // [2][64][kS]
  __nv_bfloat16* sV = sK + 2 * kBwdTile * kS;  // [2][64][kS]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t m_block = gridDim.x - 1 - blockIdx.x;
  const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H, hk = h / (a.H / a.Hkv);
  const int64_t m0 = m_block * kBwdTile;
  const int64_t ldq = a.H * a.D, ldk = a.Hkv * a.D;
  const __nv_bfloat16* qg = q + (b * a.T * a.H + h) * a.D;
  const __nv_bfloat16* og = dout + (b * a.T * a.H + h) * a.D;
  const __nv_bfloat16* kg = k + (b * a.T * a.Hkv + hk) * a.D;
  const __nv_bfloat16* vg = v + (b * a.T * a.Hkv + hk) * a.D;
  const int64_t q_last = min(a.T - 1, m0 + kBwdTile - 1);
  const int64_t kv_begin = a.window > 0 ? max(int64_t(0), m0 - a.window + 1) / kBwdTile * kBwdTile : 0;
  const int n_tiles = static_cast<int>((q_last + 1 - kv_begin + kBwdTile - 1) / kBwdTile);

  load_tile<kBwdTile, kD, kS, 128>(sQ, qg, m0, a.T, ldq, a.D);
  load_tile<kBwdTile, kD, kS, 128>(sO, og, m0, a.T, ldq, a.D);
  load_tile<kBwdTile, kD, kS, 128>(sK, kg, kv_begin, a.T, ldk, a.D);
  load_tile<kBwdTile, kD, kS, 128>(sV, vg, kv_begin, a.T, ldk, a.D);
  cp_async_commit();

  const int64_t row0 = m0 + warp * 16 + g;
  float lse_r[2], dl_r[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t t = row0 + rr * 8;
    lse_r[rr] = t < a.T ? lse[(b * a.H + h) * a.T + t] * kLog2e : INFINITY;
    dl_r[rr] = t < a.T ? delta[(b * a.H + h) * a.T + t] : 0.f;
  }
  const float sl2 = a.scale * kLog2e;
  uint32_t qf[kD / 16][4];  // dO fragments are re-read from shared memory: saves 32 registers
  float acc[kD / 8][4];
#pragma unroll
  for (int i = 0; i < kD / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

  for (int j = 0; j < n_tiles; ++j) {
    const int64_t n0 = kv_begin + int64_t(j) * kBwdTile;
    if (j + 1 < n_tiles) {
      const int nb = (j + 1) & 1;
      load_tile<kBwdTile, kD, kS, 128>(sK + nb * kBwdTile * kS, kg, n0 + kBwdTile, a.T, ldk, a.D);
      load_tile<kBwdTile, kD, kS, 128>(sV + nb * kBwdTile * kS, vg, n0 + kBwdTile, a.T, ldk, a.D);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        ld_a(qf[kk], sQ, warp * 16, kk * 16, kS);
      }
    }
    const __nv_bfloat16* sKb = sK + (j & 1) * kBwdTile * kS;
    const __nv_bfloat16* sVb = sV + (j & 1) * kBwdTile * kS;
    float s[kBwdTile / 8][4], dp[kBwdTile / 8][4];
#pragma unroll
    for (int i = 0; i < kBwdTile / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t of[4];
      ld_a(of, sO, warp * 16, kk * 16, kS);
      mma_s_dp(s, dp, qf[kk], of, sKb, sVb, kk, kS);  // dP = dO V^T
    }
    const bool need_mask = n0 + kBwdTile - 1 > m0 || n0 + kBwdTile > a.T ||
                           (a.window > 0 && m0 + kBwdTile - 1 - n0 >= a.window);
#pragma unroll
    for (int i = 0; i < kBwdTile / 8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = e >> 1;
        const int64_t t = row0 + rr * 8, key = n0 + i * 8 + 2 * t4 + (e & 1);
        float p = exp2f(s[i][e] * sl2 - lse_r[rr]);
        if (need_mask && (key >= a.T || !visible(t, key, a.window))) p = 0.f;
        dp[i][e] = p * (dp[i][e] - dl_r[rr]);  // dS
      }
    }
    // dQ += dS K (k = the 64 keys; K stored [key][d]).
#pragma unroll
    for (int kk = 0; kk < kBwdTile / 16; ++kk) {
      uint32_t da[4];
      pack_a(da, dp, kk);
#pragma unroll
      for (int dn = 0; dn < kD / 16; ++dn) {
        uint32_t bk[4];
        ld_b_kn(bk, sKb, kk * 16, dn * 16, kS);
        mma_bf16_x2(acc[2 * dn], acc[2 * dn + 1], da, bk);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t t = row0 + rr * 8;
    if (t >= a.T) continue;
    __nv_bfloat16* row = dq + ((b * a.T + t) * a.H + h) * a.D;
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) {
      const int d = i * 8 + 2 * t4;
      if (d < a.D)
        *reinterpret_cast<__nv_bfloat162*>(row + d) =
            __floats2bfloat162_rn(acc[i][2 * rr] * a.scale, acc[i][2 * rr + 1] * a.scale);
    }
  }
}

template <int kD>
void launch_bwd_tc(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& lse, const Tensor& delta, Tensor& dq, Tensor& dk, Tensor& dv,
                   const AttnDims& a, void* stream) {
  const size_t tile = size_t(kBwdTile) * (kD + 8) * sizeof(__nv_bfloat16);
  const size_t smem_kv = 4 * tile + 2 * kBwdTile * sizeof(float);
  const size_t smem_q = 6 * tile;
  auto kkv = fa_bwd_dkdv_kernel<kD>;
  auto kq = fa_bwd_dq_kernel<kD>;
  for (auto [fn, bytes] : {std::pair<const void*, size_t>{(const void*)kkv, smem_kv}, {(const void*)kq, smem_q}}) {
    if (bytes > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(bytes));
      LZ_CHECK(e == cudaSuccess, "flash_attention_backward: cannot reserve ", bytes,
               " bytes of shared memory: ", cudaGetErrorString(e));
    }
  }
  const auto* pq = static_cast<const __nv_bfloat16*>(q.raw());
  const auto* pk = static_cast<const __nv_bfloat16*>(k.raw());
  const auto* pv = static_cast<const __nv_bfloat16*>(v.raw());
  const auto* po = static_cast<const __nv_bfloat16*>(dout.raw());
  LZ_CHECK(a.B * a.H < 65536, "flash_attention_backward: B * H = ", a.B * a.H,
           " exceeds the grid's y limit (65535)");
  const unsigned tiles = static_cast<unsigned>((a.T + kBwdTile - 1) / kBwdTile);
  kkv<<<dim3(tiles, static_cast<unsigned>(a.B * a.Hkv)), 128, smem_kv, as_stream(stream)>>>(
      pq, pk, pv, po, lse.data<float>(), delta.data<float>(), static_cast<__nv_bfloat16*>(dk.raw()),
      static_cast<__nv_bfloat16*>(dv.raw()), a);
  kq<<<dim3(tiles, static_cast<unsigned>(a.B * a.H)), 128, smem_q, as_stream(stream)>>>(
      pq, pk, pv, po, lse.data<float>(), delta.data<float>(), static_cast<__nv_bfloat16*>(dq.raw()), a);
}

int warp_rows_grid(int64_t rows) { return grid_for(rows * 32, 256); }

AttnDims check_attn(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                    double scale, int64_t window) {
  require_contiguous(q, op, "q");
  require_contiguous(k, op, "k");
  require_contiguous(v, op, "v");
  LZ_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be [B, T, H, D]: ",
           q.desc(), ", ", k.desc(), ", ", v.desc());
  LZ_CHECK(k.shape() == v.shape() && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
               k.size(3) == q.size(3),
           op, ": k ", k.desc(), " / v ", v.desc(), " do not match q ", q.desc());
  LZ_CHECK(k.size(2) > 0 && q.size(2) % k.size(2) == 0, op, ": H = ", q.size(2),
           " is not a multiple of Hkv = ", k.size(2));
  LZ_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": dtypes differ: ", q.desc(),
           ", ", k.desc(), ", ", v.desc());
  LZ_CHECK(q.size(3) <= 32 * kRefPer, op, ": head dim ", q.size(3), " exceeds ", 32 * kRefPer);
  LZ_CHECK(window >= 0, op, ": window must be >= 0 (0 = full causal), got ", window);
  return AttnDims{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), window,
                  static_cast<float>(scale)};
}

/// The warp-per-row reference forward (any float dtype): the fallback and the GPU oracle.
void launch_ref_fwd(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                    Tensor& lse, const AttnDims& a, void* stream) {
  visit_storage(q.dtype(), op, [&](auto z) {
    using T = decltype(z);
    ref_fwd_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
        static_cast<const T*>(v.raw()), static_cast<T*>(o.raw()), lse.data<float>(), a);
  });
}

bool tc_eligible(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o) {
  return q.dtype() == DType::BF16 && q.size(3) % 8 == 0 && q.size(3) <= 128 && aligned16(q.raw()) &&
         aligned16(k.raw()) && aligned16(v.raw()) && aligned16(o.raw());
}

}  // namespace

namespace {

// Forward variants (LIZARD_FA_FWD_VARIANT); each computes the same function, see the header.
// Measured on an H200 (B=8,T=2048 / B=2,T=8192, ms; torch SDPA 0.925 / 3.302): 0 = lazy
// rescale, heavy blocks first, 64-key tiles 0.840-0.851 / 2.964-3.210; 1 = the same with 32-key
// tiles 0.840-0.850 / 3.111-3.178; 2 = exact rescale (the max moves at every new max), heavy
// first 0.895 / 3.334-3.372. Without heavy-first ordering: 0.873-0.925 / 3.180-3.370.
constexpr int kForwardVariants = 3;
constexpr int kDefaultForwardVariant = 0;

template <int kD>
void launch_fwd_variant(int variant, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                        Tensor& lse, const AttnDims& a, void* stream) {
  switch (variant) {
    case 0: launch_fwd_tuned<kD, true, true>(q, k, v, o, lse, a, stream); break;
    case 1: launch_fwd_tuned<kD, true, true, kBlockN / 2>(q, k, v, o, lse, a, stream); break;
    default: launch_fwd_tuned<kD, false, true>(q, k, v, o, lse, a, stream); break;
  }
}

// The variant LIZARD_FA_FWD_VARIANT names, read at every call (no cached global) so that a
// benchmark or test can switch it between calls; unset or empty gives the default.
int forward_variant_from_env() {
  const char* e = std::getenv("LIZARD_FA_FWD_VARIANT");
  if (!e || !*e) return kDefaultForwardVariant;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  if (*end != '\0' || v < 0 || v >= kForwardVariants)
    throw InputError(str_cat("LIZARD_FA_FWD_VARIANT='", e, "': expected an integer in 0..",
                             kForwardVariants - 1, " (flash-attention forward kernel variant)"));
  return static_cast<int>(v);
}

AttnDims check_fwd(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                   int64_t window, const Tensor& o, const Tensor& lse) {
  const AttnDims a = check_attn(op, q, k, v, scale, window);
  require_contiguous(o, op, "o");
  require_contiguous(lse, op, "lse");
  LZ_CHECK(o.shape() == q.shape() && o.dtype() == q.dtype(), op, ": o ", o.desc(), " vs q ", q.desc());
  LZ_CHECK(lse.dtype() == DType::F32 && lse.numel() == a.B * a.H * a.T, op,
           ": lse must be f32 [B, H, T], got ", lse.desc());
  return a;
}

}  // namespace

void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                             int64_t window, Tensor& o, Tensor& lse, void* stream) {
  flash_attention_forward_variant(q, k, v, scale, window, o, lse, forward_variant_from_env(), stream);
}

int flash_attention_forward_variant_count() { return kForwardVariants; }

void flash_attention_forward_variant(const Tensor& q, const Tensor& k, const Tensor& v,
                                     double scale, int64_t window, Tensor& o, Tensor& lse,
                                     int variant, void* stream) {
  const char* op = "cuda::flash_attention_forward";
  LZ_CHECK(variant >= 0 && variant < kForwardVariants, op, ": variant must be in 0..",
           kForwardVariants - 1, ", got ", variant);
  const AttnDims a = check_fwd(op, q, k, v, scale, window, o, lse);
  if (q.numel() == 0) return;
  if (tc_eligible(q, k, v, o)) {
    if (a.D <= 64)
      launch_fwd_variant<64>(variant, q, k, v, o, lse, a, stream);
    else
      launch_fwd_variant<128>(variant, q, k, v, o, lse, a, stream);
  } else {
    launch_ref_fwd(op, q, k, v, o, lse, a, stream);
  }
  check_last_error(op);
}


namespace {
void backward_impl(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& o, const Tensor& lse, double scale, int64_t window, Tensor& dq,
                   Tensor& dk, Tensor& dv, void* stream, bool use_tensor_cores) {
  const char* op = "cuda::flash_attention_backward";
  const AttnDims a = check_attn(op, q, k, v, scale, window);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dout, &o, &dq})
    LZ_CHECK(t->shape() == q.shape() && t->dtype() == q.dtype() && t->is_contiguous(), op, ": ",
             t->desc(), " must match q ", q.desc());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dk, &dv})
    LZ_CHECK(t->shape() == k.shape() && t->dtype() == k.dtype() && t->is_contiguous(), op, ": ",
             t->desc(), " must match k ", k.desc());
  LZ_CHECK(lse.dtype() == DType::F32 && lse.numel() == a.B * a.H * a.T && lse.is_contiguous(), op,
           ": lse must be f32 [B, H, T], got ", lse.desc());
  if (q.numel() == 0) return;
  Tensor delta = Tensor::empty({a.B, a.H, a.T}, DType::F32, q.device());
  const bool tc = use_tensor_cores && tc_eligible(q, k, v, dout) && aligned16(dq.raw()) &&
                  aligned16(dk.raw()) && aligned16(dv.raw());
  visit_storage(q.dtype(), op, [&](auto z) {
    using T = decltype(z);
    auto s = as_stream(stream);
    const T* pdo = static_cast<const T*>(dout.raw());
    const T* pq = static_cast<const T*>(q.raw());
    const T* pk = static_cast<const T*>(k.raw());
    const T* pv = static_cast<const T*>(v.raw());
    delta_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, s>>>(
        pdo, static_cast<const T*>(o.raw()), delta.data<float>(), a);
    if (tc && std::is_same_v<T, bf16>) {
      if (a.D <= 64)
        launch_bwd_tc<64>(dout, q, k, v, lse, delta, dq, dk, dv, a, stream);
      else
        launch_bwd_tc<128>(dout, q, k, v, lse, delta, dq, dk, dv, a, stream);
      return;
    }
    ref_dq_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, s>>>(
        pdo, pq, pk, pv, lse.data<float>(), delta.data<float>(), static_cast<T*>(dq.raw()), a);
    ref_dkdv_kernel<T><<<warp_rows_grid(a.B * a.T * a.Hkv), 256, 0, s>>>(
        pdo, pq, pk, pv, lse.data<float>(), delta.data<float>(), static_cast<T*>(dk.raw()),
        static_cast<T*>(dv.raw()), a);
  });
  check_last_error(op);
}

}  // namespace

void flash_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& o, const Tensor& lse, double scale,
                              int64_t window, Tensor& dq, Tensor& dk, Tensor& dv, void* stream) {
  backward_impl(dout, q, k, v, o, lse, scale, window, dq, dk, dv, stream, true);
}

void flash_attention_backward_reference(const Tensor& dout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& o, const Tensor& lse,
                                        double scale, int64_t window, Tensor& dq, Tensor& dk,
                                        Tensor& dv, void* stream) {
  backward_impl(dout, q, k, v, o, lse, scale, window, dq, dk, dv, stream, false);
}

/// Forward through the reference (warp-per-row) kernel regardless of dtype: the oracle the
/// GPU tests compare the tensor-core path against on the same device.
void flash_attention_forward_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t window, Tensor& o, Tensor& lse,
                                       void* stream) {
  const char* op = "cuda::flash_attention_forward_reference";
  const AttnDims a = check_attn(op, q, k, v, scale, window);
  if (q.numel() == 0) return;
  launch_ref_fwd(op, q, k, v, o, lse, a, stream);
  check_last_error(op);
}

}  // namespace lizard::cuda
