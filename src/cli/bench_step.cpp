// `lizard bench step --model-config M.yaml --stage distill|finetune --seq-len N --micro-batch B`:
// real training steps of a stage at a model's real shape (random weights and tokens), printed
// as one JSON document (train::run_step_bench). Runs on the CPU too, at small shapes.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "lizard/cli/commands.h"
#include "lizard/train/step_bench.h"

namespace lizard::cli {

void register_bench_step(CLI::App& bench) {
  auto o = std::make_shared<train::StepBenchOptions>();
  CLI::App* cmd = bench.add_subcommand(
      "step", "Training steps of a stage at a model's shape (random init): tokens/s, MFU, memory, phases");
  cmd->add_option("--model-config", o->model_config,
                  "Model YAML with the architecture (configs/models/*.yaml) or a HF config.json")
      ->required();
  cmd->add_option("--stage", o->stage, "distill | finetune | pretrain")
      ->check(CLI::IsMember({"distill", "finetune", "pretrain"}));
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence");
  cmd->add_option("--micro-batch", o->micro_batch, "Sequences per forward/backward");
  cmd->add_option("--accum", o->accum, "Micro-batches per optimizer step");
  cmd->add_option("--steps", o->steps, "Timed optimizer steps (median reported)");
  cmd->add_option("--warmup", o->warmup, "Untimed steps first");
  cmd->add_option("--recompute", o->recompute,
                  "none | states | attention | layer | auto (cheapest that fits the estimate)")
      ->check(CLI::IsMember({"none", "states", "attention", "layer", "auto"}));
  cmd->add_option("--lizard-preset", o->preset, "paper | plus")
      ->check(CLI::IsMember({"paper", "plus"}));
  cmd->add_option("--dtype", o->dtype, "bf16 | f32 (GPU compute dtype)")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--device", o->device, "cpu | cuda[:N] (default: cuda when visible)");
  cmd->add_option("--set", o->sets, "Config override key=value (e.g. lizard.window=64)");
  cmd->add_option("--seed", o->seed, "Seed of weights and tokens");
  cmd->callback([o]() { print_json(train::run_step_bench(*o), 2); });
}

}  // namespace lizard::cli
