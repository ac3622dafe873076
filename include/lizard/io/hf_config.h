// Hugging Face config.json -> nn::LlamaConfig, for model_type llama, mistral and qwen2.
//
// Both dialects load: transformers 4 (top-level "rope_theta", "rope_scaling" with "rope_type" or
// the older "type") and transformers 5 ("rope_parameters" holding rope_theta and rope_type).
// Every field that changes the maths is honoured or refused: an unsupported model_type,
// hidden_act other than silu, rope types other than default/llama3, partial rotary factors,
// Llama's attention_bias (bias on o_proj too) or mlp_bias, per-layer mixes of sliding and full
// attention, and quantized checkpoints all give one InputError listing what is supported.
#pragma once
#include <string>

#include "lizard/io/json.h"
#include "lizard/nn/llama_config.h"

namespace lizard::io {

/// Parses a config.json document; `source` names it in error messages (usually the path).
nn::LlamaConfig parse_hf_config(const Json& config, const std::string& source = "config.json");
/// Reads `path` (a config.json file, or a directory containing one) and parses it.
nn::LlamaConfig load_hf_config(const std::string& path);
/// A transformers-4 dialect config.json for `cfg` (top-level rope_theta / rope_scaling), which
/// both transformers 4 and 5 read; used by export.
Json hf_config_json(const nn::LlamaConfig& cfg);

}  // namespace lizard::io
