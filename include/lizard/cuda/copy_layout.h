// Host-side simplification of a copy's StridedLayout: the strided copy launcher runs the
// simplified layout, so its kernel does fewer div/mod steps per element, and a layout that
// collapses to one unit-stride dimension in both operands takes the flat (vectorised) kernel.
// Header-only so the CPU suite can check it against brute-force offset enumeration.
#pragma once
#include <cstdint>

#include "lizard/cuda/copy.h"

namespace lizard::cuda {

/// The same element walk with fewer dims: size-1 dims are dropped and each pair of adjacent
/// dims (d, d + 1) with stride[d] == stride[d + 1] * shape[d + 1] in BOTH operands is merged.
/// Contract: for every row-major index i < numel, the (src, dst) offset pair of element i is
/// the same under `l` and under the result. A layout with numel 1 (or 0 dims) becomes one
/// dim of size 1 with unit strides; a layout with a zero-size dim is returned unchanged.
inline StridedLayout collapse_layout(const StridedLayout& l) {
  for (int d = 0; d < l.ndim; ++d)
    if (l.shape[d] == 0) return l;
  StridedLayout r;
  r.ndim = 0;
  for (int d = 0; d < l.ndim; ++d) {
    if (l.shape[d] == 1) continue;  // index always 0: contributes no offset
    if (r.ndim > 0) {
      const int k = r.ndim - 1;
      // Merging the previous kept dim k (outer) with d (inner): offset idx_k * stride_k +
      // idx_d * stride_d equals (idx_k * shape_d + idx_d) * stride_d when
      // stride_k == stride_d * shape_d, in each operand separately.
      if (r.src_stride[k] == l.src_stride[d] * l.shape[d] &&
          r.dst_stride[k] == l.dst_stride[d] * l.shape[d]) {
        r.shape[k] *= l.shape[d];
        r.src_stride[k] = l.src_stride[d];
        r.dst_stride[k] = l.dst_stride[d];
        continue;
      }
    }
    r.shape[r.ndim] = l.shape[d];
    r.src_stride[r.ndim] = l.src_stride[d];
    r.dst_stride[r.ndim] = l.dst_stride[d];
    ++r.ndim;
  }
  if (r.ndim == 0) {
    r.ndim = 1;
    r.shape[0] = 1;
    r.src_stride[0] = 1;
    r.dst_stride[0] = 1;
  }
  return r;
}

/// True when `l` (as returned by collapse_layout) walks both operands as one run of unit
/// stride: element i is at offset i in src and in dst.
inline bool layout_is_flat(const StridedLayout& l) {
  return l.ndim == 1 && (l.shape[0] == 1 || (l.src_stride[0] == 1 && l.dst_stride[0] == 1));
}

/// True when every offset the layout reaches, and the element count, fit in int32, so the
/// general kernel may index with 32-bit div/mod (several times cheaper than 64-bit on GPUs).
/// Strides may be negative or zero; the bound is on |offset|.
inline bool layout_fits_int32(const StridedLayout& l, int64_t numel) {
  constexpr int64_t kMax = 0x7fffffff;
  if (numel > kMax) return false;
  int64_t src_span = 0, dst_span = 0;
  for (int d = 0; d < l.ndim; ++d) {
    const int64_t last = l.shape[d] - 1;
    const int64_t ss = l.src_stride[d] < 0 ? -l.src_stride[d] : l.src_stride[d];
    const int64_t ds = l.dst_stride[d] < 0 ? -l.dst_stride[d] : l.dst_stride[d];
    // Each term is bounded by numel * max stride; guard the multiply against overflow.
    if (last > 0 && (ss > kMax / last || ds > kMax / last)) return false;
    src_span += last * ss;
    dst_span += last * ds;
    if (src_span > kMax || dst_span > kMax) return false;
  }
  return true;
}

}  // namespace lizard::cuda
