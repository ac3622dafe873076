// `lizard train --config FILE.yaml [--set key=value ...] [--resume] [--dry-run]`: runs every
// stage of the config in order (a `stages:` list chains distill then finetune).
//
// Under mpirun (`mpirun -np N lizard train ...`) every rank runs this same command: the
// launcher's environment makes a communicator (MPI on device: cpu, NCCL bootstrapped by MPI
// on GPUs, each rank on its node-local GPU), every stage runs data parallel, only rank 0
// prints. A failure on any rank prints "error (rank r/N): ..." and aborts the whole job
// (MPI_Abort) so no peer waits in a collective. Without mpirun nothing of MPI is touched.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "cli_common.h"
#include "lizard/cli/commands.h"
#include "lizard/core/error.h"
#include "lizard/dist/communicator.h"
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

// The communicator of this launch for the configs' device: one kind of device for every
// stage (a rank cannot switch between MPI and NCCL mid-run); the largest dist.timeout_s of
// the stages unless $LIZARD_DIST_TIMEOUT_S is set.
std::unique_ptr<dist::Communicator> communicator_for(const std::vector<train::RunConfig>& stages) {
  const Device dev = Device::parse(stages.front().device);
  const dist::LaunchEnv env = dist::detect_launch_env();
  if (env.distributed()) {
    for (const train::RunConfig& c : stages)
      LZ_INPUT_CHECK(Device::parse(c.device).is_cuda() == dev.is_cuda(), "device: stage '",
                     c.name.empty() ? c.stage : c.name, "' runs on '", c.device,
                     "' but the first stage on '", stages.front().device,
                     "'; under mpirun every stage must use the same kind of device");
  }
  dist::CommOptions opts;
  if (!std::getenv("LIZARD_DIST_TIMEOUT_S")) {
    opts.timeout_s = 0;
    for (const train::RunConfig& c : stages) opts.timeout_s = std::max(opts.timeout_s, c.dist.timeout_s);
  }
  return dist::make_communicator(dev, opts);
}

void run_stages(const TrainArgs& a, const std::vector<train::RunConfig>& stages,
                dist::Communicator& comm) {
  const bool lead = comm.rank() == 0;
  if (comm.world_size() > 1) {
    // Ranks launched with different files or --set would silently train different things.
    std::string all;
    for (const train::RunConfig& cfg : stages) all += train::config_to_yaml(cfg);
    char hash[32];
    std::snprintf(hash, sizeof(hash), "%016zx", std::hash<std::string>{}(all));
    comm.check_same_on_all_ranks("the resolved config (--config, --set)", hash);
    if (lead)
      std::printf("data parallel: %d ranks, backend %s\n", comm.world_size(), comm.backend());
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    const train::RunConfig& cfg = stages[i];
    if (lead) {
      std::printf("=== stage %zu/%zu: %s (%s) -> %s\n", i + 1, stages.size(),
                  (cfg.name.empty() ? cfg.stage : cfg.name).c_str(), cfg.stage.c_str(),
                  cfg.out_dir.c_str());
      std::printf("%s\n", train::config_to_yaml(cfg).c_str());
      std::fflush(stdout);
    }
    if (a.dry_run) continue;
    train::TrainSummary s = train::run_stage(cfg, a.resume, -1, &comm);
    if (lead) {
      std::printf("stage %s done: steps %lld, final loss %.5f%s, checkpoint %s\n",
                  cfg.stage.c_str(), static_cast<long long>(s.final_step),
                  s.losses.empty() ? 0.0 : s.losses.back(),
                  s.val_losses.empty() ? ""
                                       : (", val loss " + std::to_string(s.val_losses.back())).c_str(),
                  s.last_checkpoint.c_str());
      std::fflush(stdout);
    }
  }
}

void run_train(const TrainArgs& a) {
  // Parsing and validation happen before any work: a bad key exits 2 at once (on every rank).
  std::vector<train::RunConfig> stages = train::load_config(a.config, a.sets);
  LZ_INPUT_CHECK(!stages.empty(), a.config, ": no stage to run");
  std::unique_ptr<dist::Communicator> comm = communicator_for(stages);
  try {
    run_stages(a, stages, *comm);
  } catch (const std::exception& e) {
    if (comm->world_size() <= 1) throw;  // main prints it and picks the exit code
    const int code = exit_code_of(e);
    std::fprintf(stderr, "error (rank %d/%d): %s\n", comm->rank(), comm->world_size(), e.what());
    std::fflush(stderr);
    comm->abort_job(code);  // ends every rank; does not return
    throw;
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
