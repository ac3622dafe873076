// `lizard info`: build features, visible GPUs and their memory.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/device.h"

namespace lizard::cli {

namespace {
const char* on_off(bool b) { return b ? "on" : "off"; }

void run_info() {
  bool has_cuda = false, has_nccl = false, has_mpi = false, has_cudnn = false;
#ifdef LIZARD_WITH_CUDA
  has_cuda = true;
#endif
#ifdef LIZARD_WITH_NCCL
  has_nccl = true;
#endif
#ifdef LIZARD_WITH_MPI
  has_mpi = true;
#endif
#ifdef LIZARD_WITH_CUDNN
  has_cudnn = true;
#endif
  std::printf("lizard %s\n", LIZARD_VERSION);
  std::printf("features: cuda=%s nccl=%s mpi=%s cudnn=%s\n", on_off(has_cuda), on_off(has_nccl),
              on_off(has_mpi), on_off(has_cudnn));
  const int n = cuda_device_count();
  std::printf("gpus: %d\n", n);
  for (int i = 0; i < n; ++i) {
    const cuda::Context& ctx = cuda::context(i);
    const MemoryStats st = memory_stats(i);
    std::printf("  cuda:%d %s, %d SMs, %.1f GiB, allocator current %.1f MiB peak %.1f MiB\n", i,
                ctx.name.c_str(), ctx.sm_count, ctx.total_memory / 1073741824.0,
                st.current / 1048576.0, st.peak / 1048576.0);
  }
}
}  // namespace

void register_info(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Build features, GPUs seen and their memory");
  cmd->callback([]() { run_info(); });
}

}  // namespace lizard::cli
