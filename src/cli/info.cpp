// `lizard info`: build features, visible GPUs and their memory.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/device.h"
#include "lizard/io/export.h"
#include "lizard/io/hf_config.h"

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

void run_model_info(const std::string& dir) {
  const nn::LlamaConfig c = io::load_hf_config(dir + "/config.json");
  const int64_t n = c.num_parameters();
  std::printf("model %s\n  architecture: %s, %lld layers, hidden %lld, intermediate %lld\n", dir.c_str(),
              c.model_type.c_str(), static_cast<long long>(c.num_hidden_layers),
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.intermediate_size));
  std::printf("  heads %lld (kv %lld, head_dim %lld), vocab %lld, rope_theta %g (%s), tied %s\n",
              static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.num_key_value_heads),
              static_cast<long long>(c.head_dim), static_cast<long long>(c.vocab_size), c.rope_theta,
              c.rope_scaling.type.c_str(), c.tie_word_embeddings ? "yes" : "no");
  std::printf("  parameters: %lld (%.3f B); weights in bf16: %.2f GiB\n", static_cast<long long>(n),
              n / 1e9, n * 2.0 / 1073741824.0);
  // A lizard export: its student configuration and adapter.
  const std::string cfg_path = dir + "/config.json";
  if (const auto lz = io::parse_lizard_section(io::load_json_file(cfg_path), cfg_path)) {
    std::string soft;
    for (int64_t l : lz->softmax_layers) soft += (soft.empty() ? "" : ",") + std::to_string(l);
    std::printf("  lizard: %s; softmax layers [%s]\n", lz->config.str().c_str(), soft.c_str());
  }
  if (const auto lora = io::read_adapter_config(dir))
    std::printf("  adapter: LoRA r=%lld alpha=%g (unmerged)\n", static_cast<long long>(lora->config->r),
                lora->config->alpha);
}
}  // namespace

void register_info(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("info", "Build features, GPUs seen and their memory; --model: a model's size");
  cmd->add_option("--model", *model, "Hugging Face model directory: architecture, parameters, bf16 memory");
  cmd->callback([model]() {
    if (model->empty())
      run_info();
    else
      run_model_info(*model);
  });
}

}  // namespace lizard::cli
