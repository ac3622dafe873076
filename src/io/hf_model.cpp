#include "lizard/io/hf_model.h"

#include <filesystem>

#include "lizard/io/export.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/safetensors.h"
#include "lizard/nn/lizard_attention.h"

namespace lizard::io {

namespace fs = std::filesystem;

bool is_added_parameter(const std::string& name) {
  return nn::is_lora_parameter(name) || nn::is_lizard_parameter(name);
}

void load_weights(nn::Module& model, const std::string& path, bool allow_unexpected) {
  SafetensorsCheckpoint ckpt(path);
  std::map<std::string, Shape> expected;
  std::vector<std::pair<std::string, autograd::Var>> targets;
  for (auto& [name, v] : model.named_parameters()) {
    if (is_added_parameter(name) && !ckpt.contains(name)) continue;
    expected[name] = v.shape();
    targets.emplace_back(name, v);
  }
  ckpt.check(expected, allow_unexpected);
  for (auto& [name, v] : targets) {
    // Integer data converted to float weights would load silently as garbage.
    const TensorInfo& ti = ckpt.info(name);
    LZ_INPUT_CHECK(!ti.loadable || ti.dtype == DType::F32 || ti.dtype == DType::BF16 ||
                       ti.dtype == DType::F16 || ti.dtype == DType::F64,
                   path, ": tensor \"", name, "\" has dtype ", ti.dtype_str,
                   ", expected a floating-point weight (F32, BF16, F16 or F64)");
    v.set_data(ckpt.load(name, v.device(), v.dtype()));
  }
}

std::unique_ptr<nn::LlamaForCausalLM> load_hf_model(const std::string& dir, const LoadOptions& opt) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  LZ_INPUT_CHECK(fs::exists(cfg_path), "model directory '", dir, "' has no config.json");
  const Json cfg_json = load_json_file(cfg_path.string());
  const nn::LlamaConfig cfg = parse_hf_config(cfg_json, cfg_path.string());
  // A lizard export (io/export.h): Lizard attention per its config section, LoRA per its
  // adapter files, unless the caller chose the attention / adapters itself.
  const std::optional<LizardSection> lizard = parse_lizard_section(cfg_json, cfg_path.string());
  nn::AttentionFactory attention = opt.attention;
  if (!attention && lizard)
    attention = nn::lizard_factory(lizard->config, lizard->softmax_layers, opt.dtype, opt.device);
  nn::LoraSpec lora = opt.lora;
  std::optional<nn::LoraSpec> adapter;
  if (!lora.config) adapter = read_adapter_config(dir);
  if (adapter) lora = *adapter;
  auto model = std::make_unique<nn::LlamaForCausalLM>(cfg, attention, lora, opt.dtype, opt.device);
  // Tied checkpoints may still carry lm_head.weight (some exporters write it): tolerate it.
  load_weights(*model, dir, cfg.tie_word_embeddings);
  if (lizard) {
    // An export holds every Lizard parameter: one missing is a broken export, not "start
    // from the initialisation" (which load_weights allows for a plain HF base model).
    SafetensorsCheckpoint ckpt(dir);
    std::vector<std::string> missing;
    for (const auto& [name, v] : model->named_parameters())
      if (nn::is_lizard_parameter(name) && !ckpt.contains(name)) missing.push_back(name);
    LZ_INPUT_CHECK(missing.empty(), dir, ": Lizard export lacks ", missing.size(),
                   " Lizard parameter(s), first '", missing.empty() ? "" : missing[0], "'");
  }
  if (adapter) load_adapter(*model, dir);
  return model;
}

}  // namespace lizard::io
