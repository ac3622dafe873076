// The run configuration: one typed struct per YAML section, and a schema (key, type, default,
// one-line doc, validation) that loads YAML into it. Files compose with `include:`; a
// `stages:` list chains runs (distill then finetune) from one file; `--set a.b=v` overrides.
// Every unknown key, wrong type or out-of-range value is an InputError naming the key and
// the file it came from (the CLI exits with 2). Defaults are the paper's recipe
// (DESIGN.md "Recipe defaults"), so an empty stage config reproduces the paper.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/nn/llama_config.h"

namespace lizard::train {

struct ModelSection {
  std::string path;       ///< Hugging Face checkpoint directory (the teacher / base model)
  std::string init_from;  ///< checkpoint directory whose model.h5 is loaded after building
  nn::LlamaConfig arch;   ///< architecture when pretraining from scratch (path empty)
};

struct DataSection {
  std::string path;          ///< HDF5 token dataset written by `lizard prepare-data`
  std::string val_path;      ///< optional separate validation dataset
  double val_fraction = 0;   ///< documents held out of `path` for validation (when no val_path)
  int64_t seq_len = 2048;    ///< tokens per sequence (documents are packed to this length)
  int64_t micro_batch = 1;   ///< sequences per forward/backward on one rank
  int64_t global_batch = 8;  ///< sequences per optimizer step over all ranks
  bool shuffle = true;       ///< shuffle documents each epoch (deterministic by seed, epoch)
  std::string pack = "stream";  ///< stream: cut the document stream every seq_len tokens;
                                ///< documents: whole documents per sequence, the rest padded
};

struct OptimizerSection {
  double lr = 1e-3;  ///< peak LR; the finetune stage defaults to 5e-4 unless set
  std::vector<double> betas{0.9, 0.99};
  double eps = 1e-8;
  double weight_decay = 0.0;  ///< applied to the decay group only (matrices, not norms/biases)
  double clip = 1.0;          ///< global gradient-norm clip; 0 disables
};

struct ScheduleSection {
  std::string name = "cosine";  ///< cosine | linear | constant
  double warmup = 0.1;          ///< fraction of steps with linear warm-up from 0
  double floor = 0.1;           ///< final LR as a fraction of the peak
  int64_t steps = 0;            ///< optimizer steps; 0 = derived from epochs
  double epochs = 2;            ///< passes over the training data when steps == 0
};

struct LizardSection {
  std::string preset = "paper";  ///< paper | plus (plus: window_rope, per_head gate, bias 3)
  int64_t feature_dim = 128;
  std::string feature_activation = "softmax";  ///< softmax | exp
  std::string gate = "shared";                 ///< shared | per_head
  double gate_bias_init = 0.0;
  int64_t window = 128;
  int64_t sinks = 4;
  bool sinks_per_head = false;
  std::string combine = "sum";  ///< sum | convex
  bool window_rope = false;
  std::vector<int64_t> softmax_layers;  ///< layers kept as the teacher's softmax attention
  int64_t chunk = 64;                   ///< chunk length of the chunked kernels
};

struct LoraSection {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> targets{"q", "k", "v"};
};

struct CheckpointSection {
  int64_t every = 0;      ///< steps between checkpoints; 0 = only at the end
  int64_t keep_last = 2;  ///< complete checkpoints kept (older ones deleted); 0 = keep all
};

struct EvalSection {
  int64_t every = 0;    ///< steps between validations; 0 = never
  int64_t batches = 0;  ///< validation micro-batches; 0 = the whole held-out split
};

struct MetricsSection {
  std::string file = "metrics.jsonl";  ///< JSONL under out_dir ("" = none)
  int64_t log_every = 1;
  /// Per-phase milliseconds of each step (train::StepTimer: data, forward, backward,
  /// communication, optimizer, ...) in the metric lines as ms_<phase>; on CUDA it adds one
  /// event per phase boundary and a wait at the step's end (where the loss is read anyway).
  bool phases = false;
};

/// Data parallelism across ranks (mpirun -np N); ignored by a single process.
struct DistSection {
  /// Seconds a collective may wait for the other ranks before the job is aborted with a
  /// message (a dead or hung rank); $LIZARD_DIST_TIMEOUT_S, when set, takes precedence.
  double timeout_s = 600;
  bool zero1 = false;       ///< shard the AdamW state across ranks (ZeRO stage 1)
  int64_t bucket_mb = 25;   ///< gradient all-reduce bucket size in MiB
  bool overlap = true;      ///< launch each bucket's all-reduce from backward as it is ready
  /// Sum an untied, trained input embedding's gradient by exchanging only the rows of the
  /// step's token ids (dist::SparseRowGrad) instead of all-reducing the table; false: the
  /// embedding is all-reduced in the buckets like every other parameter. Off by default: on
  /// 2 x H200 at the 135M shape (vocabulary 32768, 16K tokens per rank and step) it scaled at
  /// 91.9-94.5% against 94.0-95.6% for the bucketed all-reduce (docs/multi-gpu.md).
  bool sparse_embedding_grad = false;
};

/// One resolved run (one stage).
struct RunConfig {
  std::string stage = "distill";  ///< pretrain | distill | finetune
  std::string name;               ///< stage name in a `stages:` list (defaults to `stage`)
  std::string out_dir = "runs/lizard";
  uint64_t seed = 0;
  std::string device = "cuda";
  std::string dtype = "bf16";  ///< compute dtype: bf16 | f32 (master weights are always f32)
  bool recompute = false;      ///< recompute activations in backward (less memory)
  /// Recompute only the student attention of linearized layers in backward (distill: the
  /// student path of every layer; finetune: the Lizard mixing). Implied by `recompute`.
  bool recompute_attention = false;
  /// Keep no per-chunk Lizard states (and, on the tensor cores, no feature maps) between
  /// forward and backward (CUDA): the backward reruns the state sweep and the feature maps.
  /// Most of a linearized layer's kept memory for a few % of the step.
  bool recompute_states = false;
  bool train_lizard_params = false;
  double kl_to_teacher = 0.0;
  std::string loss_on = "response";  ///< response | all
  int64_t max_nonfinite_steps = 5;  ///< consecutive skipped (non-finite) steps that stop the run
  bool debug_nonfinite = false;     ///< on such a stop, name the first module that went non-finite
  ModelSection model;
  DataSection data;
  OptimizerSection optimizer;
  ScheduleSection schedule;
  LizardSection lizard;
  LoraSection lora;
  CheckpointSection checkpoint;
  EvalSection eval;
  MetricsSection metrics;
  DistSection dist;
};

/// The value kinds of the schema.
enum class FieldKind : uint8_t { Int, Float, Bool, String, IntList, FloatList, StringList };

/// One documented config field (for `lizard train --help-config` and docs).
struct FieldInfo {
  std::string key;  ///< dotted, e.g. "optimizer.lr"
  FieldKind kind;
  std::string default_value;  ///< YAML text of the default
  std::string doc;
  std::string constraint;  ///< "[0, 1]", "one of cosine|linear|constant", ...
};

/// Every field of the schema, in declaration order.
std::vector<FieldInfo> config_schema();

/// Loads `path` (with its includes) and the overrides ("a.b=value", value parsed as YAML;
/// "stages.N.a.b=value" targets one stage). Returns one RunConfig per stage (one when the
/// file has no `stages:`). Throws InputError naming the key and file on any bad input.
std::vector<RunConfig> load_config(const std::string& path,
                                   const std::vector<std::string>& overrides = {});

/// Parses configs from YAML text (`origin` names it in errors; includes resolve from
/// `base_dir`).
std::vector<RunConfig> load_config_string(const std::string& yaml, const std::string& origin,
                                          const std::vector<std::string>& overrides = {},
                                          const std::string& base_dir = ".");

/// The config as YAML (every field, nested by section); load_config_string of it gives the
/// same config back. Saved with every checkpoint.
std::string config_to_yaml(const RunConfig& cfg);

/// Gradient-accumulation steps: global_batch / (micro_batch * world); InputError unless
/// it divides exactly.
int64_t grad_accum_steps(const RunConfig& cfg, int world);

}  // namespace lizard::train
