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

#include "kernel_util.cuh"
#include "lizard/cuda/flash_attention.h"

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

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
// d += a (16x16 bf16, row) * b (16x8 bf16, col), fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

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

template <int kD, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    fa_fwd_tc_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                     const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o,
                     float* __restrict__ lse, AttnDims a) {
  constexpr int kBlockM = 16 * kWarps;
  constexpr int kStride = kD + 8;  // +16 bytes per row: conflict-free ldmatrix
  constexpr int kThreads = kWarps * 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sK = sQ + kBlockM * kStride;      // [2][kBlockN][kStride]
  __nv_bfloat16* sV = sK + 2 * kBlockN * kStride;  // [2][kBlockN][kStride]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  // Longest (latest) query tiles first: causal work grows with the tile index.
  const int64_t m_block = gridDim.x - 1 - blockIdx.x;
  const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H, hk = h / (a.H / a.Hkv);
  const int64_t m0 = m_block * kBlockM;
  const int64_t ldq = a.H * a.D, ldk = a.Hkv * a.D;
  const __nv_bfloat16* qg = q + (b * a.T * a.H + h) * a.D;
  const __nv_bfloat16* kg = k + (b * a.T * a.Hkv + hk) * a.D;
  const __nv_bfloat16* vg = v + (b * a.T * a.Hkv + hk) * a.D;

  const int64_t q_last = min(a.T - 1, m0 + kBlockM - 1);
  const int64_t kv_begin = a.window > 0 ? max(int64_t(0), m0 - a.window + 1) / kBlockN * kBlockN : 0;
  const int64_t kv_end = q_last + 1;  // exclusive
  const int n_tiles = static_cast<int>((kv_end - kv_begin + kBlockN - 1) / kBlockN);

  load_tile<kBlockM, kD, kStride, kThreads>(sQ, qg, m0, a.T, ldq, a.D);
  load_tile<kBlockN, kD, kStride, kThreads>(sK, kg, kv_begin, a.T, ldk, a.D);
  load_tile<kBlockN, kD, kStride, kThreads>(sV, vg, kv_begin, a.T, ldk, a.D);
  cp_async_commit();

  const float scale_log2 = a.scale * 1.4426950408889634f;
  uint32_t qf[kD / 16][4];
  float acc[kD / 8][4];
#pragma unroll
  for (int i = 0; i < kD / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.f, 0.f};
  const int64_t row0 = m0 + warp * 16 + g;  // this thread's rows: row0 and row0 + 8

  for (int j = 0; j < n_tiles; ++j) {
    const int64_t n0 = kv_begin + int64_t(j) * kBlockN;
    if (j + 1 < n_tiles) {
      const int nb = (j + 1) & 1;
      load_tile<kBlockN, kD, kStride, kThreads>(sK + nb * kBlockN * kStride, kg, n0 + kBlockN, a.T, ldk, a.D);
      load_tile<kBlockN, kD, kStride, kThreads>(sV + nb * kBlockN * kStride, vg, n0 + kBlockN, a.T, ldk, a.D);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const int r = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], sQ + r * kStride + c);
      }
    }
    const __nv_bfloat16* sKb = sK + (j & 1) * kBlockN * kStride;
    const __nv_bfloat16* sVb = sV + (j & 1) * kBlockN * kStride;

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float s[kBlockN / 8][4];
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t bk[4];
        const int r = nn * 16 + (lane & 7) + (lane >> 4) * 8, c = kk * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(bk, sKb + r * kStride + c);
        mma_bf16(s[2 * nn], qf[kk], bk[0], bk[1]);
        mma_bf16(s[2 * nn + 1], qf[kk], bk[2], bk[3]);
      }
    }

    // Mask only tiles that touch the diagonal, the window edge or the sequence end.
    const bool need_mask = n0 + kBlockN - 1 > m0 || n0 + kBlockN > a.T ||
                           (a.window > 0 && m0 + kBlockM - 1 - n0 >= a.window);
#pragma unroll
    for (int i = 0; i < kBlockN / 8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t t = row0 + (e >> 1) * 8, key = n0 + i * 8 + 2 * t4 + (e & 1);
        float x = s[i][e] * scale_log2;
        if (need_mask && (key >= a.T || !visible(t, key, a.window))) x = -INFINITY;
        s[i][e] = x;
      }
    }
    // Online softmax over the two rows this thread holds (a quad shares a row).
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = m_r[rr];
#pragma unroll
      for (int i = 0; i < kBlockN / 8; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * rr], s[i][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == -INFINITY ? 0.f : mx;  // a fully masked row stays all-zero
      const float corr = exp2f(m_r[rr] - base);
      m_r[rr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < kBlockN / 8; ++i) {
        s[i][2 * rr] = exp2f(s[i][2 * rr] - base);
        s[i][2 * rr + 1] = exp2f(s[i][2 * rr + 1] - base);
        sum += s[i][2 * rr] + s[i][2 * rr + 1];
      }
      l_r[rr] = l_r[rr] * corr + sum;
#pragma unroll
      for (int i = 0; i < kD / 8; ++i) {
        acc[i][2 * rr] *= corr;
        acc[i][2 * rr + 1] *= corr;
      }
    }
    // O += P V: the S accumulators of two adjacent key tiles are exactly an A fragment.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                        pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                        pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dn = 0; dn < kD / 16; ++dn) {
        uint32_t bv[4];
        const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = dn * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(bv, sVb + r * kStride + c);
        mma_bf16(acc[2 * dn], pa, bv[0], bv[1]);
        mma_bf16(acc[2 * dn + 1], pa, bv[2], bv[3]);
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites the buffer just read
  }

#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float l = l_r[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int64_t t = row0 + rr * 8;
    if (t >= a.T) continue;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    __nv_bfloat16* orow = o + ((b * a.T + t) * a.H + h) * a.D;
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) {
      const int d = i * 8 + 2 * t4;
      if (d < a.D)
        *reinterpret_cast<__nv_bfloat162*>(orow + d) =
            __floats2bfloat162_rn(acc[i][2 * rr] * inv, acc[i][2 * rr + 1] * inv);
    }
    if (t4 == 0) lse[(b * a.H + h) * a.T + t] = (m_r[rr] + log2f(l)) * 0.6931471805599453f;
  }
}

template <int kD, int kWarps>
void launch_fwd_tc(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o, Tensor& lse,
                   const AttnDims& a, void* stream) {
  constexpr int kBlockM = 16 * kWarps;
  const size_t smem = size_t(kBlockM + 4 * kBlockN) * (kD + 8) * sizeof(__nv_bfloat16);
  auto kern = fa_fwd_tc_kernel<kD, kWarps>;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    LZ_CHECK(e == cudaSuccess, "flash_attention_forward: cannot reserve ", smem,
             " bytes of shared memory: ", cudaGetErrorString(e));
  }
  dim3 grid(static_cast<unsigned>((a.T + kBlockM - 1) / kBlockM), static_cast<unsigned>(a.B * a.H));
  kern<<<grid, kWarps * 32, smem, as_stream(stream)>>>(
      static_cast<const __nv_bfloat16*>(q.raw()), static_cast<const __nv_bfloat16*>(k.raw()),
      static_cast<const __nv_bfloat16*>(v.raw()), static_cast<__nv_bfloat16*>(o.raw()),
      lse.data<float>(), a);
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

bool tc_eligible(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o) {
  return q.dtype() == DType::BF16 && q.size(3) % 8 == 0 && q.size(3) <= 128 && aligned16(q.raw()) &&
         aligned16(k.raw()) && aligned16(v.raw()) && aligned16(o.raw());
}

}  // namespace

void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                             int64_t window, Tensor& o, Tensor& lse, void* stream) {
  const char* op = "cuda::flash_attention_forward";
  const AttnDims a = check_attn(op, q, k, v, scale, window);
  require_contiguous(o, op, "o");
  require_contiguous(lse, op, "lse");
  LZ_CHECK(o.shape() == q.shape() && o.dtype() == q.dtype(), op, ": o ", o.desc(), " vs q ", q.desc());
  LZ_CHECK(lse.dtype() == DType::F32 && lse.numel() == a.B * a.H * a.T, op,
           ": lse must be f32 [B, H, T], got ", lse.desc());
  if (q.numel() == 0) return;
  if (tc_eligible(q, k, v, o)) {
    if (a.D <= 64)
      launch_fwd_tc<64, 4>(q, k, v, o, lse, a, stream);
    else
      launch_fwd_tc<128, 4>(q, k, v, o, lse, a, stream);
  } else {
    visit_storage(q.dtype(), op, [&](auto z) {
      using T = decltype(z);
      ref_fwd_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, as_stream(stream)>>>(
          static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
          static_cast<const T*>(v.raw()), static_cast<T*>(o.raw()), lse.data<float>(), a);
    });
  }
  check_last_error(op);
}

void flash_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& o, const Tensor& lse, double scale,
                              int64_t window, Tensor& dq, Tensor& dk, Tensor& dv, void* stream) {
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
  visit_storage(q.dtype(), op, [&](auto z) {
    using T = decltype(z);
    auto s = as_stream(stream);
    const T* pdo = static_cast<const T*>(dout.raw());
    const T* pq = static_cast<const T*>(q.raw());
    const T* pk = static_cast<const T*>(k.raw());
    const T* pv = static_cast<const T*>(v.raw());
    delta_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, s>>>(
        pdo, static_cast<const T*>(o.raw()), delta.data<float>(), a);
    ref_dq_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, s>>>(
        pdo, pq, pk, pv, lse.data<float>(), delta.data<float>(), static_cast<T*>(dq.raw()), a);
    ref_dkdv_kernel<T><<<warp_rows_grid(a.B * a.T * a.Hkv), 256, 0, s>>>(
        pdo, pq, pk, pv, lse.data<float>(), delta.data<float>(), static_cast<T*>(dk.raw()),
        static_cast<T*>(dv.raw()), a);
  });
  check_last_error(op);
}

/// Forward through the reference (warp-per-row) kernel regardless of dtype: the oracle the
/// GPU tests compare the tensor-core path against on the same device.
void flash_attention_forward_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t window, Tensor& o, Tensor& lse,
                                       void* stream) {
  const char* op = "cuda::flash_attention_forward_reference";
  const AttnDims a = check_attn(op, q, k, v, scale, window);
  if (q.numel() == 0) return;
  visit_storage(q.dtype(), op, [&](auto z) {
    using T = decltype(z);
    ref_fwd_kernel<T><<<warp_rows_grid(a.B * a.T * a.H), 256, 0, as_stream(stream)>>>(
        static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
        static_cast<const T*>(v.raw()), static_cast<T*>(o.raw()), lse.data<float>(), a);
  });
  check_last_error(op);
}

}  // namespace lizard::cuda
