// The config schema: defaults are the paper's recipe, composition, overrides, presets and
// error messages that name the key and the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lizard/core/error.h"
#include "lizard/train/config.h"
#include "train_fixture.h"

namespace lizard::train {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  return test::fresh_temp_dir("lizard_cfg_", name);
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

/// The message of the InputError thrown by f (fails the test when none is thrown).
template <class F>
std::string input_error(F&& f) {
  return test::thrown_message<InputError>(f, "no InputError thrown");
}

TEST(Config, DefaultsAreThePaperRecipe) {
  auto cfgs = load_config_string("{}", "empty");
  ASSERT_EQ(cfgs.size(), 1u);
  const RunConfig& c = cfgs[0];
  EXPECT_EQ(c.stage, "distill");
  EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.9, 0.99}));
  EXPECT_EQ(c.optimizer.eps, 1e-8);
  EXPECT_EQ(c.optimizer.weight_decay, 0.0);
  EXPECT_EQ(c.optimizer.clip, 1.0);
  EXPECT_EQ(c.optimizer.lr, 1e-3);
  EXPECT_EQ(c.schedule.name, "cosine");
  EXPECT_EQ(c.schedule.warmup, 0.1);
  EXPECT_EQ(c.schedule.floor, 0.1);
  EXPECT_EQ(c.data.global_batch, 8);
  EXPECT_EQ(c.data.seq_len, 2048);
  EXPECT_EQ(c.lizard.feature_dim, 128);
  EXPECT_EQ(c.lizard.window, 128);
  EXPECT_EQ(c.lizard.sinks, 4);
  EXPECT_EQ(c.lizard.gate, "shared");
  EXPECT_FALSE(c.lizard.window_rope);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_EQ(c.lora.alpha, 16);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"q", "k", "v"}));
  EXPECT_EQ(c.loss_on, "response");
  // Stage 2 peaks at 5e-4 unless set.
  EXPECT_EQ(load_config_string("stage: finetune", "s")[0].optimizer.lr, 5e-4);
  EXPECT_EQ(load_config_string("stage: finetune\noptimizer: {lr: 2e-4}", "s")[0].optimizer.lr, 2e-4);
}

TEST(Config, PresetPlusFillsOnlyUnsetFields) {
  auto c = load_config_string("lizard: {preset: plus}", "p")[0];
  EXPECT_TRUE(c.lizard.window_rope);
  EXPECT_EQ(c.lizard.gate, "per_head");
  EXPECT_EQ(c.lizard.gate_bias_init, 3.0);
  c = load_config_string("lizard: {preset: plus, gate: shared, window_rope: false}", "p")[0];
  EXPECT_FALSE(c.lizard.window_rope);
  EXPECT_EQ(c.lizard.gate, "shared");
  EXPECT_EQ(c.lizard.gate_bias_init, 3.0);
}

TEST(Config, IncludeStagesAndOverrides) {
  const fs::path d = temp_dir("inc");
  fs::create_directories(d / "models");
  write(d / "models" / "tiny.yaml", "model:\n  hidden_size: 64\n  num_hidden_layers: 2\nseed: 5\n");
  write(d / "run.yaml",
        "include: models/tiny.yaml\n"
        "seed: 7\n"
        "data: {path: data.h5, seq_len: 128}\n"
        "stages:\n"
        "  - {stage: distill, schedule: {steps: 10}}\n"
        "  - stage: finetune\n"
        "    model: {init_from: previous}\n"
        "    lora: {r: 4, targets: [q, v]}\n");
  auto cfgs = load_config((d / "run.yaml").string(), {"data.seq_len=256", "stages.1.lora.r=16"});
  ASSERT_EQ(cfgs.size(), 2u);
  EXPECT_EQ(cfgs[0].model.arch.hidden_size, 64);  // from the include
  EXPECT_EQ(cfgs[0].seed, 7u);                     // the including file wins
  EXPECT_EQ(cfgs[0].stage, "distill");
  EXPECT_EQ(cfgs[0].schedule.steps, 10);
  EXPECT_EQ(cfgs[1].stage, "finetune");
  EXPECT_EQ(cfgs[1].name, "finetune");
  EXPECT_EQ(cfgs[1].schedule.steps, 0);  // stage entries do not leak into each other
  EXPECT_EQ(cfgs[1].lora.targets, (std::vector<std::string>{"q", "v"}));
  EXPECT_EQ(cfgs[0].data.seq_len, 256);  // --set applies to every stage
  EXPECT_EQ(cfgs[1].data.seq_len, 256);
  EXPECT_EQ(cfgs[1].lora.r, 16);         // stages.N targets one
  EXPECT_EQ(cfgs[0].lora.r, 8);
  fs::remove_all(d);
}

TEST(Config, ErrorsNameTheKeyAndTheFile) {
  const fs::path d = temp_dir("err");
  write(d / "base.yaml", "optimizer:\n  lrr: 0.1\n");
  write(d / "top.yaml", "include: base.yaml\n");
  std::string m = input_error([&] { load_config((d / "top.yaml").string()); });
  EXPECT_NE(m.find("optimizer.lrr"), std::string::npos) << m;
  EXPECT_NE(m.find("base.yaml"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean 'optimizer.lr'"), std::string::npos) << m;

  m = input_error([] { load_config_string("data: {seq_len: 1.5}", "a.yaml"); });
  EXPECT_NE(m.find("data.seq_len"), std::string::npos) << m;
  EXPECT_NE(m.find("integer"), std::string::npos) << m;
  EXPECT_NE(m.find("a.yaml"), std::string::npos) << m;
  m = input_error([] { load_config_string("schedule: {warmup: 1.5}", "b.yaml"); });
  EXPECT_NE(m.find("schedule.warmup"), std::string::npos) << m;
  m = input_error([] { load_config_string("schedule: {name: cosin}", "c.yaml"); });
  EXPECT_NE(m.find("cosine|linear|constant"), std::string::npos) << m;
  m = input_error([] { load_config_string("recompute: maybe", "d.yaml"); });
  EXPECT_NE(m.find("recompute"), std::string::npos) << m;
  m = input_error([] { load_config_string("lora: {targets: [q, x]}", "e.yaml"); });
  EXPECT_NE(m.find("lora.targets"), std::string::npos) << m;
  m = input_error([] { load_config_string("optimizer: {betas: [0.9]}", "f.yaml"); });
  EXPECT_NE(m.find("optimizer.betas"), std::string::npos) << m;
  m = input_error([] { load_config_string("data: {global_batch: 6, micro_batch: 4}", "g.yaml"); });
  EXPECT_NE(m.find("data.global_batch"), std::string::npos) << m;
  m = input_error([] { load_config_string("{}", "h.yaml", {"optimizer.lr=abc"}); });
  EXPECT_NE(m.find("--set"), std::string::npos) << m;
  m = input_error([] { load_config_string("{}", "h.yaml", {"nope=1"}); });
  EXPECT_NE(m.find("nope"), std::string::npos) << m;
  m = input_error([] { load_config_string("device: tpu", "i.yaml"); });
  EXPECT_NE(m.find("device"), std::string::npos) << m;
  m = input_error([] { load_config("/nonexistent/x.yaml"); });
  EXPECT_NE(m.find("/nonexistent/x.yaml"), std::string::npos) << m;
  m = input_error([] { load_config_string("a: [1, 2", "j.yaml"); });
  EXPECT_NE(m.find("j.yaml"), std::string::npos) << m;
  fs::remove_all(d);
}

TEST(Config, YamlRoundTrip) {
  RunConfig c = load_config_string(
      "stage: finetune\nseed: 3\noptimizer: {lr: 0.000123456789, betas: [0.8, 0.95]}\n"
      "lizard: {softmax_layers: [0, 5], preset: plus, gate: shared}\n",
      "r")[0];
  const std::string y = config_to_yaml(c);
  RunConfig d = load_config_string(y, "roundtrip")[0];
  EXPECT_EQ(config_to_yaml(d), y);
  EXPECT_EQ(d.optimizer.lr, 0.000123456789);
  EXPECT_EQ(d.lizard.softmax_layers, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(d.lizard.gate, "shared");
  EXPECT_EQ(d.seed, 3u);
}

TEST(Config, SchemaDocumentsEveryField) {
  auto schema = config_schema();
  EXPECT_GT(schema.size(), 50u);
  for (const auto& f : schema) {
    EXPECT_FALSE(f.doc.empty()) << f.key;
    EXPECT_FALSE(f.default_value.empty()) << f.key;
  }
}

TEST(Config, SparseEmbeddingGradIsOffByDefaultAndValidated) {
  EXPECT_FALSE(load_config_string("{}", "a")[0].dist.sparse_embedding_grad);
  EXPECT_TRUE(load_config_string("dist: {sparse_embedding_grad: true}", "b")[0].dist.sparse_embedding_grad);
  std::string m = input_error([] { load_config_string("dist: {sparse_embeding_grad: false}", "c.yaml"); });
  EXPECT_NE(m.find("did you mean 'dist.sparse_embedding_grad'"), std::string::npos) << m;
  m = input_error([] { load_config_string("dist: {sparse_embedding_grad: often}", "d.yaml"); });
  EXPECT_NE(m.find("dist.sparse_embedding_grad"), std::string::npos) << m;
}

TEST(Config, GradAccumulation) {
  RunConfig c;
  c.data.global_batch = 8;
  c.data.micro_batch = 2;
  EXPECT_EQ(grad_accum_steps(c, 1), 4);
  EXPECT_EQ(grad_accum_steps(c, 4), 1);
  EXPECT_THROW(grad_accum_steps(c, 3), InputError);
}

}  // namespace
}  // namespace lizard::train

namespace lizard::train {
namespace {

// Every shipped stage config loads (a typo in configs/ fails here, not in a user's run).
TEST(Config, ShippedConfigsLoad) {
  const std::filesystem::path dir = std::filesystem::path(LIZARD_SOURCE_DIR) / "configs";
  for (const char* name : {"distill.yaml", "finetune.yaml", "recipe.yaml"}) {
    SCOPED_TRACE(name);
    auto cfgs = load_config((dir / name).string());
    ASSERT_FALSE(cfgs.empty());
    EXPECT_EQ(cfgs[0].model.path, "models/Llama-3.2-1B");
  }
  auto recipe = load_config((dir / "recipe.yaml").string());
  ASSERT_EQ(recipe.size(), 2u);
  EXPECT_EQ(recipe[0].stage, "distill");
  EXPECT_EQ(recipe[1].stage, "finetune");
  EXPECT_EQ(recipe[1].optimizer.lr, 5e-4);
  EXPECT_EQ(recipe[1].data.val_fraction, 0.01);
}

}  // namespace
}  // namespace lizard::train
