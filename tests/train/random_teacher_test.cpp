// The recipe from a random-weight teacher (no checkpoint at hand: scripts/recipe_scale.sh at
// Llama-3-8B shape): a distill stage without model.path builds its teacher from model.* and
// the seed, and the finetune stage that follows (model.init_from the distill run) rebuilds the
// very same base weights and takes the distilled Lizard parameters. Checked on the CPU through
// the real stage runner, on the checkpoints each stage writes.
#include <gtest/gtest.h>

#include <map>

#include "lizard/eval/random_tokens.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/config.h"
#include "lizard/train/stages.h"
#include "train_fixture.h"

namespace lizard {
namespace {

namespace fs = std::filesystem;

std::map<std::string, std::vector<double>> by_name(const train::NamedTensors& ts) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& [n, t] : ts) out[n] = t.to_vector();
  return out;
}

std::vector<train::RunConfig> chain(const fs::path& d, int seed_finetune) {
  const std::string dir = d.string();
  // 3 layers so the layer loop is not trivially 1; GQA 4/2; random tokens of a 97-token
  // vocabulary (an odd size); micro-batch 2 of 24 tokens.
  const std::string yaml =
      "seed: 5\ndevice: cpu\ndtype: f32\nloss_on: all\n"
      "model: {vocab_size: 97, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 3,\n"
      "        num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8}\n"
      "data: {path: " + dir + "/train.h5, val_fraction: 0.0, seq_len: 24, micro_batch: 2,\n"
      "       global_batch: 2}\n"
      "eval: {every: 0}\n"
      "lizard: {feature_dim: 8, window: 4, sinks: 2, chunk: 16}\n"
      "checkpoint: {keep_last: 1}\n"
      "metrics: {file: ''}\n"
      "stages:\n"
      "  - {name: distill, stage: distill, out_dir: " + dir + "/distill,\n"
      "     schedule: {steps: 3, warmup: 0.0}, optimizer: {lr: 1.0e-2}}\n"
      "  - {name: finetune, stage: finetune, out_dir: " + dir + "/finetune, seed: " +
      std::to_string(seed_finetune) + ",\n"
      "     model: {init_from: " + dir + "/distill}, schedule: {steps: 2, warmup: 0.0},\n"
      "     optimizer: {lr: 1.0e-2}}\n";
  return train::load_config_string(yaml, "random_teacher_test");
}

TEST(RandomTeacher, DistillThenFinetuneShareTheTeacherAndTheDistilledLizardParameters) {
  const fs::path d = test::fresh_temp_dir("lizard_random_teacher_", "chain");
  eval::write_random_token_dataset((d / "train.h5").string(), {97, 16, 40, 1});
  const std::vector<train::RunConfig> stages = chain(d, 5);
  ASSERT_EQ(stages.size(), 2u);
  ASSERT_TRUE(stages[0].model.path.empty());  // no teacher checkpoint: built from model.*
  const train::TrainSummary s1 = train::run_stage(stages[0], false);
  EXPECT_EQ(s1.final_step, 3);
  const train::TrainSummary s2 = train::run_stage(stages[1], false);
  EXPECT_EQ(s2.final_step, 2);

  // Distill saved the Lizard parameters it trained; they moved away from their init.
  const auto distilled = by_name(train::load_checkpoint_model(s1.last_checkpoint));
  ASSERT_FALSE(distilled.empty());
  auto fresh = train::build_model(stages[0], Device::cpu(), DType::F32);
  int64_t moved = 0;
  for (const auto& [n, v] : distilled) moved += fresh->parameter(n).data().to_vector() != v;
  EXPECT_GT(moved, 0) << "distill did not change any Lizard parameter";

  // Finetune trains LoRA only (train_lizard_params false): its checkpoint's Lizard
  // parameters are the distilled ones, bit for bit.
  const auto finetuned = by_name(train::load_checkpoint_model(s2.last_checkpoint));
  for (const auto& [n, v] : distilled) {
    auto it = finetuned.find(n);
    ASSERT_NE(it, finetuned.end()) << n;
    EXPECT_EQ(it->second, v) << n;
  }

  // The finetune model's frozen base is the distill teacher: same names, same values.
  auto student = train::build_model(stages[1], Device::cpu(), DType::F32);
  int64_t base = 0;
  for (auto& [n, v] : fresh->named_parameters()) {
    if (distilled.count(n)) continue;  // Lizard parameters: compared above
    EXPECT_EQ(student->parameter(n).data().to_vector(), v.data().to_vector()) << n;
    ++base;
  }
  EXPECT_GT(base, 10);  // embeddings, norms, q/k/v/o, MLP of 3 layers, head

  // Control: another seed for the finetune stage gives another base (the comparison above
  // can fail).
  auto other = train::build_model(chain(d, 6)[1], Device::cpu(), DType::F32);
  EXPECT_NE(other->parameter("model.embed_tokens.weight").data().to_vector(),
            fresh->parameter("model.embed_tokens.weight").data().to_vector());
  fs::remove_all(d);
}

}  // namespace
}  // namespace lizard
