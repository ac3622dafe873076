// Launcher of cuda/gemm.cu: batched GEMM through cuBLASLt (fp32 accumulation).
#pragma once
#include <cstdint>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/tensor.h"

namespace lizard::cuda {

/// How a GEMM plan (made once per problem shape and cached in the Context) picks cuBLASLt's
/// algorithm. The choice is part of the cache key, so the modes never share a plan.
enum class GemmAlgo {
  Default,    ///< Heuristic, or Tuned when the environment has LIZARD_GEMM_TUNE=1 (read at each plan miss)
  Heuristic,  ///< cuBLASLt's first heuristic result, never timed
  Tuned,      ///< the fastest of up to kGemmTuneCandidates heuristic results, timed on the device
};

/// Heuristic results a tuned plan times.
inline constexpr int kGemmTuneCandidates = 8;
/// GEMMs below this many FLOPs (2 M N K per cuBLASLt call, times its strided batch) are never
/// timed: a few microseconds each, they could not repay the timing (the LoRA rank-8 GEMMs).
inline constexpr double kGemmTuneMinFlops = 1e9;

/// out[b] = op(a[b]) @ op(b[b]) for every batch index of `batch`. a and b are expanded to
/// [batch..., rows, cols] with row-major matrices (a batch stride may be 0); out contiguous.
/// dtypes: all f32, or all bf16 (fp32 accumulate). Runs on ctx's stream with its workspace.
/// With `c` set: out = alpha * op(a) op(b) + c in the GEMM's epilogue (beta = 1); c contiguous
/// with out's shape and dtype, and may be out itself (in place). Without: out = alpha * op(a) op(b).
/// `algo` picks how a plan-cache miss chooses the algorithm (see GemmAlgo); a tuned miss syncs
/// the stream once and may write out (never a, b or c) before the real call overwrites it.
void gemm_batched(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb,
                  const Shape& batch, Context& ctx, float alpha = 1.f,
                  const Tensor* c = nullptr, GemmAlgo algo = GemmAlgo::Default);

/// What the plan cache of one context has done so far (for benchmarks and tests).
struct GemmPlanStats {
  int64_t plans = 0;              ///< plan-cache misses (plans made)
  int64_t tuned = 0;              ///< plans whose algorithm was chosen by timing >= 2 candidates
  int64_t candidates_timed = 0;   ///< candidate algorithms timed, over all tuned plans
  double tune_ms = 0;             ///< host wall time spent timing candidates, over all plans
};

/// The plan statistics of `ctx` (zeros before its first GEMM).
GemmPlanStats gemm_plan_stats(Context& ctx);

}  // namespace lizard::cuda
