// `lizard train --config FILE.yaml [--set key=value ...] [--resume]`: runs every stage of the
// config in order (a `stages:` list chains distill then finetune).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/train/config.h"
#include "lizard/train/stages.h"

namespace lizard::cli {

namespace {
struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  bool resume = false;
  bool dry_run = false;
};

void run_train(const TrainArgs& a) {
  // Parsing and validation happen before any work: a bad key exits 2 at once.
  std::vector<train::RunConfig> stages = train::load_config(a.config, a.sets);
  for (size_t i = 0; i < stages.size(); ++i) {
    const train::RunConfig& cfg = stages[i];
    std::printf("=== stage %zu/%zu: %s (%s) -> %s\n", i + 1, stages.size(),
                (cfg.name.empty() ? cfg.stage : cfg.name).c_str(), cfg.stage.c_str(),
                cfg.out_dir.c_str());
    std::printf("%s\n", train::config_to_yaml(cfg).c_str());
    std::fflush(stdout);
    if (a.dry_run) continue;
    train::TrainSummary s = train::run_stage(cfg, a.resume);
    std::printf("stage %s done: steps %lld, final loss %.5f%s, checkpoint %s\n", cfg.stage.c_str(),
                static_cast<long long>(s.final_step), s.losses.empty() ? 0.0 : s.losses.back(),
                s.val_losses.empty() ? "" : (", val loss " + std::to_string(s.val_losses.back())).c_str(),
                s.last_checkpoint.c_str());
    std::fflush(stdout);
  }
}
}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Run the stages of a YAML config (pretrain, distill, finetune)");
  cmd->add_option("--config,-c", a->config, "YAML config file")->required();
  cmd->add_option("--set", a->sets, "Override a field: key=value (dotted keys, e.g. optimizer.lr=1e-4)");
  cmd->add_flag("--resume", a->resume, "Continue each stage from its last complete checkpoint");
  cmd->add_flag("--dry-run", a->dry_run, "Validate and print the resolved config, then stop");
  cmd->callback([a]() { run_train(*a); });
}

}  // namespace lizard::cli
