// Programmatic dependent launch (sm_90; CUDA programming guide, "Programmatic Dependent Launch
// and Synchronization"; PTX griddepcontrol). A kernel started by pdl_launch may be scheduled
// while the kernel ahead of it in the stream is finishing: its launch overlaps the earlier
// grid's completion instead of following it (the 8B step has ~1.5-2 us between two kernels of
// a stream, docs/benchmarks/step.md).
//
// The contract: every kernel that pdl_launch starts calls pdl_enter() as its first statement,
// before it touches any memory (an early return included). pdl_enter waits for the earlier
// grid to complete and its writes to be visible, so the kernel sees exactly what a plain
// launch would. It is a no-op in a kernel launched without the attribute (a plain <<<>>>
// launch, or LIZARD_PDL=0), so such kernels may be launched either way.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "lizard/core/cuda_runtime.h"

namespace lizard::cuda {

/// First statement of every kernel pdl_launch starts (see the file comment). No explicit
/// griddepcontrol.launch_dependents: a grid triggers its dependents as its CTAs exit.
/// Triggering at a kernel's start (measured on one H200, 2026-11-28) puts the next kernel's
/// waiting CTAs beside the running ones: beside the latency-bound state sweep that slowed it
/// from about 136 to 210 us a layer, and triggering everywhere but in the sweeps was still
/// slower than waiting alone (B = 1, T = 32768 forward 4.57 -> 5.03 ms; finetune step
/// 141.7 -> 142.7 ms, docs/benchmarks/step.md).
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/// Whether pdl_launch sets the attribute: LIZARD_PDL unset, empty or 1 (the default) yes, 0
/// no (plain stream order, for A/B timing); any other value is an InputError naming the
/// variable. Read per call.
bool pdl_enabled();

/// The launch attribute that allows programmatic stream serialization (as pdl_enabled() says),
/// for a cudaLaunchKernelEx with attributes of its own (a cluster launch).
inline cudaLaunchAttribute pdl_attribute() {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  return a;
}

/// kernel<<<grid, block, smem, s>>>(args...) with programmatic stream serialization allowed
/// (pdl_enabled()); kernel must begin with pdl_enter(). Throws naming `what` if the launch
/// fails.
template <class... P, class... A>
void pdl_launch(const char* what, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t s, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {pdl_attribute()};
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check_status(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...), what);
}

}  // namespace lizard::cuda
