// Row gather and row scatter-add of a table [V, D]: the two halves of exchanging a gradient
// that is non-zero on a few rows only (dist::SparseRowGrad, an input embedding's gradient).
// CPU: f32/f64. CUDA: f32/bf16/f16 (cuda::embedding_forward gathers, cuda::scatter_add_rows
// adds). Neither reads ids back to the host: they run inside a step without a device sync.
#pragma once
#include "lizard/core/tensor.h"

namespace lizard::ops {

/// out[i, :] = src[ids[i], :] for i < n. src [V, D] contiguous, ids i32 [n] and out [n, D]
/// contiguous (src's dtype), all on src's device. The caller guarantees ids in [0, V): the CPU
/// checks them (InputError naming the id); a CUDA kernel cannot throw and writes a NaN row.
void gather_rows(const Tensor& src, const Tensor& ids, Tensor& out);

/// dst[ids[i], :] += rows[i, :] for i < n, in place. dst [V, D] and rows [n, D] contiguous, of
/// one dtype; ids i32 [n] on dst's device. The ids must be UNIQUE: no two additions touch one
/// row, so the kernel needs no atomics and the result is deterministic (one rounding to dst's
/// dtype per element; the GPU adds in f32). Ids outside [0, V): InputError on the CPU, skipped
/// on the GPU.
void scatter_add_rows(Tensor& dst, const Tensor& ids, const Tensor& rows);

}  // namespace lizard::ops
