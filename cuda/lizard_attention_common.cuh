// Private device helpers of the Lizard attention kernels (fwd and bwd).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lizard/core/cuda_runtime.h"
#include "lizard/ops/lizard_config.h"
#include "lizard_attention_dims.h"  // Dims
#include "pdl.cuh"                  // every kernel of the Lizard attention begins with pdl_enter

namespace lizard::cuda::lizard_detail {

/// Chunk length of the GPU kernels (tokens per state step; ops::kCudaChunk, which the host's
/// memory plan reads). 32 keeps the phi tiles of one chunk (2 x 32 x 2F f32) plus the state
/// slice in shared memory at F = 128.
constexpr int kChunk = static_cast<int>(ops::kCudaChunk);
/// Columns of [V|1] handled by one CTA of the global-branch kernels.
constexpr int kCols = 32;
/// Threads of the global-branch kernels.
constexpr int kGlobalThreads = 256;
/// Warps per CTA of the row-wise (window, features) kernels.
constexpr int kRowWarps = 4;

/// SMs of the current device (its context's count, read once per device; 132, an H100 /
/// H200, if unknown): what the launchers size persistent or residency-bound grids by.
inline int sm_count() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  const int n = context(dev).sm_count;
  return n > 0 ? n : 132;
}

// Device helpers: nvcc only (__CUDACC__), so that host C++ (tests/gpu, calling the private
// launchers of lizard_attention_tc.cuh directly) can include the declarations and Dims.
#ifdef __CUDACC__
__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// hi + lo = v to about 2^-17 relative (hi = bf16(v), lo = bf16(v - hi), both round to
/// nearest even): the operand pair of the split products (hi*hi + hi*lo + lo*hi, the dropped
/// lo*lo is below 2^-16 relative). The kernels that form both halves of one value take this
/// one (the window backward's dO' pair, the feature maps, the row split, the wmma kernels);
/// where the hi half is needed anyway and the lo half only when split (the output kernels' P
/// tiles) the same two roundings stand inline, and the paired forms (split_pair2, split_pack)
/// round each value the same way, so all agree bit for bit.
__device__ __forceinline__ void split2(float v, __nv_bfloat16& hi, __nv_bfloat16& lo) {
  hi = __float2bfloat16(v);
  lo = __float2bfloat16(v - __bfloat162float(hi));
}

/// Element i of RoPE(x) (rotate_half layout, D even, hD = D/2) at the row's cos/sin.
template <class T>
__device__ __forceinline__ float rope_at(const T* x, int i, int hD, const float* cs,
                                         const float* sn) {
  if (i < hD) return ld(x + i) * cs[i] - ld(x + i + hD) * sn[i];
  return ld(x + i) * cs[i - hD] + ld(x + i - hD) * sn[i - hD];
}
#endif  // __CUDACC__

// ---- The layout of the per-chunk f32 states [S|z] and dstates [dS|dz] (issue #5), the one
// place that defines it: every kernel that reads or writes states or dstates (the f32
// CUDA-core kernels, the wmma kernels, the mma kernels) indexes them through these, since
// LIZARD_ATTENTION_TC_OFF and LIZARD_ATTENTION_KERNELS=f32 mix them on the same buffers.
// The tensors are [B, H, NC, 2F, D+1] by size; the block of one chunk (2F (D+1) floats) is
//   S [2F][D] row-major (rows of D floats), then z [2F] (the ones column of [V|1]).
// Why split rather than [2F][D+1] rows: rows of D floats start at multiples of 4 D bytes of
// the block, and the block at a multiple of 2F (D+1) 4 bytes (a multiple of 128 bytes when 2F
// is a multiple of 32; of 8 always, of 16 for F even), so a kernel can read S with 8- or
// 16-byte loads that touch exactly the 32-byte sectors they need, and z is one contiguous
// vector; the rows of D + 1 floats were misaligned by one float per row. No padding: the same
// memory, no pad columns to write or compare.

/// Floats of one chunk's state block (2F (D + 1)).
__host__ __device__ __forceinline__ constexpr int64_t state_block(int D, int F2) {
  return int64_t(F2) * (D + 1);
}
/// Offset of the state block of chunk c of (b, h) (bh = b H + h) in states / dstates.
__host__ __device__ __forceinline__ constexpr int64_t state_chunk(int64_t bh, int c, int NC, int D,
                                                                  int F2) {
  return (bh * NC + c) * state_block(D, F2);
}
/// Offset in a chunk's block of z (dz): 2F D (then z[f] at + f).
__host__ __device__ __forceinline__ constexpr int64_t state_z(int D, int F2) {
  return int64_t(F2) * D;
}
/// Offset in a chunk's block of S[f][j] (j in [0, D): no test, for the paths that know it).
__host__ __device__ __forceinline__ constexpr int64_t state_s(int f, int j, int D) {
  return int64_t(f) * D + j;
}
/// Offset in a chunk's block of element (f, j) of [S|z] (j in [0, D]; j = D is z[f]).
__host__ __device__ __forceinline__ constexpr int64_t state_index(int f, int j, int D, int F2) {
  return j < D ? state_s(f, j, D) : state_z(D, F2) + f;
}

#ifdef __CUDACC__
/// g_j = num_j / max(den, eps) of one row from its numden row [M | den] (M = num - den v_t,
/// see global_fwd_kernel) and v_tj.
__device__ __forceinline__ float global_out(const float* nd, float vtj, int j, const Dims& d) {
  const float den = nd[d.D];
  return den < d.eps ? (nd[j] + den * vtj) / d.eps : vtj + nd[j] / den;
}

/// Max (is_max) or sum of v over the block (blockDim.x a power of two) through the shared
/// scratch `red` [blockDim.x]; every thread gets the result. Contains __syncthreads().
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o)
      red[threadIdx.x] = is_max ? fmaxf(red[threadIdx.x], red[threadIdx.x + o])
                                : red[threadIdx.x] + red[threadIdx.x + o];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();
  return r;
}
#endif  // __CUDACC__

}  // namespace lizard::cuda::lizard_detail
