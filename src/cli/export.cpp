// `lizard export --checkpoint DIR --output DIR [--merge-lora | --adapter]`: a training
// checkpoint (or a run's out_dir: its last complete checkpoint) as a Hugging Face directory
// that `lizard eval/info --model` and transformers (trust_remote_code) load (docs/export.md).
#include <CLI/CLI.hpp>

#include <cctype>
#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/core/error.h"
#include "lizard/train/export.h"

namespace lizard::cli {

namespace {

struct ExportArgs {
  std::string checkpoint, output, base_model, dtype = "bf16", max_shard = "5GB";
  bool merge = false, adapter = false, overwrite = false;
  std::vector<std::string> overrides;
};

/// "5GB", "500MB", "64KiB", "123" (bytes) -> bytes (decimal units as HF: 1 GB = 1e9 B).
size_t parse_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  std::string unit = s.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "KIB") mult = 1024.0;
  else if (unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "GIB") mult = 1024.0 * 1024 * 1024;
  double v = 0;
  try {
    v = i ? std::stod(s.substr(0, i)) : -1;
  } catch (const std::exception&) {
    v = -1;
  }
  LZ_INPUT_CHECK(mult > 0 && v > 0, "--max-shard-size: expected a size like 5GB, 500MB or 1048576, got '", s, "'");
  return static_cast<size_t>(v * mult);
}

void run_export(const ExportArgs& a) {
  LZ_INPUT_CHECK(!(a.merge && a.adapter), "--merge-lora and --adapter exclude each other");
  io::ExportOptions opt;
  opt.merge_lora = !a.adapter;
  opt.dtype = dtype_from_name(a.dtype);
  opt.max_shard_bytes = parse_size(a.max_shard);
  opt.base_model_dir = a.base_model;
  opt.overwrite = a.overwrite;
  train::export_checkpoint(a.checkpoint, a.output, opt, a.overrides);
  std::printf("exported %s -> %s (%s, LoRA %s)\n", a.checkpoint.c_str(), a.output.c_str(),
              a.dtype.c_str(), a.adapter ? "as adapter" : "merged when present");
}

}  // namespace

void register_export(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export", "Write a checkpoint as a Hugging Face directory (safetensors + config.json)");
  cmd->add_option("--checkpoint", a->checkpoint,
                  "checkpoint directory, or a run's out_dir (its last complete checkpoint)")
      ->required();
  cmd->add_option("--output", a->output, "directory to create (written atomically)")->required();
  cmd->add_flag("--merge-lora", a->merge, "fold LoRA into the base weights (the default)");
  cmd->add_flag("--adapter", a->adapter,
                "keep LoRA separate: adapter_model.safetensors + adapter_config.json (peft)");
  cmd->add_option("--dtype", a->dtype, "weight dtype: bf16, f16 or f32 (Lizard parameters stay f32)");
  cmd->add_option("--max-shard-size", a->max_shard, "shard above this size, e.g. 5GB, 500MB");
  cmd->add_option("--base-model", a->base_model,
                  "HF directory whose config.json fields and tokenizer are copied (default: model.path)");
  cmd->add_option("--set", a->overrides,
                  "override the checkpoint's saved config, e.g. model.path=DIR (repeatable)");
  cmd->add_flag("--overwrite", a->overwrite, "replace an existing output directory");
  cmd->callback([a]() { run_export(*a); });
}

}  // namespace lizard::cli
