// `lizard bench step` (see include/lizard/train/step_bench.h).
#include "lizard/train/step_bench.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "lizard/core/storage.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/hf_config.h"
#include "lizard/train/data_loader.h"
#include "lizard/train/metrics.h"
#include "lizard/train/stages.h"
#include "lizard/train/step_cost.h"
#include "lizard/train/step_timer.h"
#include "lizard/train/trainer.h"

namespace lizard::train {

namespace fs = std::filesystem;
using io::Json;

extern "C" char** environ;  // POSIX: the process environment

namespace {

/// Every LIZARD_* environment variable set in this process (the kernel and path switches that
/// change what a benchmark measures), by name: recorded with the numbers so a run can be
/// reproduced and two runs' settings compared.
Json lizard_environment() {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "LIZARD_", 7) == 0) {
      const char* eq = std::strchr(*e, '=');
      if (eq) vars[std::string(*e, static_cast<size_t>(eq - *e))] = eq + 1;
    }
  Json j = Json::object();
  for (const auto& [name, value] : vars) j.set(name, value);
  return j;
}

constexpr double kGiB = 1073741824.0;

/// A scratch directory removed on scope exit (checkpoint, dataset and config of the run).
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    path = fs::temp_directory_path() / ("lizard_bench_step_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool is_hf_config(const std::string& p) {
  return fs::is_directory(p) ? fs::exists(fs::path(p) / "config.json")
                             : fs::path(p).filename() == "config.json";
}

/// The run config: the model file's architecture plus the bench's settings as overrides (so
/// the loader validates them and applies the stage's defaults, e.g. the finetune LR).
RunConfig bench_config(const StepBenchOptions& o, const std::string& device) {
  LZ_INPUT_CHECK(!o.model_config.empty(), "--model-config: no model file given");
  LZ_INPUT_CHECK(fs::exists(o.model_config), "--model-config: '", o.model_config,
                 "' does not exist");
  LZ_INPUT_CHECK(o.seq_len >= 2, "--seq-len: must be at least 2, got ", o.seq_len);
  LZ_INPUT_CHECK(o.micro_batch >= 1, "--micro-batch: must be at least 1, got ", o.micro_batch);
  LZ_INPUT_CHECK(o.accum >= 1, "--accum: must be at least 1, got ", o.accum);
  LZ_INPUT_CHECK(o.steps >= 1, "--steps: must be at least 1, got ", o.steps);
  LZ_INPUT_CHECK(o.warmup >= 0, "--warmup: must be >= 0, got ", o.warmup);
  std::vector<std::string> sets = {
      "stage=" + o.stage,
      "device=" + device,
      "dtype=" + o.dtype,
      "seed=" + std::to_string(o.seed),
      "loss_on=all",
      "data.seq_len=" + std::to_string(o.seq_len),
      "data.micro_batch=" + std::to_string(o.micro_batch),
      "data.global_batch=" + std::to_string(o.micro_batch * o.accum),
      "data.shuffle=false",
      "schedule.steps=" + std::to_string(o.steps + o.warmup),
      "metrics.file=''",
      "eval.every=0",
      "checkpoint.every=0",
      "lizard.preset=" + o.preset,
  };
  sets.insert(sets.end(), o.sets.begin(), o.sets.end());
  std::vector<RunConfig> cfgs;
  nn::LlamaConfig hf_arch;
  const bool hf = is_hf_config(o.model_config);
  if (hf) {
    hf_arch = io::load_hf_config(o.model_config);
    cfgs = load_config_string("{}", o.model_config, sets);
  } else {
    cfgs = load_config(o.model_config, sets);
  }
  LZ_INPUT_CHECK(cfgs.size() == 1, "--model-config: '", o.model_config, "' has ", cfgs.size(),
                 " stages; give a model file (a `model:` section, e.g. configs/models/llama3_8b.yaml)");
  RunConfig cfg = cfgs[0];
  if (hf) {
    cfg.model.arch = hf_arch;
  } else if (!cfg.model.path.empty()) {
    // A stage config pointing at a checkpoint: only its architecture is used.
    LZ_INPUT_CHECK(is_hf_config(cfg.model.path), "--model-config: model.path '", cfg.model.path,
                   "' in ", o.model_config,
                   " has no config.json; bench step needs the architecture (model.hidden_size, "
                   "...) as in configs/models/*.yaml");
    cfg.model.arch = io::load_hf_config(cfg.model.path);
  }
  cfg.model.path.clear();  // random weights: nothing is loaded
  cfg.model.init_from.clear();
  cfg.data.val_path.clear();
  cfg.data.val_fraction = 0;
  cfg.kl_to_teacher = 0;
  return cfg;
}

void set_recompute(RunConfig& cfg, RecomputeMode m) {
  cfg.recompute = m == RecomputeMode::Layer;
  cfg.recompute_attention = m == RecomputeMode::Attention;
  cfg.recompute_states = m == RecomputeMode::States;
}

/// A single document of uniformly random tokens, long enough for every step.
std::string write_random_tokens(const fs::path& dir, const RunConfig& cfg, int64_t steps) {
  const int64_t vocab = cfg.model.arch.vocab_size;
  const int64_t n = steps * cfg.data.global_batch * cfg.data.seq_len + 1;
  std::mt19937_64 gen(cfg.seed + 1);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = tok(gen);
  const std::string path = (dir / "random_tokens.h5").string();
  io::TokenDatasetWriter w(path, {"random", vocab});
  w.add(tokens);
  w.finish();
  return path;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Json memory_json(const MemoryEstimate& m) {
  Json j = Json::object();
  j.set("weights_gib", m.weights / kGiB);
  j.set("trainable_state_gib", m.trainable_state / kGiB);
  j.set("activations_per_layer_gib", m.activations_per_layer / kGiB);
  j.set("activations_gib", m.activations / kGiB);
  j.set("recompute_transient_gib", m.recompute_transient / kGiB);
  j.set("logits_gib", m.logits / kGiB);
  j.set("total_gib", m.total / kGiB);
  return j;
}

}  // namespace

Json run_step_bench(const StepBenchOptions& o) {
  const std::string device = o.device.empty() ? (cuda_available() ? "cuda" : "cpu") : o.device;
  RunConfig cfg = bench_config(o, device);
  const Device dev = Device::parse(cfg.device);
  LZ_INPUT_CHECK(dev.is_cpu() || cuda_available(), "--device: '", device,
                 "' requested but no GPU is visible (use --device cpu)");
  const DType dtype = dev.is_cpu() ? DType::F32 : dtype_from_name(cfg.dtype);
  const std::string device_name = dev.is_cuda() ? cuda::context(dev.index).name : "cpu";
  const double device_memory = dev.is_cuda() ? static_cast<double>(cuda::context(dev.index).total_memory) : 0;

  // Recomputation: as asked, or the cheapest mode whose estimate fits 85% of the device
  // (15% for the allocator's rounding, cuBLAS workspaces and op temporaries).
  RecomputeMode mode = RecomputeMode::None;
  if (o.recompute == "auto") {
    if (dev.is_cuda()) {
      mode = RecomputeMode::Layer;
      for (RecomputeMode m : {RecomputeMode::None, RecomputeMode::States, RecomputeMode::Attention}) {
        set_recompute(cfg, m);
        if (estimate_step_memory(step_shape_of(cfg, cfg.model.arch, dtype)).total <= 0.85 * device_memory) {
          mode = m;
          break;
        }
      }
    }
  } else {
    mode = recompute_mode_from_name(o.recompute, "--recompute");
  }
  set_recompute(cfg, mode);
  const StepShape shape = step_shape_of(cfg, cfg.model.arch, dtype);
  const FlopsPerToken flops = step_flops_per_token(shape);
  const MemoryEstimate est = estimate_step_memory(shape);

  ScratchDir scratch;
  cfg.out_dir = (scratch.path / "run").string();
  const std::string data_path = write_random_tokens(scratch.path, cfg, o.steps + o.warmup);
  auto data = std::make_shared<const io::TokenDataset>(io::TokenDataset::open(data_path));
  LoaderOptions lo;
  lo.seq_len = cfg.data.seq_len;
  lo.micro_batch = cfg.data.micro_batch;
  lo.shuffle = false;
  lo.seed = cfg.seed;
  lo.use_loss_mask = false;
  DataLoader loader(data, {0}, lo);

  if (dev.is_cuda()) reset_peak_memory(dev.index);
  std::unique_ptr<TrainTask> task = make_stage_task(cfg, dev, dtype);
  const double after_build = dev.is_cuda() ? static_cast<double>(memory_stats(dev.index).current) : 0;
  int64_t trainable = 0;
  for (const autograd::Var& p : task->parameters()) trainable += p.data().numel();

  StepTimer timer(dev);
  TrainerOptions to;
  to.print = false;
  to.device_name = device_name;
  to.timer = &timer;
  Trainer trainer(cfg, *task, loader, nullptr, {}, to);
  const TrainSummary summary = trainer.run();
  const MemoryStats mem = memory_stats(dev.is_cuda() ? dev.index : 0);

  // Timed steps: after the warm-up.
  const std::vector<StepTiming>& all = timer.steps();
  LZ_CHECK(static_cast<int64_t>(all.size()) == o.steps + o.warmup, "bench step: timed ",
           all.size(), " steps, expected ", o.steps + o.warmup);
  std::vector<double> wall, total;
  std::array<double, kNumPhases> phase_sum{};
  for (size_t i = static_cast<size_t>(o.warmup); i < all.size(); ++i) {
    wall.push_back(all[i].wall_ms);
    total.push_back(all[i].total_ms);
    for (int p = 0; p < kNumPhases; ++p) phase_sum[p] += all[i].phase_ms[p];
  }
  const double n_timed = static_cast<double>(wall.size());
  const double step_ms = median(wall);
  const int64_t tokens_per_step = cfg.data.global_batch * cfg.data.seq_len;
  const double tokens_per_s = static_cast<double>(tokens_per_step) / (step_ms / 1000.0);
  const double peak = peak_flops_for(device_name);

  Json j = Json::object();
  j.set("bench", "step");
  j.set("device", device_name);
  j.set("stage", cfg.stage);
  Json model = Json::object();
  model.set("config", o.model_config);
  model.set("parameters", cfg.model.arch.num_parameters());
  model.set("layers", cfg.model.arch.num_hidden_layers);
  model.set("hidden_size", cfg.model.arch.hidden_size);
  model.set("vocab_size", cfg.model.arch.vocab_size);
  model.set("trainable_parameters", trainable);
  model.set("lizard", shape.lizard.str());
  j.set("model", model);
  j.set("dtype", dev.is_cpu() ? "f32" : cfg.dtype);
  j.set("seq_len", cfg.data.seq_len);
  j.set("micro_batch", cfg.data.micro_batch);
  j.set("accum", cfg.data.global_batch / cfg.data.micro_batch);
  j.set("tokens_per_step", tokens_per_step);
  j.set("recompute", name_of(mode));
  j.set("recompute_requested", o.recompute);
  j.set("env", lizard_environment());
  j.set("warmup_steps", o.warmup);
  j.set("timed_steps", o.steps);
  Json st = Json::object();
  st.set("median", step_ms);
  st.set("min", *std::min_element(wall.begin(), wall.end()));
  st.set("max", *std::max_element(wall.begin(), wall.end()));
  st.set("device_median", median(total));
  j.set("step_ms", st);
  j.set("tokens_per_s", tokens_per_s);
  Json fl = Json::object();
  fl.set("per_token", flops.total);
  fl.set("dense", flops.dense);
  fl.set("lora", flops.lora);
  fl.set("teacher_attention", flops.teacher_attention);
  fl.set("student_attention", flops.student_attention);
  fl.set("formula", flops.formula);
  j.set("flops", fl);
  j.set("peak_tflops", peak > 0 ? Json(peak / 1e12) : Json());
  j.set("mfu", peak > 0 ? Json(flops.total * tokens_per_s / peak) : Json());
  Json ph = Json::object();
  for (int p = 0; p < kNumPhases; ++p)
    ph.set(phase_name(static_cast<Phase>(p)), phase_sum[p] / n_timed);
  j.set("phases_ms", ph);
  j.set("phase_timer", timer.method());
  Json memj = Json::object();
  if (dev.is_cuda()) {
    memj.set("peak_gib", static_cast<double>(mem.peak) / kGiB);
    memj.set("reserved_gib", static_cast<double>(mem.reserved) / kGiB);
    memj.set("after_build_gib", after_build / kGiB);
    memj.set("device_gib", device_memory / kGiB);
    memj.set("peak_over_estimate", est.total > 0 ? Json(static_cast<double>(mem.peak) / est.total) : Json());
  } else {
    memj.set("peak_gib", Json());  // the CPU allocator keeps no statistics
  }
  memj.set("estimate", memory_json(est));
  Json by_mode = Json::object();  // what --recompute auto chose from
  for (RecomputeMode m : {RecomputeMode::None, RecomputeMode::States, RecomputeMode::Attention,
                          RecomputeMode::Layer}) {
    StepShape sm = shape;
    sm.recompute = m;
    by_mode.set(name_of(m), estimate_step_memory(sm).total / kGiB);
  }
  memj.set("estimate_total_gib_by_recompute", by_mode);
  j.set("memory", memj);
  Json losses = Json::array();
  for (double l : summary.losses) losses.push_back(std::isfinite(l) ? Json(l) : Json());
  j.set("losses", losses);
  j.set("skipped_steps", summary.skipped_steps);
  return j;
}

}  // namespace lizard::train
