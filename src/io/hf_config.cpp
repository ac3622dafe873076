#include "lizard/io/hf_config.h"

#include <filesystem>
#include <vector>

#include "lizard/core/error.h"

namespace lizard::io {

namespace {

constexpr const char* kSupported =
    "supported: model_type llama, mistral or qwen2; hidden_act silu; rope type default or llama3; "
    "full rotary embedding; q/k/v bias only for qwen2; one attention kind for all layers";

// Typed field readers that name the key and the file in errors. A null value counts as absent.
struct Reader {
  const Json& j;
  const std::string& src;

  const Json* get(const Json& obj, const char* key) const {
    const Json* v = obj.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  int64_t int_or(const Json& obj, const char* key, int64_t def) const {
    const Json* v = get(obj, key);
    if (!v) return def;
    LZ_INPUT_CHECK(v->is_number(), src, ": \"", key, "\" must be an integer, got ", v->dump());
    try {
      return v->as_int();
    } catch (const InputError&) {
      throw InputError(str_cat(src, ": \"", key, "\" must be an integer, got ", v->dump()));
    }
  }
  int64_t req_int(const char* key) const {
    LZ_INPUT_CHECK(get(j, key), src, ": missing required field \"", key, "\"");
    const int64_t v = int_or(j, key, 0);
    LZ_INPUT_CHECK(v > 0, src, ": \"", key, "\" must be positive, got ", v);
    return v;
  }
  double num_or(const Json& obj, const char* key, double def) const {
    const Json* v = get(obj, key);
    if (!v) return def;
    LZ_INPUT_CHECK(v->is_number(), src, ": \"", key, "\" must be a number, got ", v->dump());
    return v->as_double();
  }
  bool bool_or(const char* key, bool def) const {
    const Json* v = get(j, key);
    if (!v) return def;
    LZ_INPUT_CHECK(v->is_bool(), src, ": \"", key, "\" must be true or false, got ", v->dump());
    return v->as_bool();
  }
  std::string str_or(const Json& obj, const char* key, const std::string& def) const {
    const Json* v = get(obj, key);
    if (!v) return def;
    LZ_INPUT_CHECK(v->is_string(), src, ": \"", key, "\" must be a string, got ", v->dump());
    return v->as_string();
  }
  // A token id or a list of them (Llama-3.1 lists several eos ids): the first one, or -1.
  int64_t token_id(const char* key) const {
    const Json* v = get(j, key);
    if (!v) return -1;
    if (v->is_array()) return v->size() ? (*v)[0].as_int() : -1;
    return int_or(j, key, -1);
  }
};

}  // namespace

nn::LlamaConfig parse_hf_config(const Json& j, const std::string& src) {
  LZ_INPUT_CHECK(j.is_object(), src, ": expected a JSON object");
  Reader r{j, src};
  std::vector<std::string> refused;  // everything unsupported, reported together
  nn::LlamaConfig c;

  std::string mt = r.str_or(j, "model_type", "");
  if (mt == "lizard") {
    // A lizard export (io/export.h): the base architecture's type is in the lizard section.
    const Json* lz = r.get(j, "lizard");
    LZ_INPUT_CHECK(lz && lz->is_object(), src, ": model_type \"lizard\" needs a \"lizard\" object");
    mt = r.str_or(*lz, "base_model_type", "llama");
  }
  if (mt != "llama" && mt != "mistral" && mt != "qwen2")
    refused.push_back(str_cat("model_type \"", mt, "\""));
  c.model_type = mt;

  c.vocab_size = r.req_int("vocab_size");
  c.hidden_size = r.req_int("hidden_size");
  c.intermediate_size = r.req_int("intermediate_size");
  c.num_hidden_layers = r.req_int("num_hidden_layers");
  c.num_attention_heads = r.req_int("num_attention_heads");
  c.num_key_value_heads = r.int_or(j, "num_key_value_heads", c.num_attention_heads);
  LZ_INPUT_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
                 src, ": num_attention_heads (", c.num_attention_heads,
                 ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  if (r.get(j, "head_dim")) {
    c.head_dim = r.int_or(j, "head_dim", 0);
    LZ_INPUT_CHECK(c.head_dim > 0, src, ": \"head_dim\" must be positive, got ", c.head_dim);
  } else {
    LZ_INPUT_CHECK(c.hidden_size % c.num_attention_heads == 0, src, ": hidden_size (",
                   c.hidden_size, ") is not divisible by num_attention_heads (",
                   c.num_attention_heads, ") and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  LZ_INPUT_CHECK(c.head_dim % 2 == 0, src, ": head_dim must be even for RoPE, got ", c.head_dim);
  c.rms_norm_eps = r.num_or(j, "rms_norm_eps", 1e-6);
  LZ_INPUT_CHECK(c.rms_norm_eps > 0, src, ": \"rms_norm_eps\" must be positive");
  c.max_position_embeddings = r.int_or(j, "max_position_embeddings", 4096);
  c.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  c.bos_token_id = r.token_id("bos_token_id");
  c.eos_token_id = r.token_id("eos_token_id");

  const std::string act = r.str_or(j, "hidden_act", "silu");
  if (act != "silu") refused.push_back(str_cat("hidden_act \"", act, "\""));
  if (r.bool_or("mlp_bias", false)) refused.push_back("mlp_bias true");
  if (mt == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v bias (and none on o_proj)
  } else if (r.bool_or("attention_bias", false)) {
    refused.push_back(str_cat("attention_bias true on ", mt, " (bias on q/k/v/o)"));
  }
  if (r.get(j, "quantization_config")) refused.push_back("quantization_config (quantized weights)");
  if (r.num_or(j, "partial_rotary_factor", 1.0) != 1.0)
    refused.push_back(str_cat("partial_rotary_factor ", r.num_or(j, "partial_rotary_factor", 1.0)));

  // ---- RoPE: transformers 5 "rope_parameters", else transformers 4 top-level fields ----
  const Json* rp = r.get(j, "rope_parameters");
  const Json* rs = nullptr;
  if (rp) {
    LZ_INPUT_CHECK(rp->is_object(), src, ": \"rope_parameters\" must be an object");
    c.rope_theta = r.num_or(*rp, "rope_theta", r.num_or(j, "rope_theta", 10000.0));
    rs = rp;
  } else {
    c.rope_theta = r.num_or(j, "rope_theta", 10000.0);
    rs = r.get(j, "rope_scaling");
    if (rs) LZ_INPUT_CHECK(rs->is_object(), src, ": \"rope_scaling\" must be an object or null");
  }
  LZ_INPUT_CHECK(c.rope_theta > 0, src, ": rope_theta must be positive");
  if (rs) {
    // "rope_type" (current) or "type" (older transformers 4 configs).
    const std::string type = r.str_or(*rs, "rope_type", r.str_or(*rs, "type", "default"));
    if (type == "default") {
      c.rope_scaling = nn::RopeScaling{};
    } else if (type == "llama3") {
      c.rope_scaling.type = "llama3";
      for (const char* k : {"factor", "low_freq_factor", "high_freq_factor",
                            "original_max_position_embeddings"})
        LZ_INPUT_CHECK(r.get(*rs, k), src, ": llama3 rope scaling needs \"", k, "\"");
      c.rope_scaling.factor = r.num_or(*rs, "factor", 1.0);
      c.rope_scaling.low_freq_factor = r.num_or(*rs, "low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = r.num_or(*rs, "high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings =
          r.int_or(*rs, "original_max_position_embeddings", 8192);
      LZ_INPUT_CHECK(c.rope_scaling.factor > 0 &&
                         c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor,
                     src, ": llama3 rope scaling needs factor > 0 and high_freq_factor > "
                          "low_freq_factor");
    } else {
      refused.push_back(str_cat("rope type \"", type, "\""));
    }
    if (r.num_or(*rs, "partial_rotary_factor", 1.0) != 1.0)
      refused.push_back("partial_rotary_factor in rope parameters");
  }

  // ---- sliding window ----
  // Mistral: "sliding_window" (null = full attention). Qwen2: only when use_sliding_window, and
  // then layers >= max_window_layers slide. transformers 5 may spell it as "layer_types".
  int64_t window = r.int_or(j, "sliding_window", 0);
  bool sliding_all = window > 0;
  if (mt == "qwen2") {
    if (!r.bool_or("use_sliding_window", false)) {
      sliding_all = false;
    } else if (window > 0) {
      const int64_t mwl = r.int_or(j, "max_window_layers", c.num_hidden_layers);
      if (mwl >= c.num_hidden_layers) sliding_all = false;
      else if (mwl > 0)
        refused.push_back(str_cat("sliding window on layers >= max_window_layers (", mwl,
                                  ") only"));
    }
  }
  if (const Json* lt = r.get(j, "layer_types")) {
    LZ_INPUT_CHECK(lt->is_array(), src, ": \"layer_types\" must be an array");
    int64_t n_sliding = 0, n_full = 0;
    for (const Json& t : lt->items()) {
      const std::string s = t.is_string() ? t.as_string() : t.dump();
      if (s == "sliding_attention") ++n_sliding;
      else if (s == "full_attention") ++n_full;
      else refused.push_back(str_cat("layer type \"", s, "\""));
    }
    if (n_sliding && n_full) refused.push_back("a mix of sliding and full attention layers");
    else if (n_full) sliding_all = false;
    else if (n_sliding) LZ_INPUT_CHECK(window > 0, src, ": sliding layers need \"sliding_window\"");
  }
  LZ_INPUT_CHECK(window >= 0, src, ": \"sliding_window\" must be >= 0 or null");
  c.sliding_window = sliding_all ? window : 0;

  if (!refused.empty()) {
    std::string msg = str_cat(src, ": unsupported model configuration: ");
    for (size_t i = 0; i < refused.size(); ++i) msg += (i ? ", " : "") + refused[i];
    throw InputError(msg + " (" + kSupported + ")");
  }
  return c;
}

nn::LlamaConfig load_hf_config(const std::string& path) {
  std::string p = path;
  if (std::filesystem::is_directory(p)) p = (std::filesystem::path(p) / "config.json").string();
  return parse_hf_config(load_json_file(p), p);
}

Json hf_config_json(const nn::LlamaConfig& c) {
  Json j = Json::object();
  const char* arch = c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                     : c.model_type == "mistral" ? "MistralForCausalLM"
                                                 : "LlamaForCausalLM";
  j.set("architectures", Json::array({Json(arch)}));
  j.set("model_type", c.model_type);
  j.set("vocab_size", c.vocab_size);
  j.set("hidden_size", c.hidden_size);
  j.set("intermediate_size", c.intermediate_size);
  j.set("num_hidden_layers", c.num_hidden_layers);
  j.set("num_attention_heads", c.num_attention_heads);
  j.set("num_key_value_heads", c.num_key_value_heads);
  j.set("head_dim", c.head_dim);
  j.set("hidden_act", "silu");
  j.set("rms_norm_eps", c.rms_norm_eps);
  j.set("rope_theta", c.rope_theta);
  if (c.rope_scaling.type == "llama3") {
    Json rs = Json::object();
    rs.set("rope_type", "llama3");
    rs.set("factor", c.rope_scaling.factor);
    rs.set("low_freq_factor", c.rope_scaling.low_freq_factor);
    rs.set("high_freq_factor", c.rope_scaling.high_freq_factor);
    rs.set("original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings);
    j.set("rope_scaling", rs);
  } else {
    j.set("rope_scaling", Json());
  }
  j.set("max_position_embeddings", c.max_position_embeddings);
  j.set("tie_word_embeddings", c.tie_word_embeddings);
  if (c.model_type == "llama") j.set("attention_bias", false);
  if (c.model_type == "qwen2") {
    j.set("use_sliding_window", c.sliding_window > 0);
    j.set("sliding_window", c.sliding_window > 0 ? Json(c.sliding_window) : Json());
    j.set("max_window_layers", c.sliding_window > 0 ? 0 : c.num_hidden_layers);
  } else if (c.model_type == "mistral") {
    j.set("sliding_window", c.sliding_window > 0 ? Json(c.sliding_window) : Json());
  }
  if (c.bos_token_id >= 0) j.set("bos_token_id", c.bos_token_id);
  if (c.eos_token_id >= 0) j.set("eos_token_id", c.eos_token_id);
  return j;
}

}  // namespace lizard::io
