// Launcher of cuda/dropout.cu. The mask is regenerated from Philox (rng.h), never stored:
// element i is kept iff rng_uniform(seed, offset, i) >= p, then scaled by 1/(1-p).
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// y = x * mask / (1 - p); the backward is the same call on dy. x, y contiguous.
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y, void* stream);

}  // namespace lizard::cuda
