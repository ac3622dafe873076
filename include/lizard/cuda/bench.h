// Micro-benchmarks of the CUDA ops at realistic (Llama-3-8B training) shapes, for
// `lizard bench ops`. Each op is timed with CUDA events on the device's compute stream:
// warm-up runs, then the median of `iters` timed runs, on random (never zero) inputs.
#pragma once
#include <string>
#include <vector>

namespace lizard::cuda {

/// One timed op. `gbps` counts the minimum bytes the op must move (each input read once,
/// each output written once); `tflops` counts its arithmetic (0 for memory-bound ops);
/// `frac_of_peak` is the larger of the two fractions of the card's nominal peaks (HBM
/// bandwidth, dense bf16 tensor rate), i.e. how close the op is to its own floor.
struct BenchRow {
  std::string op;
  std::string shape;
  std::string dtype;
  double median_ms = 0;
  double gbps = 0;
  double tflops = 0;
  double frac_of_peak = 0;
};

/// Runs every op benchmark on GPU `device` (`quick` uses smaller shapes, for smoke tests).
std::vector<BenchRow> bench_ops(int device = 0, int iters = 20, bool quick = false);

/// {"device": ..., "peak_gbps": ..., "peak_tflops": ..., "rows": [{op, shape, dtype,
/// median_ms, gbps, tflops, frac_of_peak}, ...]} as one JSON document.
std::string bench_rows_json(const std::vector<BenchRow>& rows, int device = 0);

}  // namespace lizard::cuda
