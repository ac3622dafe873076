// metrics.phases: `lizard train` writes each step's split (StepTimer) into its metric lines,
// the phases add up to the step, and timing changes no number of the run.
#include <gtest/gtest.h>

#include <fstream>

#include "lizard/eval/random_tokens.h"
#include "lizard/io/json.h"
#include "lizard/train/config.h"
#include "lizard/train/stages.h"
#include "train_fixture.h"

namespace lizard {
namespace {

namespace fs = std::filesystem;

train::RunConfig pretrain(const fs::path& d, const std::string& out, bool phases) {
  // Accumulation 3 (global 6, micro 2): several micro-batch losses read back per step.
  const std::string yaml =
      "stage: pretrain\nseed: 2\ndevice: cpu\ndtype: f32\nloss_on: all\nout_dir: " +
      (d / out).string() +
      "\nmodel: {vocab_size: 61, hidden_size: 16, intermediate_size: 40, num_hidden_layers: 2,\n"
      "        num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8}\n"
      "data: {path: " + (d / "train.h5").string() +
      ", val_fraction: 0.0, seq_len: 13, micro_batch: 2, global_batch: 6}\n"
      "eval: {every: 0}\nschedule: {steps: 4, warmup: 0.0}\noptimizer: {lr: 1.0e-2}\n"
      "metrics: {phases: " + (phases ? "true" : "false") + "}\n";
  return train::load_config_string(yaml, "phase_metrics_test")[0];
}

std::vector<io::Json> train_lines(const fs::path& f) {
  std::ifstream in(f);
  std::vector<io::Json> out;
  for (std::string line; std::getline(in, line);) {
    io::Json j = io::parse_json(line, f.string());
    if (j.at("kind").as_string() == "train") out.push_back(j);
  }
  return out;
}

TEST(PhaseMetrics, StepLinesCarryPhasesThatSumToTheStepAndChangeNothing) {
  const fs::path d = test::fresh_temp_dir("lizard_phase_metrics_", "run");
  eval::write_random_token_dataset((d / "train.h5").string(), {61, 20, 30, 4});
  const train::TrainSummary plain = train::run_stage(pretrain(d, "plain", false), false);
  const train::TrainSummary timed = train::run_stage(pretrain(d, "timed", true), false);
  ASSERT_EQ(plain.losses.size(), 4u);
  EXPECT_EQ(plain.losses, timed.losses);  // bit for bit

  for (const io::Json& j : train_lines(d / "plain" / "metrics.jsonl"))
    EXPECT_FALSE(j.contains("ms_step"));
  const std::vector<io::Json> lines = train_lines(d / "timed" / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  for (const io::Json& j : lines) {
    const double total = j.at("ms_step").as_double();
    EXPECT_GT(total, 0.0);
    double sum = 0;
    for (const std::string& k : j.keys())
      if (k.rfind("ms_", 0) == 0 && k != "ms_step") sum += j.at(k).as_double();
    // The phases partition the step (host clock on the CPU): equal up to the JSON's digits.
    EXPECT_NEAR(sum, total, 1e-6 * total + 1e-6);
    for (const char* k : {"ms_forward", "ms_backward", "ms_optimizer"})
      EXPECT_TRUE(j.contains(k)) << k;
  }
  fs::remove_all(d);
}

}  // namespace
}  // namespace lizard
