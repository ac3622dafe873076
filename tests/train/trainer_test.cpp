// The Trainer on a tiny CPU task (softmax regression of the next token from the current one):
// the loss falls, accumulation matches one big batch, a stopped-and-resumed run reproduces the
// straight run bit for bit, checkpoints are pruned and world-size changes are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "lizard/autograd/functions.h"
#include "lizard/core/error.h"
#include "lizard/optim/adamw.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/trainer.h"
#include "train_fixture.h"

namespace lizard::train {
namespace {

namespace fs = std::filesystem;
using autograd::Var;

constexpr int64_t kVocab = 16;

fs::path temp_dir(const std::string& name) {
  return test::fresh_temp_dir("lizard_trainer_", name);
}

/// Documents following t -> (3t + 1) mod 16 from varied starts: learnable by a bigram model.
std::shared_ptr<io::TokenDataset> make_data(const fs::path& dir) {
  const std::string p = (dir / "data.h5").string();
  io::TokenDatasetWriter w(p, {"bigram", kVocab});
  for (int d = 0; d < 60; ++d) {
    std::vector<int32_t> doc{static_cast<int32_t>(d % kVocab)};
    for (int j = 1; j < 3 + d % 11; ++j) doc.push_back((3 * doc.back() + 1) % kVocab);
    w.add(doc);
  }
  w.finish();
  return std::make_shared<io::TokenDataset>(io::TokenDataset::open(p));
}

/// logits = onehot(input) W + b; loss = sum over targets of logsumexp(logits) - logit[target].
class BigramTask : public TrainTask {
 public:
  BigramTask() {
    w_ = Var(Tensor::normal({kVocab, kVocab}, 0, 0.1, 5, 0), true);
    w_.set_name("bigram.w");
    b_ = Var(Tensor::zeros({kVocab}), true);
    b_.set_name("bigram.b");
  }
  std::vector<Var> parameters() override { return {w_, b_}; }
  LossResult loss(const Batch& batch, const StepContext& ctx) override {
    const int64_t n = batch.inputs.numel();
    Tensor x = Tensor::zeros({n, kVocab}), y = Tensor::zeros({n, kVocab}), valid = Tensor::zeros({n, 1});
    const int32_t* in = batch.inputs.data<int32_t>();
    const int32_t* tg = batch.targets.data<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      x.data<float>()[i * kVocab + in[i]] = 1;
      if (tg[i] >= 0) {
        y.data<float>()[i * kVocab + tg[i]] = 1;
        valid.data<float>()[i] = 1;
      }
    }
    Var logits = autograd::add(autograd::matmul(Var(x), w_), b_);            // [n, V]
    Var lse = autograd::log(autograd::sum(autograd::exp(logits), {1}, true));  // [n, 1]
    Var picked = autograd::sum(autograd::mul(logits, Var(y)), {1}, true);     // [n, 1]
    Var per = autograd::sub(autograd::mul(lse, Var(valid)), picked);
    Var total = autograd::sum(per);
    if (nan_at_step_ >= 0 && ctx.step >= nan_at_step_)
      total = autograd::mul(total, Var(Tensor::full({}, std::nan(""))));
    return {total, batch.num_targets};
  }
  Var w_, b_;
  int64_t nan_at_step_ = -1;
};

RunConfig tiny_config(const fs::path& out) {
  RunConfig c = load_config_string(
      "stage: pretrain\ndevice: cpu\ndtype: f32\n"
      "data: {seq_len: 8, micro_batch: 2, global_batch: 4}\n"
      "optimizer: {lr: 0.1, weight_decay: 0.01}\n"
      "schedule: {steps: 30}\n"
      "checkpoint: {every: 4, keep_last: 2}\n"
      "metrics: {file: metrics.jsonl}\n",
      "tiny")[0];
  c.out_dir = out.string();
  return c;
}

TEST(Trainer, LossFallsAndMetricsAreWritten) {
  const fs::path d = temp_dir("falls");
  auto data = make_data(d);
  RunConfig cfg = tiny_config(d / "run");
  cfg.schedule.steps = 80;
  LoaderOptions lo = test::single_rank_loader(cfg);
  DataLoader train(data, split_documents(data->num_docs(), 0).first, lo);
  BigramTask task;
  Trainer tr(cfg, task, train, nullptr, {}, test::quiet_trainer());
  TrainSummary s = tr.run();
  ASSERT_EQ(s.losses.size(), 80u);
  // Uniform guessing is log(16) = 2.77; the bigram rule is deterministic except at document
  // starts (ignored), so the loss must fall far below it.
  EXPECT_NEAR(s.losses.front(), std::log(16.0), 0.3);
  EXPECT_LT(s.losses.back(), 0.3);
  std::ifstream f(d / "run" / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(f, line)) {
    EXPECT_NE(line.find("\"kind\": \"train\""), std::string::npos) << line;
    EXPECT_NE(line.find("\"loss\": "), std::string::npos) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 80);
  EXPECT_TRUE(fs::exists(d / "run" / "config.yaml"));
  fs::remove_all(d);
}

TEST(Trainer, StoppedAndResumedRunIsBitIdentical) {
  const fs::path d = temp_dir("resume");
  auto data = make_data(d);
  auto run = [&](const fs::path& out, int64_t stop_after, bool resume) {
    RunConfig cfg = tiny_config(out);
    cfg.schedule.steps = 14;
    LoaderOptions lo = test::single_rank_loader(cfg);
    DataLoader train(data, split_documents(data->num_docs(), 0).first, lo);
    BigramTask task;  // fresh weights: a resume must restore them
    TrainerOptions o = test::quiet_trainer();
    o.stop_after = stop_after;
    o.resume = resume;
    Trainer tr(cfg, task, train, nullptr, {}, o);
    return tr.run();
  };
  const TrainSummary straight = run(d / "a", -1, false);
  const TrainSummary first = run(d / "b", 10, false);  // "killed" after step 10: last ckpt at 8
  EXPECT_EQ(first.final_step, 10);
  const TrainSummary second = run(d / "b", -1, true);
  EXPECT_EQ(second.start_step, 8);
  ASSERT_EQ(second.losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(second.losses[i], straight.losses[8 + i]) << i;
  // Final weights too.
  auto wa = load_checkpoint_model(checkpoint_path((d / "a" / "checkpoints").string(), 14));
  auto wb = load_checkpoint_model(checkpoint_path((d / "b" / "checkpoints").string(), 14));
  ASSERT_EQ(wa.size(), 2u);
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_EQ(wa[i].second.to_vector(), wb[i].second.to_vector());
  // keep_last 2: steps 12 and 14 remain; no temporary directory is left.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d / "a" / "checkpoints")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000012", "step-00000014"}));
  fs::remove_all(d);
}

TEST(Trainer, AccumulationMatchesOneBigBatch) {
  const fs::path d = temp_dir("accum");
  auto data = make_data(d);
  auto run = [&](int64_t micro) {
    RunConfig cfg = tiny_config(d / ("m" + std::to_string(micro)));
    cfg.data.micro_batch = micro;
    cfg.schedule.steps = 6;
    LoaderOptions lo{cfg.data.seq_len, micro, true, cfg.seed, true, 0, 1};
    DataLoader train(data, split_documents(data->num_docs(), 0).first, lo);
    BigramTask task;
    Trainer tr(cfg, task, train, nullptr, {}, test::quiet_trainer());
    return tr.run().losses;
  };
  const auto big = run(4), small = run(1);
  // Same sequences per step and the same normaliser: equal up to float summation order.
  for (size_t i = 0; i < big.size(); ++i) EXPECT_NEAR(small[i], big[i], 1e-5 * big[i]) << i;
  fs::remove_all(d);
}

TEST(Trainer, NonFiniteStepsAreSkippedThenStopTheRun) {
  const fs::path d = temp_dir("nan");
  auto data = make_data(d);
  RunConfig cfg = tiny_config(d / "run");
  LoaderOptions lo = test::single_rank_loader(cfg);
  DataLoader train(data, split_documents(data->num_docs(), 0).first, lo);
  BigramTask task;
  task.nan_at_step_ = 3;
  TrainerOptions o = test::quiet_trainer();
  o.max_consecutive_skips = 5;
  Trainer tr(cfg, task, train, nullptr, {}, o);
  try {
    tr.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

TEST(Trainer, ValidationUsesTheHeldOutSplit) {
  const fs::path d = temp_dir("val");
  auto data = make_data(d);
  RunConfig cfg = tiny_config(d / "run");
  cfg.eval.every = 40;
  cfg.schedule.steps = 80;
  auto [tr_docs, va_docs] = split_documents(data->num_docs(), 0.2);
  LoaderOptions lo = test::single_rank_loader(cfg);
  DataLoader train(data, tr_docs, lo);
  lo.shuffle = false;
  DataLoader val(data, va_docs, lo);
  BigramTask task;
  Trainer t(cfg, task, train, &val, {}, test::quiet_trainer());
  TrainSummary s = t.run();
  ASSERT_EQ(s.val_losses.size(), 2u);
  EXPECT_LT(s.val_losses.back(), s.val_losses.front());
  EXPECT_LT(s.val_losses.back(), 0.3);  // the rule generalises to unseen documents
  fs::remove_all(d);
}

TEST(Checkpoint, WorldSizeChangeAndIncompleteAreClearErrors) {
  const fs::path d = temp_dir("ckpt");
  Var w(Tensor::zeros({2, 2}), true);
  w.set_name("w");
  optim::AdamW opt({{{w}, 0.0}});
  TrainState st;
  st.step = 3;
  const std::string dir = save_checkpoint(d.string(), 3, {{"w", w.data()}}, opt, st, "x: 1\n", 0, 1, 0);
  EXPECT_EQ(find_last_checkpoint(d.string()).value(), dir);
  EXPECT_EQ(load_checkpoint_state(dir, opt, 0, 1).step, 3);
  try {
    load_checkpoint_state(dir, opt, 0, 2);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("written by 1 ranks, this run has 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_checkpoint_state(dir, opt, 1, 2), InputError);  // no rank-1 file
  // A directory without DONE (a crash mid-save) is neither found nor loadable.
  fs::create_directories(checkpoint_path(d.string(), 9));
  EXPECT_EQ(find_last_checkpoint(d.string()).value(), dir);
  EXPECT_THROW(load_checkpoint_state(checkpoint_path(d.string(), 9), opt, 0, 1), InputError);
  fs::remove_all(d);
}

}  // namespace
}  // namespace lizard::train
