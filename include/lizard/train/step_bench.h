// `lizard bench step`: real training steps of a stage (distill or finetune, the same task and
// Trainer as `lizard train`) on a model built at its real shape with random weights (nothing
// to download) and random tokens, reported as one JSON document: tokens/s, MFU with its FLOP
// formula, the allocator's peak memory next to the analytic estimate, and the time split by
// phase (CUDA events on the GPU).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/io/json.h"

namespace lizard::train {

struct StepBenchOptions {
  /// YAML whose `model:` section gives the architecture (configs/models/*.yaml), or a Hugging
  /// Face directory / config.json (only its architecture is read; weights stay random).
  std::string model_config;
  std::string stage = "finetune";  ///< distill | finetune | pretrain
  int64_t seq_len = 2048;
  int64_t micro_batch = 1;
  int64_t accum = 1;    ///< micro-batches per optimizer step
  int64_t steps = 10;   ///< timed optimizer steps
  int64_t warmup = 3;   ///< untimed steps first (allocator, cuBLAS plans)
  /// none | attention | layer | auto (auto: the cheapest mode whose estimate fits 85% of the
  /// device's memory; none on the CPU).
  std::string recompute = "auto";
  std::string preset = "paper";  ///< lizard.preset: paper | plus
  std::string dtype = "bf16";    ///< compute dtype on the GPU (the CPU computes in f32)
  std::string device;            ///< cpu | cuda[:N]; empty = cuda when visible, else cpu
  std::vector<std::string> sets; ///< further config overrides (key=value), applied last
  uint64_t seed = 0;
};

/// Runs the benchmark and returns its report. Throws InputError on bad options (naming the
/// option) and OutOfMemoryError when the step does not fit.
io::Json run_step_bench(const StepBenchOptions& opt);

}  // namespace lizard::train
