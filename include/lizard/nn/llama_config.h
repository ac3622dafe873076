// The architecture of a Llama-family model (Llama 2/3/3.x, Mistral, Qwen2), as read from a
// Hugging Face config.json by io/hf_config or from a lizard model YAML.
#pragma once
#include <cstdint>
#include <string>

namespace lizard::nn {

/// RoPE frequency scaling ("rope_scaling" / "rope_parameters" in HF configs).
struct RopeScaling {
  std::string type = "default";  ///< "default" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";  ///< "llama", "mistral" or "qwen2"
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;  ///< explicit in newer configs; else hidden_size / heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  ///< q/k/v bias (Qwen2: true)
  int64_t sliding_window = 0;   ///< Mistral/Qwen2 softmax window; 0 = full causal
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  /// Parameter count (embeddings, layers, final norm, LM head unless tied).
  int64_t num_parameters() const {
    const int64_t d = hidden_size, hd = head_dim;
    const int64_t attn = d * (num_attention_heads * hd) * 2 + d * (num_key_value_heads * hd) * 2 +
                         (attention_bias ? (num_attention_heads + 2 * num_key_value_heads) * hd : 0);
    const int64_t mlp = 3 * d * intermediate_size;
    const int64_t layer = attn + mlp + 2 * d;
    return vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + d;
  }
};

}  // namespace lizard::nn
