// The config schema and its YAML loader (see include/lizard/train/config.h).
#include "lizard/train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <type_traits>

#include "lizard/core/device.h"
#include "lizard/core/error.h"

namespace lizard::train {

namespace fs = std::filesystem;

namespace {

/// Where a value came from, for error messages.
struct Entry {
  YAML::Node node;
  std::string source;
};
using Values = std::map<std::string, Entry>;

struct Constraint {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;
};
Constraint range(double lo, double hi) { return {lo, hi, {}}; }
Constraint at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), {}}; }
Constraint one_of(std::vector<std::string> c) {
  Constraint k;
  k.choices = std::move(c);
  return k;
}
Constraint any() { return {}; }

std::string describe(const Constraint& c) {
  if (!c.choices.empty()) {
    std::string s = "one of ";
    for (size_t i = 0; i < c.choices.size(); ++i) s += (i ? "|" : "") + c.choices[i];
    return s;
  }
  if (std::isinf(c.lo) && std::isinf(c.hi)) return "";
  if (std::isinf(c.hi)) return str_cat(">= ", c.lo);
  return str_cat("[", c.lo, ", ", c.hi, "]");
}

std::string node_text(const YAML::Node& n) {
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

[[noreturn]] void bad_value(const std::string& key, const std::string& src, const std::string& want,
                            const YAML::Node& got) {
  throw InputError(str_cat("config key '", key, "' (", src, "): expected ", want, ", got '",
                           node_text(got), "'"));
}

template <class T>
T scalar_as(const YAML::Node& n, const std::string& key, const std::string& src,
            const char* want) {
  if (!n.IsScalar()) bad_value(key, src, want, n);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    bad_value(key, src, want, n);
  }
}

template <class T>
void check_range(T v, const Constraint& c, const std::string& key, const std::string& src,
                 const YAML::Node& n) {
  const double d = static_cast<double>(v);
  if (!(d >= c.lo && d <= c.hi)) bad_value(key, src, "a value " + describe(c), n);
}

/// Parses one element of type T with validation.
template <class T>
T parse_one(const YAML::Node& n, const Constraint& c, const std::string& key,
            const std::string& src) {
  if constexpr (std::is_same_v<T, bool>) {
    return scalar_as<bool>(n, key, src, "true or false");
  } else if constexpr (std::is_integral_v<T>) {
    const T v = scalar_as<T>(n, key, src, "an integer");
    check_range(v, c, key, src, n);
    return v;
  } else if constexpr (std::is_floating_point_v<T>) {
    const T v = scalar_as<T>(n, key, src, "a number");
    if (!std::isfinite(v)) bad_value(key, src, "a finite number", n);
    check_range(v, c, key, src, n);
    return v;
  } else {
    const std::string v = scalar_as<std::string>(n, key, src, "a string");
    if (!c.choices.empty() &&
        std::find(c.choices.begin(), c.choices.end(), v) == c.choices.end())
      bad_value(key, src, describe(c), n);
    return v;
  }
}

template <class T> struct KindOf;
template <> struct KindOf<bool> { static constexpr FieldKind k = FieldKind::Bool; };
template <> struct KindOf<int64_t> { static constexpr FieldKind k = FieldKind::Int; };
template <> struct KindOf<uint64_t> { static constexpr FieldKind k = FieldKind::Int; };
template <> struct KindOf<double> { static constexpr FieldKind k = FieldKind::Float; };
template <> struct KindOf<std::string> { static constexpr FieldKind k = FieldKind::String; };
template <> struct KindOf<std::vector<int64_t>> { static constexpr FieldKind k = FieldKind::IntList; };
template <> struct KindOf<std::vector<double>> { static constexpr FieldKind k = FieldKind::FloatList; };
template <> struct KindOf<std::vector<std::string>> { static constexpr FieldKind k = FieldKind::StringList; };

template <class T> struct IsVector : std::false_type {};
template <class T> struct IsVector<std::vector<T>> : std::true_type { using elem = T; };

struct Field {
  FieldInfo info;
  std::function<void(RunConfig&, const YAML::Node&, const std::string&)> set;
  std::function<YAML::Node(const RunConfig&)> get;
};

/// A field bound to the member that `acc` returns; the default is the struct's initializer.
template <class Acc>
Field make_field(const char* key, Acc acc, const char* doc, Constraint c = any()) {
  using T = std::decay_t<decltype(acc(std::declval<RunConfig&>()))>;
  Field f;
  f.info.key = key;
  f.info.kind = KindOf<T>::k;
  f.info.doc = doc;
  f.info.constraint = describe(c);
  const std::string k = key;
  f.set = [acc, c, k](RunConfig& cfg, const YAML::Node& n, const std::string& src) {
    if constexpr (IsVector<T>::value) {
      using E = typename IsVector<T>::elem;
      if (!n.IsSequence() && !n.IsNull()) bad_value(k, src, "a list", n);
      T v;
      if (n.IsSequence())
        for (const auto& item : n) v.push_back(parse_one<E>(item, c, k, src));
      acc(cfg) = v;
    } else {
      acc(cfg) = parse_one<T>(n, c, k, src);
    }
  };
  f.get = [acc](const RunConfig& cfg) {
    YAML::Node n(acc(const_cast<RunConfig&>(cfg)));
    if constexpr (IsVector<T>::value) n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  };
  const RunConfig defaults;
  f.info.default_value = node_text(f.get(defaults));
  return f;
}

#define LZ_FIELD(key, member, ...) \
  make_field(key, [](RunConfig& c) -> decltype((c.member)) { return c.member; }, __VA_ARGS__)

const std::vector<Field>& fields() {
  // Built once; read-only afterwards (not mutable global state).
  static const std::vector<Field> all = [] {
    const double inf = std::numeric_limits<double>::infinity();
    return std::vector<Field>{
        LZ_FIELD("stage", stage, "what to train: all weights, attention transfer, or LoRA",
                 one_of({"pretrain", "distill", "finetune"})),
        LZ_FIELD("name", name, "stage name in logs and checkpoint paths (default: stage)"),
        LZ_FIELD("out_dir", out_dir, "run directory: checkpoints, metrics, resolved config"),
        LZ_FIELD("seed", seed, "seed of parameter init, dropout and data order", at_least(0)),
        LZ_FIELD("device", device, "cpu, cuda or cuda:N (ranks use their local GPU)"),
        LZ_FIELD("dtype", dtype, "compute dtype (master weights and optimizer state are fp32)",
                 one_of({"bf16", "f32"})),
        LZ_FIELD("recompute", recompute, "recompute activations in backward to save memory"),
        LZ_FIELD("recompute_attention", recompute_attention,
                 "recompute only the student (Lizard) attention in backward: keeps no per-chunk "
                 "kernel state between forward and backward; cheaper than `recompute`"),
        LZ_FIELD("recompute_states", recompute_states,
                 "keep no per-chunk Lizard attention states (f32, 2F x (D+1) per 32 tokens and "
                 "head) nor feature maps between forward and backward: the backward reruns the "
                 "feature maps and the state sweep. Saves most of what a linearized layer keeps "
                 "for a few % of the step"),
        LZ_FIELD("train_lizard_params", train_lizard_params,
                 "finetune: also train the Lizard parameters (feature maps, gate, sinks, alpha)"),
        LZ_FIELD("kl_to_teacher", kl_to_teacher,
                 "finetune: weight of KL(teacher || student) on the logits; 0 = off",
                 range(0, inf)),
        LZ_FIELD("loss_on", loss_on, "finetune: cross-entropy on response tokens or all tokens",
                 one_of({"response", "all"})),
        LZ_FIELD("max_nonfinite_steps", max_nonfinite_steps,
                 "consecutive steps with a non-finite loss or gradient (each skipped) that stop "
                 "the run", range(1, int64_t(1) << 40)),
        LZ_FIELD("debug_nonfinite", debug_nonfinite,
                 "when non-finite steps stop the run, re-run the forward with a check after every "
                 "module and name the first non-finite one (also env LIZARD_DEBUG_NONFINITE=1)"),
        LZ_FIELD("model.path", model.path, "Hugging Face checkpoint directory (teacher/base)"),
        LZ_FIELD("model.init_from", model.init_from,
                 "checkpoint directory whose model.h5 tensors are loaded after building"),
        LZ_FIELD("model.model_type", model.arch.model_type, "pretrain: architecture family",
                 one_of({"llama", "mistral", "qwen2"})),
        LZ_FIELD("model.vocab_size", model.arch.vocab_size, "pretrain: vocabulary size",
                 range(1, 1 << 24)),
        LZ_FIELD("model.hidden_size", model.arch.hidden_size, "pretrain: model width",
                 range(1, 1 << 20)),
        LZ_FIELD("model.intermediate_size", model.arch.intermediate_size,
                 "pretrain: SwiGLU hidden width", range(1, 1 << 22)),
        LZ_FIELD("model.num_hidden_layers", model.arch.num_hidden_layers, "pretrain: layers",
                 range(1, 1024)),
        LZ_FIELD("model.num_attention_heads", model.arch.num_attention_heads,
                 "pretrain: query heads", range(1, 1024)),
        LZ_FIELD("model.num_key_value_heads", model.arch.num_key_value_heads,
                 "pretrain: key/value heads (GQA; divides the query heads)", range(1, 1024)),
        LZ_FIELD("model.head_dim", model.arch.head_dim, "pretrain: head dimension",
                 range(1, 1024)),
        LZ_FIELD("model.rms_norm_eps", model.arch.rms_norm_eps, "pretrain: RMSNorm epsilon",
                 range(0, 1)),
        LZ_FIELD("model.rope_theta", model.arch.rope_theta, "pretrain: RoPE base",
                 range(1, inf)),
        LZ_FIELD("model.max_position_embeddings", model.arch.max_position_embeddings,
                 "pretrain: longest position", range(1, int64_t(1) << 40)),
        LZ_FIELD("model.tie_word_embeddings", model.arch.tie_word_embeddings,
                 "pretrain: share the embedding and LM-head matrix"),
        LZ_FIELD("data.path", data.path, "HDF5 token dataset from `lizard prepare-data`"),
        LZ_FIELD("data.val_path", data.val_path, "separate HDF5 validation dataset (optional)"),
        LZ_FIELD("data.val_fraction", data.val_fraction,
                 "documents of data.path held out for validation when val_path is empty",
                 range(0, 0.5)),
        LZ_FIELD("data.seq_len", data.seq_len, "tokens per packed sequence", range(2, 1 << 22)),
        LZ_FIELD("data.micro_batch", data.micro_batch, "sequences per forward/backward per rank",
                 range(1, 1 << 16)),
        LZ_FIELD("data.global_batch", data.global_batch,
                 "sequences per optimizer step, all ranks (accumulation is derived)",
                 range(1, 1 << 20)),
        LZ_FIELD("data.shuffle", data.shuffle, "shuffle documents each epoch (by seed, epoch)"),
        LZ_FIELD("data.pack", data.pack,
                 "stream: documents concatenated and cut every seq_len tokens; documents: "
                 "whole documents per sequence (none split unless longer than seq_len), padded",
                 one_of({"stream", "documents"})),
        LZ_FIELD("optimizer.lr", optimizer.lr, "peak learning rate (finetune default 5e-4)",
                 range(0, 10)),
        LZ_FIELD("optimizer.betas", optimizer.betas, "AdamW (beta1, beta2)", range(0, 0.999999)),
        LZ_FIELD("optimizer.eps", optimizer.eps, "AdamW epsilon", range(0, 1)),
        LZ_FIELD("optimizer.weight_decay", optimizer.weight_decay,
                 "decoupled weight decay on matrices (not norms, biases, gates)", range(0, 10)),
        LZ_FIELD("optimizer.clip", optimizer.clip, "global gradient-norm clip; 0 = off",
                 range(0, inf)),
        LZ_FIELD("schedule.name", schedule.name, "LR decay after warm-up",
                 one_of({"cosine", "linear", "constant"})),
        LZ_FIELD("schedule.warmup", schedule.warmup, "fraction of steps of linear warm-up",
                 range(0, 1)),
        LZ_FIELD("schedule.floor", schedule.floor, "final LR as a fraction of the peak",
                 range(0, 1)),
        LZ_FIELD("schedule.steps", schedule.steps, "optimizer steps; 0 = from schedule.epochs",
                 range(0, int64_t(1) << 40)),
        LZ_FIELD("schedule.epochs", schedule.epochs, "passes over the data when steps is 0",
                 range(0, 1e6)),
        LZ_FIELD("lizard.preset", lizard.preset,
                 "paper (as published) or plus (window_rope, per_head gate, gate_bias_init 3)",
                 one_of({"paper", "plus"})),
        LZ_FIELD("lizard.feature_dim", lizard.feature_dim, "F: feature map width is 2F",
                 range(1, 4096)),
        LZ_FIELD("lizard.feature_activation", lizard.feature_activation,
                 "phi(u) = [softmax(u), softmax(-u)] or [exp(u-max), exp(-u-max)]",
                 one_of({"softmax", "exp"})),
        LZ_FIELD("lizard.gate", lizard.gate, "one log-sigmoid gate per token or per token-head",
                 one_of({"shared", "per_head"})),
        LZ_FIELD("lizard.gate_bias_init", lizard.gate_bias_init,
                 "initial gate bias b_g (0: gamma = 0.5)", range(-30, 30)),
        LZ_FIELD("lizard.window", lizard.window, "anchor window w in tokens; 0 = no window",
                 range(0, 1 << 20)),
        LZ_FIELD("lizard.sinks", lizard.sinks, "learnable sink logits per layer", range(0, 1024)),
        LZ_FIELD("lizard.sinks_per_head", lizard.sinks_per_head, "sink logits per head"),
        LZ_FIELD("lizard.combine", lizard.combine, "g + alpha l, or (g + |alpha| l)/(1 + |alpha|)",
                 one_of({"sum", "convex"})),
        LZ_FIELD("lizard.window_rope", lizard.window_rope, "apply RoPE in the window branch"),
        LZ_FIELD("lizard.softmax_layers", lizard.softmax_layers,
                 "layers kept as softmax attention (hybrid)", range(0, 1 << 16)),
        LZ_FIELD("lizard.chunk", lizard.chunk,
                 "chunk length C of the CPU chunked path (CUDA kernels: 32)", range(16, 4096)),
        LZ_FIELD("lora.r", lora.r, "LoRA rank", range(1, 1 << 16)),
        LZ_FIELD("lora.alpha", lora.alpha, "LoRA scale numerator (scale = alpha / r)",
                 range(0, 1e6)),
        LZ_FIELD("lora.dropout", lora.dropout, "dropout on the LoRA input", range(0, 0.999)),
        LZ_FIELD("lora.targets", lora.targets, "projections given adapters",
                 one_of({"q", "k", "v", "o", "gate", "up", "down"})),
        LZ_FIELD("checkpoint.every", checkpoint.every, "steps between checkpoints; 0 = end only",
                 range(0, int64_t(1) << 40)),
        LZ_FIELD("checkpoint.keep_last", checkpoint.keep_last,
                 "complete checkpoints kept; 0 = all", range(0, 1 << 20)),
        LZ_FIELD("eval.every", eval.every, "steps between validations; 0 = never",
                 range(0, int64_t(1) << 40)),
        LZ_FIELD("eval.batches", eval.batches, "validation micro-batches; 0 = whole split",
                 range(0, int64_t(1) << 40)),
        LZ_FIELD("metrics.file", metrics.file, "JSONL metrics file under out_dir; '' = none"),
        LZ_FIELD("metrics.log_every", metrics.log_every, "steps between metric lines",
                 range(1, int64_t(1) << 40)),
        LZ_FIELD("metrics.phases", metrics.phases,
                 "per-phase step times (ms_data, ms_forward, ms_backward, ms_communication, "
                 "ms_optimizer, ...) in the metric lines; waits for the device at the end of every step"),
        LZ_FIELD("dist.timeout_s", dist.timeout_s,
                 "seconds a collective may wait for other ranks before the job is aborted "
                 "($LIZARD_DIST_TIMEOUT_S overrides)",
                 range(1e-3, 1e7)),
        LZ_FIELD("dist.zero1", dist.zero1,
                 "shard the optimizer state across ranks (ZeRO-1); parameters re-synced each step"),
        LZ_FIELD("dist.bucket_mb", dist.bucket_mb, "gradient all-reduce bucket size in MiB",
                 range(1, 1 << 16)),
        LZ_FIELD("dist.overlap", dist.overlap,
                 "start each bucket's all-reduce during backward as its gradients are ready"),
        LZ_FIELD("dist.sparse_embedding_grad", dist.sparse_embedding_grad,
                 "exchange only the rows of the step's tokens of an untied, trained input "
                 "embedding's gradient instead of all-reducing the table (false: all-reduce it)"),
    };
  }();
  return all;
}

const Field* find_field(const std::string& key) {
  for (const Field& f : fields())
    if (f.info.key == key) return &f;
  return nullptr;
}

bool is_section(const std::string& prefix) {
  for (const Field& f : fields())
    if (f.info.key.size() > prefix.size() && f.info.key.compare(0, prefix.size(), prefix) == 0 &&
        f.info.key[prefix.size()] == '.')
      return true;
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& src) {
  std::string best;
  size_t best_d = 4;  // suggest only near misses
  for (const Field& f : fields()) {
    // A field, or its section (a misspelt section like "optimzer:" names no full key).
    const std::string& k = f.info.key;
    for (const std::string& cand : {k, k.substr(0, k.rfind('.'))}) {
      const size_t d = edit_distance(key, cand);
      if (d < best_d) best_d = d, best = cand;
    }
  }
  throw InputError(str_cat("unknown config key '", key, "' (", src, ")",
                           best.empty() ? "" : str_cat("; did you mean '", best, "'?")));
}

YAML::Node load_yaml_file(const std::string& path) {
  if (!fs::exists(path)) throw InputError(str_cat("config file not found: ", path));
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw InputError(str_cat("config file ", path, ": YAML error: ", e.what()));
  }
}

void flatten_map(const YAML::Node& node, const std::string& prefix, const std::string& src,
                 Values& out);

/// Sets out[key]. YAML::Node copies share their node and Node::operator= writes through, so an
/// entry copied from another stage must be replaced, never assigned, or the write would leak
/// into every stage that shares it.
void set_value(Values& out, const std::string& key, const YAML::Node& node, const std::string& src) {
  out.erase(key);
  out.emplace(key, Entry{node, src});
}

/// Merges `include:` (a path or a list, relative to base_dir) then the map's own keys.
void flatten_doc(const YAML::Node& doc, const std::string& src, const fs::path& base_dir,
                 Values& out, int depth, bool allow_stages) {
  if (!doc || doc.IsNull()) return;
  if (!doc.IsMap()) throw InputError(str_cat("config ", src, ": expected a mapping at the top"));
  LZ_INPUT_CHECK(depth < 16, "config ", src, ": include nesting deeper than 16 (a cycle?)");
  if (const YAML::Node inc = doc["include"]) {
    std::vector<std::string> paths;
    if (inc.IsScalar()) {
      paths.push_back(inc.as<std::string>());
    } else if (inc.IsSequence()) {
      for (const auto& p : inc) paths.push_back(scalar_as<std::string>(p, "include", src, "a path"));
    } else {
      bad_value("include", src, "a path or a list of paths", inc);
    }
    for (const std::string& p : paths) {
      const fs::path full = fs::path(p).is_absolute() ? fs::path(p) : base_dir / p;
      const YAML::Node sub = load_yaml_file(full.string());
      if (sub.IsMap() && sub["stages"])
        throw InputError(str_cat("config ", full.string(), " (included from ", src,
                                 "): 'stages' is allowed only in the top file"));
      flatten_doc(sub, full.string(), full.parent_path(), out, depth + 1, false);
    }
  }
  for (const auto& kv : doc) {
    const std::string key = kv.first.as<std::string>();
    if (key == "include") continue;
    if (key == "stages") {
      if (!allow_stages) unknown_key(key, src);
      continue;
    }
    if (find_field(key)) {
      set_value(out, key, kv.second, src);
    } else if (is_section(key)) {
      if (!kv.second.IsMap() && !kv.second.IsNull()) bad_value(key, src, "a mapping (section)", kv.second);
      flatten_map(kv.second, key, src, out);
    } else {
      unknown_key(key, src);
    }
  }
}

void flatten_map(const YAML::Node& node, const std::string& prefix, const std::string& src,
                 Values& out) {
  if (!node || node.IsNull()) return;
  for (const auto& kv : node) {
    const std::string key = prefix + "." + kv.first.as<std::string>();
    if (find_field(key)) {
      set_value(out, key, kv.second, src);
    } else if (is_section(key)) {
      flatten_map(kv.second, key, src, out);
    } else {
      unknown_key(key, src);
    }
  }
}

RunConfig resolve(const Values& values) {
  RunConfig cfg;
  for (const auto& [key, e] : values) find_field(key)->set(cfg, e.node, e.source);
  auto is_set = [&](const char* k) { return values.count(k) > 0; };
  auto src_of = [&](const char* k) {
    auto it = values.find(k);
    return it == values.end() ? std::string("defaults") : it->second.source;
  };
  if (cfg.name.empty()) cfg.name = cfg.stage;
  // Paper, Table 13: stage 2 (LoRA) peaks at 5e-4, stage 1 at 1e-3.
  if (cfg.stage == "finetune" && !is_set("optimizer.lr")) cfg.optimizer.lr = 5e-4;
  // A preset fills only what the user did not set explicitly.
  if (cfg.lizard.preset == "plus") {
    if (!is_set("lizard.window_rope")) cfg.lizard.window_rope = true;
    if (!is_set("lizard.gate")) cfg.lizard.gate = "per_head";
    if (!is_set("lizard.gate_bias_init")) cfg.lizard.gate_bias_init = 3.0;
  }
  LZ_INPUT_CHECK(cfg.optimizer.betas.size() == 2, "config key 'optimizer.betas' (",
                 src_of("optimizer.betas"), "): expected 2 values, got ",
                 cfg.optimizer.betas.size());
  LZ_INPUT_CHECK(cfg.data.global_batch % cfg.data.micro_batch == 0,
                 "config key 'data.global_batch' (", src_of("data.global_batch"),
                 "): expected a multiple of data.micro_batch (", cfg.data.micro_batch, "), got ",
                 cfg.data.global_batch);
  LZ_INPUT_CHECK(cfg.lizard.chunk >= 16 && (cfg.lizard.chunk & (cfg.lizard.chunk - 1)) == 0,
                 "config key 'lizard.chunk' (", src_of("lizard.chunk"),
                 "): expected a power of two >= 16, got ", cfg.lizard.chunk);
  LZ_INPUT_CHECK(!cfg.lora.targets.empty() || cfg.stage != "finetune", "config key 'lora.targets' (",
                 src_of("lora.targets"), "): finetune needs at least one target");
  try {
    Device::parse(cfg.device);
  } catch (const Error&) {
    throw InputError(str_cat("config key 'device' (", src_of("device"),
                             "): expected cpu, cuda or cuda:N, got '", cfg.device, "'"));
  }
  return cfg;
}

std::vector<RunConfig> load_doc(const YAML::Node& root, const std::string& origin,
                                const fs::path& base_dir,
                                const std::vector<std::string>& overrides) {
  Values base;
  flatten_doc(root, origin, base_dir, base, 0, true);
  std::vector<Values> stages;
  const YAML::Node st = root.IsMap() ? root["stages"] : YAML::Node();
  if (st) {
    if (!st.IsSequence() || st.size() == 0) bad_value("stages", origin, "a non-empty list of mappings", st);
    for (size_t i = 0; i < st.size(); ++i) {
      Values v = base;
      flatten_doc(st[i], str_cat(origin, " stages[", i, "]"), base_dir, v, 0, false);
      stages.push_back(std::move(v));
    }
  } else {
    stages.push_back(std::move(base));
  }
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    LZ_INPUT_CHECK(eq != std::string::npos && eq > 0, "--set '", o, "': expected key=value");
    std::string key = o.substr(0, eq);
    const std::string text = o.substr(eq + 1);
    long stage = -1;
    if (key.rfind("stages.", 0) == 0) {
      const size_t dot = key.find('.', 7);
      LZ_INPUT_CHECK(dot != std::string::npos, "--set '", o, "': expected stages.N.key=value");
      try {
        stage = std::stol(key.substr(7, dot - 7));
      } catch (const std::exception&) {
        throw InputError(str_cat("--set '", o, "': stage index is not a number"));
      }
      LZ_INPUT_CHECK(stage >= 0 && stage < static_cast<long>(stages.size()), "--set '", o,
                     "': stage ", stage, " does not exist (", stages.size(), " stages)");
      key = key.substr(dot + 1);
    }
    if (!find_field(key)) unknown_key(key, "--set");
    YAML::Node value;
    try {
      value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw InputError(str_cat("--set '", o, "': YAML error: ", e.what()));
    }
    for (size_t i = 0; i < stages.size(); ++i)
      if (stage < 0 || static_cast<size_t>(stage) == i) set_value(stages[i], key, value, "--set");
  }
  std::vector<RunConfig> out;
  for (const Values& v : stages) out.push_back(resolve(v));
  return out;
}

}  // namespace

std::vector<FieldInfo> config_schema() {
  std::vector<FieldInfo> out;
  for (const Field& f : fields()) out.push_back(f.info);
  return out;
}

std::vector<RunConfig> load_config(const std::string& path,
                                   const std::vector<std::string>& overrides) {
  const YAML::Node root = load_yaml_file(path);
  return load_doc(root, path, fs::path(path).parent_path(), overrides);
}

std::vector<RunConfig> load_config_string(const std::string& yaml, const std::string& origin,
                                          const std::vector<std::string>& overrides,
                                          const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw InputError(str_cat("config ", origin, ": YAML error: ", e.what()));
  }
  return load_doc(root, origin, base_dir, overrides);
}

std::string config_to_yaml(const RunConfig& cfg) {
  YAML::Node root(YAML::NodeType::Map);
  for (const Field& f : fields()) {
    const std::string& key = f.info.key;
    const size_t dot = key.find('.');
    if (dot == std::string::npos) {
      root[key] = f.get(cfg);
    } else {
      root[key.substr(0, dot)][key.substr(dot + 1)] = f.get(cfg);
    }
  }
  YAML::Emitter e;
  e << root;
  return std::string(e.c_str()) + "\n";
}

int64_t grad_accum_steps(const RunConfig& cfg, int world) {
  const int64_t per_step = cfg.data.micro_batch * world;
  LZ_INPUT_CHECK(world >= 1 && cfg.data.global_batch % per_step == 0,
                 "data.global_batch (", cfg.data.global_batch,
                 ") must be a multiple of data.micro_batch x ranks (", cfg.data.micro_batch, " x ",
                 world, ")");
  return cfg.data.global_batch / per_step;
}

}  // namespace lizard::train
