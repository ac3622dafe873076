// Launchers of cuda/copy.cu: strided copy with dtype conversion, fill, RNG fills.
#pragma once
#include <cstdint>

#include "lizard/core/dtype.h"

namespace lizard::cuda {

constexpr int kMaxDims = 8;

/// Strided layout of one operand: up to kMaxDims dims (shape shared by src and dst).
struct StridedLayout {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t src_stride[kMaxDims];
  int64_t dst_stride[kMaxDims];
};

/// dst[i] = convert(src[i]) over every index of `layout.shape` (element strides).
void strided_copy(const void* src, DType src_t, void* dst, DType dst_t, const StridedLayout& layout,
                  int64_t numel, void* stream);
/// Sets n contiguous elements of dtype t to value.
void fill(void* dst, DType t, int64_t n, double value, void* stream);
/// Uniform [lo, hi) or normal(mean=lo, std=hi) from the Philox stream, n contiguous elements.
void rng_fill(void* dst, DType t, int64_t n, bool normal, double a, double b, uint64_t seed,
              uint64_t offset, void* stream);

}  // namespace lizard::cuda
