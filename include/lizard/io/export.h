// Export of a (linearized) model as a Hugging Face directory, and the pieces of that format the
// loader reads back (DESIGN.md section 5):
//
//   model.safetensors (+ model.safetensors.index.json and shards above max_shard_bytes)
//       HF names (model.layers.N.self_attn.q_proj.weight ...); the Lizard parameters under
//       model.layers.N.self_attn.lizard.{feature_map_q, feature_map_k, gate_weight, gate_bias,
//       sinks, alpha}, always f32 (the gate is computed and kept in fp32).
//   config.json
//       every field of the base model's config.json, model_type "lizard", architectures
//       ["LizardForCausalLM"], auto_map -> modeling_lizard.py (trust_remote_code), and a
//       "lizard" object: the full LizardConfig, softmax_layers, base_model_type and the
//       resolved base maths (qkv bias, RoPE, softmax sliding window) so remote code never has
//       to re-interpret a base model's config dialect.
//   adapter_model.safetensors + adapter_config.json (unmerged LoRA only)
//       peft names (base_model.model.<module>.lora_A.weight) and fields (r, lora_alpha,
//       target_modules, peft_type LORA).
//   tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json
//       copied from the base model directory when it has them.
//   modeling_lizard.py
//       the PyTorch implementation of the student (scripts/hf/, embedded at build time).
//
// A model without Lizard layers (a pretrained teacher) exports as its plain base model type.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "lizard/io/json.h"
#include "lizard/nn/llama.h"
#include "lizard/ops/lizard_config.h"

namespace lizard::io {

/// What export writes.
struct ExportOptions {
  /// Fold LoRA into the base weights: W + (alpha / r) B A computed in fp32, rounded to `dtype`
  /// once. false: base weights unmerged plus adapter_model.safetensors / adapter_config.json.
  bool merge_lora = true;
  /// dtype of the base weights (and adapters) in the files: BF16, F16 or F32. The Lizard
  /// parameters are written in f32 whatever this is.
  DType dtype = DType::BF16;
  /// Above this many bytes of tensors, write shards plus model.safetensors.index.json.
  size_t max_shard_bytes = size_t(5) << 30;
  /// Hugging Face directory of the base model: its config.json fields and tokenizer files are
  /// carried over. Empty: config.json is generated from the model's LlamaConfig.
  std::string base_model_dir;
  /// Replace an existing output directory (otherwise it is an error).
  bool overwrite = false;
};

/// The Lizard part of an export's config.json.
struct LizardSection {
  ops::LizardConfig config;             ///< resolved
  std::vector<int64_t> softmax_layers;  ///< layers kept as softmax attention
  std::string base_model_type;          ///< llama, mistral or qwen2
};

/// The "lizard" object of config.json for a model whose linearized layers use `lcfg` and whose
/// `softmax_layers` stay softmax (see the file comment for the fields).
Json lizard_section_json(const ops::LizardConfig& lcfg, const std::vector<int64_t>& softmax_layers,
                         const nn::LlamaConfig& base);

/// Reads the "lizard" object of a config.json document, or nullopt when it has none. Every
/// field is checked by name (InputError naming `source` and the key); absent fields take the
/// paper's defaults.
std::optional<LizardSection> parse_lizard_section(const Json& config, const std::string& source);

/// The Lizard configuration of `model` (from its first linearized layer) and the indices of its
/// softmax layers, or nullopt when no layer is linearized. InputError when linearized layers
/// disagree (an export holds one LizardConfig).
std::optional<LizardSection> lizard_section_of(const nn::LlamaForCausalLM& model);

/// Writes `model` (any device and dtype) as a Hugging Face directory at `out_dir`. The files go
/// to a temporary sibling directory first, which is renamed to `out_dir` when complete, so a
/// failure leaves nothing at `out_dir` (and removes the temporary). InputError when `out_dir`
/// exists and !overwrite, or when its parent cannot be created or written.
void export_model(const nn::LlamaForCausalLM& model, const std::string& out_dir,
                  const ExportOptions& opt = {});

/// The LoRA spec of an export directory's adapter_config.json, or nullopt when `dir` has none.
/// InputError naming the file when it is malformed or targets modules other than q/k/v/o_proj.
std::optional<nn::LoraSpec> read_adapter_config(const std::string& dir);

/// Loads dir/adapter_model.safetensors into the LoRA parameters of `model` (peft names). Every
/// adapter parameter of the model must be in the file and every tensor of the file in the model.
void load_adapter(nn::Module& model, const std::string& dir);

/// The peft name of a LoRA parameter: "base_model.model." + name.
std::string peft_name(const std::string& name);

/// The Python implementation written into every Lizard export (scripts/hf/modeling_lizard.py as
/// it was at build time).
const std::string& modeling_lizard_source();

}  // namespace lizard::io
