// The non-finite guard (issue #9): a step whose loss or gradients are not finite is skipped
// (weights untouched) and counted; max_nonfinite_steps in a row stop the run with a message
// naming the steps, and with debug_nonfinite (or LIZARD_DEBUG_NONFINITE=1) the first module
// whose output went non-finite, found by re-running the forward with a check after every
// module of the Llama model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>

#include "lizard/autograd/functions.h"
#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/train/stages.h"
#include "lizard/train/trainer.h"
#include "train_fixture.h"

namespace lizard::train {
namespace {

namespace fs = std::filesystem;
using autograd::Var;

fs::path temp_dir(const std::string& name) {
  return test::fresh_temp_dir("lizard_nonfinite_", name);
}

std::string make_data(const fs::path& dir) {
  const std::string p = (dir / "data.h5").string();
  io::TokenDatasetWriter w(p, {"nonfinite", 32});
  for (int d = 0; d < 40; ++d) {
    std::vector<int32_t> doc;
    for (int j = 0; j < 6 + d % 7; ++j) doc.push_back((d * 7 + j * 5) % 32);
    w.add(doc);
  }
  w.finish();
  return p;
}

/// loss = count * sum((w - 1)^2), made NaN at the steps in [nan_from, nan_to).
class QuadraticTask : public TrainTask {
 public:
  QuadraticTask() {
    w_ = Var(Tensor::from_data<float>({0.f, 2.f, -1.f}, {3}), true);
    w_.set_name("w");
  }
  std::vector<Var> parameters() override { return {w_}; }
  LossResult loss(const Batch& b, const StepContext& ctx) override {
    Var one(Tensor::full({3}, 1.0));
    Var diff = autograd::sub(w_, one);
    Var l = autograd::scale(autograd::sum(autograd::mul(diff, diff)), double(b.num_targets));
    if (nan_from_ >= 0 && ctx.step >= nan_from_ && ctx.step < nan_to_)
      l = autograd::mul(l, Var(Tensor::full({}, std::numeric_limits<double>::quiet_NaN())));
    return {l, b.num_targets};
  }
  Var w_;
  int64_t nan_from_ = -1, nan_to_ = std::numeric_limits<int64_t>::max();
};

RunConfig quadratic_config(const fs::path& out, int64_t steps) {
  RunConfig c = load_config_string(
      "stage: pretrain\ndevice: cpu\ndtype: f32\n"
      "data: {seq_len: 8, micro_batch: 2, global_batch: 4}\n"
      "optimizer: {lr: 0.1}\nschedule: {name: constant, warmup: 0}\n"
      "max_nonfinite_steps: 3\n",
      "nonfinite test")[0];
  c.schedule.steps = steps;
  c.out_dir = out.string();
  return c;
}

std::string run_error(Trainer& tr) {
  return test::thrown_message([&] { tr.run(); }, "the run did not stop");
}

TEST(NonFinite, DefaultStreakIsFive) {
  EXPECT_EQ(RunConfig().max_nonfinite_steps, 5);
  EXPECT_FALSE(RunConfig().debug_nonfinite);
  const RunConfig c = load_config_string("max_nonfinite_steps: 2\ndebug_nonfinite: true\n", "t")[0];
  EXPECT_EQ(c.max_nonfinite_steps, 2);
  EXPECT_TRUE(c.debug_nonfinite);
  EXPECT_THROW(load_config_string("max_nonfinite_steps: 0\n", "t"), InputError);
}

TEST(NonFinite, ShortStreakIsSkippedCountedAndLeavesTheWeights) {
  const fs::path d = temp_dir("short");
  auto data = std::make_shared<io::TokenDataset>(io::TokenDataset::open(make_data(d)));
  RunConfig cfg = quadratic_config(d / "run", 8);
  LoaderOptions lo = test::single_rank_loader(cfg);
  // Two NaN steps (indices 3 and 4) are below the limit of 3: the run finishes.
  DataLoader l1(data, split_documents(data->num_docs(), 0).first, lo);
  QuadraticTask nan_task;
  nan_task.nan_from_ = 3;
  nan_task.nan_to_ = 5;
  Trainer t1(cfg, nan_task, l1, nullptr, {}, test::quiet_trainer());
  const TrainSummary s = t1.run();
  EXPECT_EQ(s.final_step, 8);
  EXPECT_EQ(s.skipped_steps, 2);
  ASSERT_EQ(s.losses.size(), 8u);
  EXPECT_TRUE(std::isnan(s.losses[3]) && std::isnan(s.losses[4]));
  // A skipped step changes nothing: the weights equal those of a clean run of 6 steps (Adam's
  // step count, moments and the constant LR see only the applied steps).
  DataLoader l2(data, split_documents(data->num_docs(), 0).first, lo);
  QuadraticTask clean;
  Trainer t2(quadratic_config(d / "clean", 6), clean, l2, nullptr, {}, test::quiet_trainer());
  t2.run();
  const auto a = nan_task.w_.data().to_vector(), b = clean.w_.data().to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "element " << i;
  // The metrics file marks the two skipped steps.
  std::ifstream f(d / "run" / "metrics.jsonl");
  std::string line;
  int skipped_lines = 0;
  while (std::getline(f, line)) skipped_lines += line.find("\"skipped\": 1") != std::string::npos;
  EXPECT_EQ(skipped_lines, 2);
  fs::remove_all(d);
}

TEST(NonFinite, LongStreakStopsNamingTheSteps) {
  const fs::path d = temp_dir("long");
  auto data = std::make_shared<io::TokenDataset>(io::TokenDataset::open(make_data(d)));
  RunConfig cfg = quadratic_config(d / "run", 20);
  LoaderOptions lo = test::single_rank_loader(cfg);
  DataLoader l(data, split_documents(data->num_docs(), 0).first, lo);
  QuadraticTask task;
  task.nan_from_ = 4;  // steps 5, 6, 7 (1-based, as printed) are non-finite
  Trainer tr(cfg, task, l, nullptr, {}, test::quiet_trainer());
  const std::string msg = run_error(tr);
  EXPECT_NE(msg.find("at 3 consecutive steps (steps 5 to 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_nonfinite_steps 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("debug_nonfinite"), std::string::npos) << msg;  // the hint
  fs::remove_all(d);
}

/// A pretrain run of a 3-layer Llama whose layer-1 MLP output projection was loaded as NaN
/// (model.init_from a checkpoint holding only that tensor).
RunConfig corrupt_llama_run(const fs::path& d) {
  const fs::path ck = d / "corrupt";
  fs::create_directories(ck);
  {
    io::H5File f = io::H5File::create((ck / "model.h5").string());
    f.write("model.layers.1.mlp.down_proj.weight",
            Tensor::full({16, 24}, std::numeric_limits<double>::quiet_NaN()));
    f.close();
  }
  std::ofstream(ck / "DONE") << "test\n";
  RunConfig c = load_config_string(
      "stage: pretrain\ndevice: cpu\ndtype: f32\nmax_nonfinite_steps: 2\n"
      "model: {vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 3,\n"
      "        num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8}\n"
      "data: {seq_len: 8, micro_batch: 2, global_batch: 2}\nschedule: {steps: 10}\n",
      "corrupt llama")[0];
  c.out_dir = (d / "run").string();
  c.data.path = make_data(d);
  c.model.init_from = ck.string();
  return c;
}

std::string stage_error(const RunConfig& c) {
  return test::thrown_message([&] { run_stage(c, false); }, "the run did not stop");
}

TEST(NonFinite, DebugModeNamesTheFirstNonFiniteModule) {
  const fs::path d = temp_dir("llama");
  RunConfig c = corrupt_llama_run(d);
  const std::string plain = stage_error(c);
  EXPECT_NE(plain.find("steps 1 to 2"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("model.layers.1.mlp"), std::string::npos) << plain;

  c.debug_nonfinite = true;
  const std::string debug = stage_error(c);
  EXPECT_NE(debug.find("first module with a non-finite output: 'model.layers.1.mlp'"),
            std::string::npos) << debug;

  // The environment switch does the same without touching the config.
  c.debug_nonfinite = false;
  ::setenv("LIZARD_DEBUG_NONFINITE", "1", 1);
  const std::string env = stage_error(c);
  ::unsetenv("LIZARD_DEBUG_NONFINITE");
  EXPECT_NE(env.find("'model.layers.1.mlp'"), std::string::npos) << env;
  fs::remove_all(d);
}

}  // namespace
}  // namespace lizard::train
