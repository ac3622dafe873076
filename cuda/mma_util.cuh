// mma.sync building blocks shared by the hand-written tensor-core kernels (flash_attention.cu,
// lizard_window_mma.cu, lizard_features_tc.cu): cp.async copies, ldmatrix fragment loads, the
// m16n8k16 bf16 mma with f32 accumulation, and small conversions. Inline PTX, sm_80 and newer;
// one asm statement per instruction, the pointer forms are thin wrappers over the 32-bit
// shared-address forms (32-bit addresses keep one register per address, not two).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane = 4 g + t4:
//   A (16x16, row)  a0 = (g, 2t4..+1), a1 = (g+8, 2t4..), a2 = (g, 2t4+8..), a3 = (g+8, 2t4+8..)
//   B (16x8, col)   b0 = (k 2t4..+1, n g), b1 = (k 2t4+8..+9, n g)
//   C (16x8, f32)   c0, c1 = (g, 2t4..+1), c2, c3 = (g+8, 2t4..+1)
// so a C tile pair (two n-tiles of 8), packed to bf16, is the A fragment of one k-step: the
// product chains of a backward need no shared-memory round trip for their left operand.
//
// Asm semantics, chosen per instruction:
//  * mma.sync reads and writes registers only: plain `asm` (not volatile) with no "memory"
//    clobber, a pure function of its operands, so the scheduler may interleave independent
//    accumulator chains (each chain keeps its order through the "+f" operands).
//  * cp.async, its commit and its wait are `asm volatile` with a "memory" clobber: they order
//    shared-memory accesses the compiler cannot see. Without it, a plain C++ load of a staging
//    buffer could be moved below the cp.async that overwrites it, or a load of the copied data
//    above the wait that makes it visible to this thread (no barrier needed for its own
//    copies, so nothing else would stop the move).
//  * ldmatrix and the zero store read / write shared memory behind the compiler's back too, so
//    they clobber "memory" for the same reason (a reused staging buffer written by plain stores
//    and read by ldmatrix must keep the program order of the two).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lizard::cuda {

/// The 32-bit shared-state-space address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/// 16 bytes global -> shared without a register round trip (L2 only: .cg). Both addresses
/// 16-byte aligned; complete after cp_async_commit + cp_async_wait.
__device__ __forceinline__ void cp_async16_u32(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr), "l"(gmem)
               : "memory");
}
/// cp_async16_u32 to a generic shared-memory pointer.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  cp_async16_u32(smem_u32(smem), gmem);
}
/// Closes the group of this thread's cp.async copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
/// Waits until at most N of this thread's committed groups are pending (N = 0: all done). The
/// data is then visible to this thread; a barrier or __syncwarp makes it visible to others.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/// Asks L2 for the 128-byte line holding p (no effect on results; p must point into an
/// allocation). ncu counts a prefetch as the line's 4 sectors: one per line is enough.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/// 16 zero bytes into shared memory (rows past the end of a tile).
__device__ __forceinline__ void st_shared_zero16(uint32_t smem_addr) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(smem_addr), "r"(0)
               : "memory");
}

/// Four 8x8 b16 matrices from shared memory; lanes 8i..8i+7 give the row addresses of matrix
/// i, and r[i] is this lane's pair of it (row lane/4, columns 2(lane%4)..+1).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
/// ldsm_x4 of the transposed matrices: r[i] holds (rows 2(lane%4)..+1, column lane/4) of
/// matrix i as stored.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
/// ldsm_x4 from a generic shared-memory pointer.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  ldsm_x4(r, smem_u32(p));
}
/// ldsm_x4_trans from a generic shared-memory pointer.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  ldsm_x4_trans(r, smem_u32(p));
}

/// d += a (16x16 bf16, row) * b (16x8 bf16, col), f32 accumulate: one HMMA.16816, the
/// instruction nvcuda::wmma's bf16 16x16x16 issues twice (one per 8-column half), so the same
/// operands accumulated in the same order give the same bits.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// The 16x16 product of one A fragment with the 16x16 B whose ldsm_x4 gave b (matrices 0, 1:
/// n-tile 0; 2, 3: n-tile 1): d0 += A B[:, 0:8], then d1 += A B[:, 8:16].
__device__ __forceinline__ void mma_bf16_x2(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[4]) {
  mma_bf16(d0, a, b[0], b[1]);
  mma_bf16(d1, a, b[2], b[3]);
}

/// 2^x by the SFU (ex2.approx.ftz: about 2 ulp, 2^-inf = 0, the range softmax needs).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Two bf16 (round to nearest) in one register, `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
/// A pair of bf16 already rounded, packed like pack_bf16(float, float).
__device__ __forceinline__ uint32_t pack_bf16(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  __nv_bfloat162 v(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

}  // namespace lizard::cuda
