// The switch of programmatic dependent launch (pdl.cuh).
#include "pdl.cuh"

#include "lizard/core/env.h"

namespace lizard::cuda {

bool pdl_enabled() { return !env_switch("LIZARD_PDL", "1", "0"); }

}  // namespace lizard::cuda
