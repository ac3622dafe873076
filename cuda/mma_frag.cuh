// Private device helpers for hand-written tensor-core kernels (sm_80+ PTX): cp.async copies,
// ldmatrix fragment loads and the bf16 mma.sync m16n8k16 with f32 accumulation. The same
// instructions as cuda/flash_attention.cu's file-local helpers, shared here so that more kernels
// (the Lizard feature maps, cuda/lizard_features_tc.cu) need not copy them again.
//
// Fragment layout of mma.sync m16n8k16 (PTX ISA, "Matrix fragments for mma.m16n8k16"), with
// g = lane / 4 and q = lane % 4:
//   A (16 x 16, row-major)  a0: (g, 2q..2q+1)  a1: (g+8, 2q..)  a2: (g, 2q+8..)  a3: (g+8, 2q+8..)
//   B (16 x 8, "col")       b0: (k 2q..2q+1, n g)  b1: (k 2q+8..2q+9, n g)
//   C (16 x 8, f32)         c0, c1: (g, 2q..2q+1)  c2, c3: (g+8, 2q..2q+1)
// so a C tile pair (two n-tiles of 8) is, packed to bf16, the A fragment of one k-step: the
// product chains of a backward need no shared-memory round trip for their left operand.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lizard::cuda::mma_frag {

/// The 32-bit shared-state-space address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The shared-memory asm statements clobber "memory", so the compiler keeps them in program
// order with the plain C++ shared stores and loads around them (staging buffers are reused);
// the mma is a pure function of its registers (not volatile), so independent accumulator
// chains may be interleaved by the scheduler while each chain keeps its order.

/// 16 bytes global -> shared without a register round trip (L2 only: .cg). Both addresses
/// 16-byte aligned.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/// Waits for every cp.async group this thread committed (the data is then visible to it; a
/// barrier or __syncwarp makes it visible to the others).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/// 16 zero bytes into shared memory (rows past the end of a tile).
__device__ __forceinline__ void st_shared_zero16(uint32_t dst) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(dst), "r"(0) : "memory");
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

/// d += a (16x16 bf16, row) * b (16x8 bf16, col), f32 accumulate: one HMMA.16816, the
/// instruction nvcuda::wmma's bf16 16x16x16 issues twice (one per 8-column half), so the same
/// operands accumulated in the same order give the same bits.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Two bf16 (round to nearest) in one register, `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

/// A pair of bf16 already rounded, packed like pack_bf16x2.
__device__ __forceinline__ uint32_t pack_bf16x2(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  __nv_bfloat162 v(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

}  // namespace lizard::cuda::mma_frag
