// Benchmark of the CUDA Lizard attention (ANCHORS.md targets): `lizard bench attention`.
#pragma once
#include <string>
#include <vector>

namespace lizard::cuda {

/// One benchmark shape (bf16 activations; feature_dim F so phi width 2F).
struct LizardBenchShape {
  int B = 8, T = 2048, H = 32, Hkv = 8, D = 128, F = 128, window = 128, sinks = 4, dm = 4096;
};

/// The ANCHORS.md shapes: (8, 2048), (2, 8192), (1, 32768) at H=32, D=128, F=128, w=128, 4 sinks.
std::vector<LizardBenchShape> lizard_bench_default_shapes();

/// Times forward and forward+backward (median of `iters` runs after `warmup`, CUDA events) and
/// returns one JSON object per shape, one per line:
/// {"op":"lizard_attention","device":..,"B":..,"T":..,"H":..,"D":..,"F":..,"window":..,
///  "inference_tc", "training_global_tc", "training_window_tc" (which kernels ran:
///  lizard_attention_kernel_path), "state_rows" (rows per CTA of the state sweeps, 0: not the
///  mma sweeps), "tc_fwd_bwd_ms" (the experimental tensor-core training path),
///  "fwd_ms":..,"fwd_bwd_ms":.., "hbm_gb_fwd":{stage: GB moved, .., "total"},
///  "hbm_floor_ms_fwd": total / 4.8 TB/s, "hbm_fraction_fwd": floor / fwd_ms, and the same
///  for the backward (measured as fwd_bwd_ms - fwd_ms)}. The byte counts are analytic (what
///  each kernel of the tensor-core pipeline must read and write), not profiler counters.
///  Throws lizard::Error without a GPU.
std::string bench_lizard_attention(const std::vector<LizardBenchShape>& shapes, int warmup = 3,
                                   int iters = 20);

}  // namespace lizard::cuda
