// Dropout with a counter-based mask: element i is kept iff rng_uniform(seed, offset, i) >= p
// and then scaled by 1/(1-p). The mask is regenerated in the backward, never stored.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"

namespace lizard::ops {

/// y = x * keep_i / (1 - p), i the row-major index; p in [0, 1) (p = 0 returns a copy of x).
/// The backward is the same call on dy with the same (p, seed, offset).
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset);

}  // namespace lizard::ops
