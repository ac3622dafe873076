// Export of a model as a Hugging Face directory (see include/lizard/io/export.h).
#include "lizard/io/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <map>

#include "lizard/io/hf_config.h"
#include "lizard/io/safetensors.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/matmul.h"

namespace lizard::io {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kFormatVersion = 1;
constexpr const char* kPeftPrefix = "base_model.model.";
/// Files of a base model directory that travel with an export when present.
constexpr const char* kCopiedFiles[] = {"tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json", "generation_config.json"};
/// The projections LoRA may target, in HF module names and LoraTargets order.
constexpr const char* kProjections[] = {"q_proj", "k_proj", "v_proj", "o_proj"};

const char* hf_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: throw InputError(str_cat("export: dtype ", dtype_name(t), " is not a weight dtype (use bf16, f16 or f32)"));
  }
}

// Typed readers of the "lizard" object: errors name the file and the key.
struct SectionReader {
  const Json& s;
  const std::string& src;
  const Json* get(const char* key) const {
    const Json* v = s.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  [[noreturn]] void bad(const char* key, const char* what, const Json& v) const {
    throw InputError(str_cat(src, ": \"lizard.", key, "\" must be ", what, ", got ", v.dump()));
  }
  int64_t int_or(const char* key, int64_t def) const {
    const Json* v = get(key);
    if (!v) return def;
    if (!v->is_number()) bad(key, "an integer", *v);
    try {
      return v->as_int();
    } catch (const InputError&) {
      bad(key, "an integer", *v);
    }
  }
  double num_or(const char* key, double def) const {
    const Json* v = get(key);
    if (!v) return def;
    if (!v->is_number()) bad(key, "a number", *v);
    return v->as_double();
  }
  bool bool_or(const char* key, bool def) const {
    const Json* v = get(key);
    if (!v) return def;
    if (!v->is_bool()) bad(key, "true or false", *v);
    return v->as_bool();
  }
  std::string str_or(const char* key, const std::string& def) const {
    const Json* v = get(key);
    if (!v) return def;
    if (!v->is_string()) bad(key, "a string", *v);
    return v->as_string();
  }
  // The enum parsers name "lizard.<field>" already; add the file.
  template <class F>
  auto parse_name(const char* key, const std::string& def, F&& f) const {
    const std::string name = str_or(key, def);
    try {
      return f(name);
    } catch (const InputError& e) {
      throw InputError(str_cat(src, ": ", e.what()));
    }
  }
};

Json rope_json(const nn::LlamaConfig& base) {
  Json r = Json::object();
  r.set("rope_type", base.rope_scaling.type);
  r.set("rope_theta", base.rope_theta);
  if (base.rope_scaling.type == "llama3") {
    r.set("factor", base.rope_scaling.factor);
    r.set("low_freq_factor", base.rope_scaling.low_freq_factor);
    r.set("high_freq_factor", base.rope_scaling.high_freq_factor);
    r.set("original_max_position_embeddings", base.rope_scaling.original_max_position_embeddings);
  }
  return r;
}

/// The LoRALinear projections of every layer, keyed by the name of their base weight.
std::map<std::string, const nn::LoRALinear*> lora_projections(const nn::LlamaForCausalLM& model) {
  std::map<std::string, const nn::LoRALinear*> out;
  for (size_t i = 0; i < model.model->layers.size(); ++i) {
    const nn::Attention* a = model.model->layers[i]->self_attn;
    const nn::Linear* projs[] = {a->q_proj, a->k_proj, a->v_proj, a->o_proj};
    for (int p = 0; p < 4; ++p)
      if (const auto* l = dynamic_cast<const nn::LoRALinear*>(projs[p]))
        out[str_cat("model.layers.", i, ".self_attn.", kProjections[p], ".weight")] = l;
  }
  return out;
}

Json adapter_config_json(const nn::LlamaForCausalLM& model,
                         const std::map<std::string, const nn::LoRALinear*>& loras) {
  const nn::LoraConfig& c0 = loras.begin()->second->lora_config();
  bool targeted[4] = {false, false, false, false};
  for (const auto& [name, l] : loras) {
    const nn::LoraConfig& c = l->lora_config();
    LZ_CHECK(c.r == c0.r && c.alpha == c0.alpha && c.dropout == c0.dropout,
             "export: LoRA adapters with different r/alpha/dropout (", name,
             ") cannot share one adapter_config.json");
    for (int p = 0; p < 4; ++p)
      if (name.find(str_cat(".", kProjections[p], ".")) != std::string::npos) targeted[p] = true;
  }
  // peft applies target_modules to every layer: every layer must have the same adapters.
  const size_t per_layer = static_cast<size_t>(targeted[0] + targeted[1] + targeted[2] + targeted[3]);
  LZ_CHECK(loras.size() == per_layer * model.model->layers.size(),
           "export: LoRA adapters differ between layers; peft's adapter_config.json cannot say so");
  Json targets = Json::array();
  for (int p = 0; p < 4; ++p)
    if (targeted[p]) targets.push_back(kProjections[p]);
  Json j = Json::object();
  j.set("peft_type", "LORA");
  j.set("task_type", "CAUSAL_LM");
  j.set("r", c0.r);
  j.set("lora_alpha", c0.alpha);
  j.set("lora_dropout", c0.dropout);
  j.set("target_modules", targets);
  j.set("bias", "none");
  j.set("fan_in_fan_out", false);
  j.set("use_rslora", false);
  j.set("inference_mode", true);
  j.set("init_lora_weights", true);
  j.set("modules_to_save", Json());
  j.set("base_model_name_or_path", Json());
  return j;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  LZ_CHECK(f.good(), "export: cannot write ", p.string(), " (disk full?)");
}

/// Writes every file of the export into `dir` (an empty directory).
void write_export_files(const nn::LlamaForCausalLM& model, const fs::path& dir,
                        const ExportOptions& opt) {
  const std::optional<LizardSection> lizard = lizard_section_of(model);
  const auto loras = lora_projections(model);
  const bool adapter = !loras.empty() && !opt.merge_lora;
  const std::map<std::string, std::string> meta{{"format", "pt"}};

  // ---- tensors ----
  std::vector<std::pair<std::string, Tensor>> weights, adapters;
  for (const auto& [name, v] : model.named_parameters()) {
    if (nn::is_lora_parameter(name)) {
      if (adapter) adapters.emplace_back(peft_name(name), v.data().to(Device::cpu(), opt.dtype));
      continue;
    }
    if (nn::is_lizard_parameter(name)) {
      weights.emplace_back(name, v.data().to(Device::cpu(), DType::F32));
      continue;
    }
    auto it = loras.find(name);
    if (it != loras.end() && opt.merge_lora) {
      // W + (alpha/r) B A in fp32 (W is exact in fp32 whatever its dtype); the only rounding
      // is the cast to opt.dtype below.
      const nn::LoRALinear& l = *it->second;
      const Tensor ba = ops::matmul(l.lora_b().data().to(Device::cpu(), DType::F32),
                                    l.lora_a().data().to(Device::cpu(), DType::F32));  // [out, in]
      const Tensor w =
          ops::add(v.data().to(Device::cpu(), DType::F32), ops::affine(ba, l.lora_scale()));
      weights.emplace_back(name, w.to(Device::cpu(), opt.dtype));
      continue;
    }
    weights.emplace_back(name, v.data().to(Device::cpu(), opt.dtype));
  }
  write_safetensors_sharded(dir.string(), weights, opt.max_shard_bytes, meta);
  if (adapter) {
    write_safetensors((dir / "adapter_model.safetensors").string(), adapters, meta);
    write_text(dir / "adapter_config.json", adapter_config_json(model, loras).dump(2) + "\n");
  }

  // ---- config.json ----
  const fs::path base_cfg = opt.base_model_dir.empty()
                                ? fs::path()
                                : fs::path(opt.base_model_dir) / "config.json";
  Json cfg = !base_cfg.empty() && fs::exists(base_cfg) ? load_json_file(base_cfg.string())
                                                       : hf_config_json(model.config());
  LZ_INPUT_CHECK(cfg.is_object(), base_cfg.string(), ": expected a JSON object");
  if (lizard) {
    cfg.set("architectures", Json::array({Json("LizardForCausalLM")}));
    cfg.set("model_type", "lizard");
    Json auto_map = Json::object();
    auto_map.set("AutoConfig", "modeling_lizard.LizardConfig");
    auto_map.set("AutoModelForCausalLM", "modeling_lizard.LizardForCausalLM");
    cfg.set("auto_map", auto_map);
    cfg.set("lizard", lizard_section_json(lizard->config, lizard->softmax_layers, model.config()));
  }
  cfg.set("torch_dtype", hf_dtype_name(opt.dtype));
  if (cfg.contains("dtype")) cfg.set("dtype", hf_dtype_name(opt.dtype));
  write_text(dir / "config.json", cfg.dump(2) + "\n");
  if (lizard) write_text(dir / "modeling_lizard.py", modeling_lizard_source());

  // ---- tokenizer and generation files of the base model ----
  if (!opt.base_model_dir.empty())
    for (const char* f : kCopiedFiles) {
      const fs::path src = fs::path(opt.base_model_dir) / f;
      if (fs::exists(src)) fs::copy_file(src, dir / f);
    }
}

}  // namespace

std::string peft_name(const std::string& name) { return kPeftPrefix + name; }

Json lizard_section_json(const ops::LizardConfig& lcfg, const std::vector<int64_t>& softmax_layers,
                         const nn::LlamaConfig& base) {
  const ops::LizardConfig c = lcfg.resolved();
  Json s = Json::object();
  s.set("format_version", kFormatVersion);
  s.set("base_model_type", base.model_type);
  s.set("preset", ops::name_of(c.preset));
  s.set("feature_dim", c.feature_dim);
  s.set("feature_activation", ops::name_of(c.feature_activation));
  s.set("gate", ops::name_of(c.gate_mode()));
  s.set("gate_bias_init", c.bias_init());
  s.set("window", c.window);
  s.set("sinks", c.sinks);
  s.set("sinks_per_head", c.sinks_per_head);
  s.set("combine", ops::name_of(c.combine));
  s.set("window_rope", c.use_window_rope());
  s.set("eps", c.eps);
  s.set("chunk", c.chunk);
  Json layers = Json::array();
  for (int64_t l : softmax_layers) layers.push_back(l);
  s.set("softmax_layers", layers);
  // Resolved base maths, so remote code reads them without the base dialects' rules.
  s.set("qkv_bias", base.attention_bias);
  s.set("softmax_sliding_window", base.sliding_window);
  s.set("rope", rope_json(base));
  return s;
}

std::optional<LizardSection> parse_lizard_section(const Json& config, const std::string& src) {
  const Json* s = config.is_object() ? config.find("lizard") : nullptr;
  if (!s || s->is_null()) return std::nullopt;
  LZ_INPUT_CHECK(s->is_object(), src, ": \"lizard\" must be an object, got ", s->dump());
  SectionReader r{*s, src};
  const int64_t version = r.int_or("format_version", kFormatVersion);
  LZ_INPUT_CHECK(version <= kFormatVersion, src, ": \"lizard.format_version\" ", version,
                 " is newer than this build reads (", kFormatVersion, "); update lizard");
  LizardSection out;
  ops::LizardConfig& c = out.config;
  c.preset = r.parse_name("preset", "paper", ops::preset_from_name);
  c.feature_dim = r.int_or("feature_dim", c.feature_dim);
  c.feature_activation = r.parse_name("feature_activation", "softmax", ops::feature_activation_from_name);
  if (r.get("gate")) c.gate = r.parse_name("gate", "shared", ops::gate_mode_from_name);
  if (r.get("gate_bias_init")) c.gate_bias_init = r.num_or("gate_bias_init", 0.0);
  c.window = r.int_or("window", c.window);
  c.sinks = r.int_or("sinks", c.sinks);
  c.sinks_per_head = r.bool_or("sinks_per_head", c.sinks_per_head);
  c.combine = r.parse_name("combine", "sum", ops::combine_from_name);
  if (r.get("window_rope")) c.window_rope = r.bool_or("window_rope", false);
  c.eps = r.num_or("eps", c.eps);
  c.chunk = r.int_or("chunk", c.chunk);
  try {
    c.validate();
  } catch (const InputError& e) {
    throw InputError(str_cat(src, ": ", e.what()));
  }
  out.config = c.resolved();
  if (const Json* l = r.get("softmax_layers")) {
    if (!l->is_array()) r.bad("softmax_layers", "a list of layer indices", *l);
    for (const Json& e : l->items()) {
      if (!e.is_int() || e.as_int() < 0) r.bad("softmax_layers", "a list of layer indices", *l);
      out.softmax_layers.push_back(e.as_int());
    }
  }
  out.base_model_type = r.str_or("base_model_type", "llama");
  return out;
}

std::optional<LizardSection> lizard_section_of(const nn::LlamaForCausalLM& model) {
  std::optional<LizardSection> out;
  std::vector<int64_t> softmax;
  for (size_t i = 0; i < model.model->layers.size(); ++i) {
    const auto* la = dynamic_cast<const nn::LizardAttention*>(model.model->layers[i]->self_attn);
    if (!la) {
      softmax.push_back(static_cast<int64_t>(i));
      continue;
    }
    if (!out) {
      out = LizardSection{la->lizard_config().resolved(), {}, model.config().model_type};
    } else {
      LZ_INPUT_CHECK(la->lizard_config().str() == out->config.str(), "export: layer ", i,
                     " has Lizard config '", la->lizard_config().str(), "', layer 0 has '",
                     out->config.str(), "'; an export holds one Lizard config");
    }
  }
  if (out) out->softmax_layers = softmax;
  return out;
}

void export_model(const nn::LlamaForCausalLM& model, const std::string& out_dir,
                  const ExportOptions& opt) {
  hf_dtype_name(opt.dtype);  // refuses non-weight dtypes before touching the disk
  LZ_INPUT_CHECK(!out_dir.empty(), "export: no output directory given");
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "dir/" -> "dir"
  LZ_INPUT_CHECK(!fs::exists(out) || opt.overwrite, "export: output '", out.string(),
                 "' already exists (remove it, choose another --output, or pass --overwrite)");
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  LZ_INPUT_CHECK(!ec && fs::is_directory(parent), "export: cannot create the parent directory '",
                 parent.string(), "' of the output", ec ? str_cat(" (", ec.message(), ")") : "");
  const fs::path tmp = parent / str_cat(".", out.filename().string(), ".tmp-", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  LZ_INPUT_CHECK(!ec, "export: cannot write into '", parent.string(), "' (", ec.message(), ")");
  try {
    write_export_files(model, tmp, opt);
    // Replacing an export must never leave a half-deleted one under `out` (a kill during
    // remove_all would): swap the two directories atomically, then delete the old one.
    if (fs::exists(out) &&
        ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(tmp, ec);
    } else {
      if (fs::exists(out)) fs::remove_all(out);  // no RENAME_EXCHANGE on this filesystem
      fs::rename(tmp, out);
    }
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw InputError(str_cat("export to '", out.string(), "' failed: ", e.what()));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

std::optional<nn::LoraSpec> read_adapter_config(const std::string& dir) {
  const fs::path p = fs::path(dir) / "adapter_config.json";
  if (!fs::exists(p)) return std::nullopt;
  const std::string src = p.string();
  const Json j = load_json_file(src);
  LZ_INPUT_CHECK(j.is_object(), src, ": expected a JSON object");
  auto field = [&](const char* key) -> const Json* {
    const Json* v = j.find(key);
    return v && !v->is_null() ? v : nullptr;
  };
  if (const Json* t = field("peft_type"))
    LZ_INPUT_CHECK(t->is_string() && t->as_string() == "LORA", src, ": \"peft_type\" must be \"LORA\", got ",
                   t->dump());
  for (const char* off : {"use_rslora", "fan_in_fan_out", "use_dora"})
    if (const Json* v = field(off))
      LZ_INPUT_CHECK(v->is_bool() && !v->as_bool(), src, ": \"", off,
                     "\" is not supported (expected false)");
  nn::LoraConfig c;
  const Json* r = field("r");
  LZ_INPUT_CHECK(r && r->is_int() && r->as_int() > 0, src, ": \"r\" must be a positive integer");
  c.r = r->as_int();
  const Json* alpha = field("lora_alpha");
  LZ_INPUT_CHECK(alpha && alpha->is_number(), src, ": \"lora_alpha\" must be a number");
  c.alpha = alpha->as_double();
  if (const Json* d = field("lora_dropout")) {
    LZ_INPUT_CHECK(d->is_number(), src, ": \"lora_dropout\" must be a number");
    c.dropout = d->as_double();
  }
  const Json* tm = field("target_modules");
  LZ_INPUT_CHECK(tm && tm->is_array() && tm->size() > 0, src,
                 ": \"target_modules\" must be a non-empty list of module names");
  nn::LoraSpec spec;
  spec.config = c;
  for (const Json& t : tm->items()) {
    const std::string n = t.is_string() ? t.as_string() : t.dump();
    if (n == "q_proj") spec.targets.q = true;
    else if (n == "k_proj") spec.targets.k = true;
    else if (n == "v_proj") spec.targets.v = true;
    else if (n == "o_proj") spec.targets.o = true;
    else
      throw InputError(str_cat(src, ": target module \"", n,
                               "\" is not supported (expected q_proj, k_proj, v_proj, o_proj)"));
  }
  return spec;
}

void load_adapter(nn::Module& model, const std::string& dir) {
  const std::string path = (fs::path(dir) / "adapter_model.safetensors").string();
  LZ_INPUT_CHECK(fs::exists(path), dir, ": adapter_config.json without adapter_model.safetensors");
  SafetensorsCheckpoint ckpt(path);
  std::map<std::string, Shape> expected;
  std::vector<std::pair<std::string, autograd::Var>> targets;
  for (auto& [name, v] : model.named_parameters()) {
    if (!nn::is_lora_parameter(name)) continue;
    expected[peft_name(name)] = v.shape();
    targets.emplace_back(peft_name(name), v);
  }
  ckpt.check(expected);
  for (auto& [name, v] : targets) v.set_data(ckpt.load(name, v.device(), v.dtype()));
}

const std::string& modeling_lizard_source() {
  static const unsigned char kBytes[] = {
#include "modeling_lizard_py.inc"
  };
  static const std::string kText(reinterpret_cast<const char*>(kBytes), sizeof kBytes);
  return kText;
}

}  // namespace lizard::io
