// Activation recomputation: run a block without recording, and re-run it with recording
// inside backward. Gradients are identical to running the block normally, provided the
// block is deterministic given its inputs (dropout draws from explicit (seed, offset)).
#pragma once
#include <functional>
#include <vector>

#include "lizard/autograd/variable.h"

namespace lizard::autograd {

using BlockFn = std::function<Var(const std::vector<Var>&)>;

/// out = fn(inputs), storing only `inputs` for backward. Parameters captured by fn get
/// their gradients during the recomputation.
Var checkpoint(const BlockFn& fn, const std::vector<Var>& inputs);

}  // namespace lizard::autograd
