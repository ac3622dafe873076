// `lizard make-random-checkpoint --config X.yaml --output DIR`: a complete checkpoint of the
// model X.yaml's stage builds, every parameter random (train::write_random_checkpoint), so the
// export and its Hugging Face implementation can be checked without training
// (scripts/hf/check_export.sh).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/cli/commands.h"
#include "lizard/core/error.h"
#include "lizard/train/export.h"

namespace lizard::cli {

void register_random_checkpoint(CLI::App& app) {
  struct Args {
    std::string config, output;
    std::vector<std::string> overrides;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "make-random-checkpoint", "Write a checkpoint of a config's model with random parameters (export tests)");
  cmd->add_option("--config", a->config, "stage YAML (one stage, or the first of a stages: list)")->required();
  cmd->add_option("--output", a->output, "checkpoint directory to write")->required();
  cmd->add_option("--set", a->overrides, "config override a.b=value (repeatable)");
  cmd->add_option("--seed", a->seed, "random seed");
  cmd->callback([a]() {
    const auto cfgs = train::load_config(a->config, a->overrides);
    LZ_INPUT_CHECK(!cfgs.empty(), a->config, ": no stage");
    train::write_random_checkpoint(cfgs[0], a->output, a->seed);
    std::printf("wrote random %s checkpoint %s\n", cfgs[0].stage.c_str(), a->output.c_str());
  });
}

}  // namespace lizard::cli
