// `lizard bench ops|attention`: JSON benchmark rows (CUDA events, medians) on the GPU.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

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
  auto shapes = std::make_shared<std::vector<std::string>>();
  auto att_iters = std::make_shared<int>(20);
  auto att_warmup = std::make_shared<int>(3);
  att->add_option("--shape", *shapes, "BxT to time instead of the three ANCHORS.md shapes (repeatable), e.g. 8x2048");
  att->add_option("--iters", *att_iters, "Timed runs per shape (median reported)")->check(CLI::Range(1, 100000));
  att->add_option("--warmup", *att_warmup, "Untimed runs first")->check(CLI::Range(0, 100000));
  att->callback([shapes, att_iters, att_warmup]() {
    LZ_INPUT_CHECK(cuda_available(), "lizard bench attention: no GPU visible");
#ifdef LIZARD_WITH_CUDA
    std::vector<cuda::LizardBenchShape> list = cuda::lizard_bench_default_shapes();
    if (!shapes->empty()) {
      list.clear();
      for (const std::string& s : *shapes) {
        cuda::LizardBenchShape sh;
        char x = 0, extra = 0;
        const int n = std::sscanf(s.c_str(), "%d%c%d%c", &sh.B, &x, &sh.T, &extra);
        LZ_INPUT_CHECK(n == 3 && (x == 'x' || x == 'X') && sh.B > 0 && sh.T > 0,
                       "lizard bench attention --shape: expected BxT with positive integers (e.g. 8x2048), got '", s, "'");
        list.push_back(sh);
      }
    }
    std::printf("%s\n", cuda::bench_lizard_attention(list, *att_warmup, *att_iters).c_str());
#endif
  });
}

}  // namespace lizard::cli
