#include <gtest/gtest.h>

#include <filesystem>

#include "io_test_util.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/safetensors.h"

using namespace lizard;
using namespace lizard::io;
using lizard::test::error_of;

namespace {

// Llama-3.1-8B's config.json as the hub has it (transformers 4 dialect).
const char* kLlama31V4 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

// The same model as transformers 5 writes it.
const char* kLlama31V5 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "dtype": "bfloat16", "eos_token_id": [128001, 128008, 128009], "head_dim": 128,
  "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
                      "rope_type": "llama3"},
  "tie_word_embeddings": false, "transformers_version": "5.0.0", "vocab_size": 128256})";

Json with(const char* base, const std::string& key, const Json& v) {
  Json j = parse_json(base);
  j.set(key, v);
  return j;
}

void expect_same(const nn::LlamaConfig& a, const nn::LlamaConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
}

}  // namespace

TEST(HfConfig, Llama31BothDialects) {
  const nn::LlamaConfig a = parse_hf_config(parse_json(kLlama31V4));
  EXPECT_EQ(a.model_type, "llama");
  EXPECT_EQ(a.head_dim, 128);  // derived: 4096 / 32
  EXPECT_EQ(a.num_key_value_heads, 8);
  EXPECT_EQ(a.rms_norm_eps, 1e-5);
  EXPECT_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.rope_scaling.type, "llama3");
  EXPECT_EQ(a.rope_scaling.factor, 8.0);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(a.bos_token_id, 128000);
  EXPECT_EQ(a.eos_token_id, 128001);  // first of the list
  EXPECT_EQ(a.sliding_window, 0);
  EXPECT_FALSE(a.attention_bias);
  EXPECT_EQ(a.num_parameters(), 8030261248);  // Llama-3.1-8B's published count
  expect_same(a, parse_hf_config(parse_json(kLlama31V5)));
  // Older transformers 4 spelling "type" instead of "rope_type".
  Json old = parse_json(kLlama31V4);
  Json rs = old.at("rope_scaling");
  Json rs2 = Json::object();
  for (size_t i = 0; i < rs.keys().size(); ++i)
    rs2.set(rs.keys()[i] == "rope_type" ? "type" : rs.keys()[i], rs.values()[i]);
  old.set("rope_scaling", rs2);
  expect_same(a, parse_hf_config(old));
  // Plain rope in v5: rope_parameters with rope_type default.
  Json v5 = with(kLlama31V5, "rope_parameters", parse_json(R"({"rope_type":"default","rope_theta":10000.0})"));
  const nn::LlamaConfig p = parse_hf_config(v5);
  EXPECT_EQ(p.rope_scaling.type, "default");
  EXPECT_EQ(p.rope_theta, 10000.0);
}

TEST(HfConfig, MistralSlidingWindowAndExplicitHeadDim) {
  Json m = parse_json(R"({"model_type":"mistral","vocab_size":32768,"hidden_size":5120,
    "intermediate_size":14336,"num_hidden_layers":40,"num_attention_heads":32,
    "num_key_value_heads":8,"head_dim":128,"rms_norm_eps":1e-5,"rope_theta":1000000.0,
    "sliding_window":null,"max_position_embeddings":131072,"hidden_act":"silu"})");
  nn::LlamaConfig c = parse_hf_config(m);
  EXPECT_EQ(c.head_dim, 128);  // explicit; 5120 / 32 would be 160
  EXPECT_EQ(c.sliding_window, 0);
  m.set("sliding_window", 4096);
  EXPECT_EQ(parse_hf_config(m).sliding_window, 4096);
  m.set("head_dim", Json());  // null head_dim: derived
  EXPECT_EQ(parse_hf_config(m).head_dim, 160);
}

TEST(HfConfig, Qwen2BiasAndWindowRules) {
  Json q = parse_json(R"({"model_type":"qwen2","vocab_size":151936,"hidden_size":896,
    "intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,
    "num_key_value_heads":2,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
    "sliding_window":32768,"use_sliding_window":false,"max_window_layers":21,
    "tie_word_embeddings":true,"max_position_embeddings":32768,"hidden_act":"silu"})");
  nn::LlamaConfig c = parse_hf_config(q);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
  EXPECT_EQ(c.num_parameters(), 494032768);  // Qwen2-0.5B's published count
  q.set("use_sliding_window", true);
  q.set("max_window_layers", 0);
  EXPECT_EQ(parse_hf_config(q).sliding_window, 32768);  // every layer slides
  q.set("max_window_layers", 24);
  EXPECT_EQ(parse_hf_config(q).sliding_window, 0);  // no layer slides
  q.set("max_window_layers", 21);
  EXPECT_NE(error_of<InputError>([&] { parse_hf_config(q); }).find("max_window_layers"),
            std::string::npos);
}

TEST(HfConfig, RefusalsNameEveryProblemAndTheSupportedSet) {
  struct Case {
    std::string key;
    Json value;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"model_type", "gemma", "model_type \"gemma\""},
      {"hidden_act", "gelu", "hidden_act \"gelu\""},
      {"attention_bias", true, "attention_bias true on llama"},
      {"mlp_bias", true, "mlp_bias"},
      {"rope_scaling", parse_json(R"({"rope_type":"yarn","factor":4.0})"), "rope type \"yarn\""},
      {"rope_scaling", parse_json(R"({"type":"linear","factor":2.0})"), "rope type \"linear\""},
      {"partial_rotary_factor", 0.5, "partial_rotary_factor"},
      {"quantization_config", parse_json(R"({"quant_method":"gptq"})"), "quantization_config"},
      {"layer_types", Json::array({Json("full_attention"), Json("sliding_attention")}), "mix"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of<InputError>([&] { parse_hf_config(with(kLlama31V4, c.key, c.value), "m/config.json"); });
    EXPECT_NE(msg.find("m/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.key << ": " << msg;
    EXPECT_NE(msg.find("supported:"), std::string::npos) << msg;
  }
  // Several problems: one message lists them all.
  Json j = with(kLlama31V4, "hidden_act", "relu");
  j.set("model_type", "phi3");
  const std::string msg = error_of<InputError>([&] { parse_hf_config(j); });
  EXPECT_NE(msg.find("phi3"), std::string::npos);
  EXPECT_NE(msg.find("relu"), std::string::npos);
  // Structural errors name the key.
  EXPECT_NE(error_of<InputError>([&] { parse_hf_config(with(kLlama31V4, "num_key_value_heads", 5)); })
                .find("num_key_value_heads"), std::string::npos);
  EXPECT_NE(error_of<InputError>([&] { parse_hf_config(with(kLlama31V4, "hidden_size", "big")); })
                .find("\"hidden_size\" must be an integer"), std::string::npos);
  Json missing = parse_json(kLlama31V4);
  Json m2 = Json::object();
  for (size_t i = 0; i < missing.keys().size(); ++i)
    if (missing.keys()[i] != "vocab_size") m2.set(missing.keys()[i], missing.values()[i]);
  EXPECT_NE(error_of<InputError>([&] { parse_hf_config(m2); }).find("\"vocab_size\""), std::string::npos);
  EXPECT_NE(error_of<InputError>([&] {
              parse_hf_config(with(kLlama31V4, "rope_scaling", parse_json(R"({"rope_type":"llama3","factor":8.0})")));
            }).find("low_freq_factor"), std::string::npos);
}

TEST(HfConfig, WriterRoundTrips) {
  for (const char* text : {kLlama31V4, kLlama31V5}) {
    const nn::LlamaConfig a = parse_hf_config(parse_json(text));
    expect_same(a, parse_hf_config(parse_json(hf_config_json(a).dump(2))));
  }
  nn::LlamaConfig m;
  m.model_type = "mistral";
  m.hidden_size = 64, m.num_attention_heads = 4, m.num_key_value_heads = 2, m.head_dim = 16;
  m.sliding_window = 8;
  expect_same(m, parse_hf_config(hf_config_json(m)));
  m.model_type = "qwen2";
  m.attention_bias = true;
  expect_same(m, parse_hf_config(hf_config_json(m)));
}

// When scripts/make_hf_fixtures.py has been run: both dialects of every fixture model agree,
// and the checkpoint has exactly the tensors the config implies.
TEST(HfConfig, FixtureModels) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(LIZARD_SOURCE_DIR) / "tests" / "fixtures" / "hf";
  if (!fs::exists(root)) GTEST_SKIP() << "no HF fixtures at " << root << " (run scripts/make_hf_fixtures.py)";
  int seen = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    if (!fs::exists(e.path() / "config.json")) continue;
    SCOPED_TRACE(e.path().string());
    const nn::LlamaConfig c = load_hf_config(e.path().string());
    expect_same(c, load_hf_config((e.path() / "config_v4.json").string()));
    const std::string name = e.path().filename().string();
    if (name == "mistral_swa") EXPECT_EQ(c.sliding_window, 8);
    if (name == "llama3_rope") EXPECT_EQ(c.rope_scaling.type, "llama3");
    if (name == "qwen2") EXPECT_TRUE(c.attention_bias);
    if (name == "llama_tied") EXPECT_TRUE(c.tie_word_embeddings);
    // The HF parameter names and shapes the config implies.
    std::map<std::string, Shape> want;
    const int64_t d = c.hidden_size, hq = c.num_attention_heads * c.head_dim,
                  hk = c.num_key_value_heads * c.head_dim;
    want["model.embed_tokens.weight"] = {c.vocab_size, d};
    want["model.norm.weight"] = {d};
    if (!c.tie_word_embeddings) want["lm_head.weight"] = {c.vocab_size, d};
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      want[p + "self_attn.q_proj.weight"] = {hq, d};
      want[p + "self_attn.k_proj.weight"] = {hk, d};
      want[p + "self_attn.v_proj.weight"] = {hk, d};
      want[p + "self_attn.o_proj.weight"] = {d, hq};
      if (c.attention_bias) {
        want[p + "self_attn.q_proj.bias"] = {hq};
        want[p + "self_attn.k_proj.bias"] = {hk};
        want[p + "self_attn.v_proj.bias"] = {hk};
      }
      want[p + "mlp.gate_proj.weight"] = {c.intermediate_size, d};
      want[p + "mlp.up_proj.weight"] = {c.intermediate_size, d};
      want[p + "mlp.down_proj.weight"] = {d, c.intermediate_size};
      want[p + "input_layernorm.weight"] = {d};
      want[p + "post_attention_layernorm.weight"] = {d};
    }
    SafetensorsCheckpoint ck(e.path().string());
    ck.check(want);
    ++seen;
  }
  EXPECT_GT(seen, 0);
}
