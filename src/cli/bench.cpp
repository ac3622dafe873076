// `lizard bench ops|attention`: JSON benchmark rows (CUDA events, medians) on the GPU.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/core/device.h"
#include "lizard/core/error.h"
#ifdef LIZARD_WITH_CUDA
#include "lizard/cuda/bench.h"
#include "lizard/cuda/lizard_attention_bench.h"
#endif

namespace lizard::cli {

void register_bench(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("bench", "Benchmarks printing JSON (needs a GPU)");
  cmd->require_subcommand(1);
  auto iters = std::make_shared<int>(20);
  CLI::App* ops = cmd->add_subcommand("ops", "Every core CUDA op at Llama-3-8B shapes");
  ops->add_option("--iters", *iters, "Timed iterations per op (median reported)");
  ops->callback([iters]() {
    LZ_INPUT_CHECK(cuda_available(), "lizard bench ops: no GPU visible");
#ifdef LIZARD_WITH_CUDA
    std::printf("%s\n", cuda::bench_rows_json(cuda::bench_ops(0, *iters, false), 0).c_str());
#endif
  });
  register_bench_step(*cmd);
  CLI::App* att = cmd->add_subcommand("attention", "Lizard attention fwd and fwd+bwd at the ANCHORS.md shapes");
  att->callback([]() {
    LZ_INPUT_CHECK(cuda_available(), "lizard bench attention: no GPU visible");
#ifdef LIZARD_WITH_CUDA
    std::printf("%s\n", cuda::bench_lizard_attention(cuda::lizard_bench_default_shapes()).c_str());
#endif
  });
}

}  // namespace lizard::cli
