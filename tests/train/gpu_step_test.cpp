// The GPU side of a training step's host reads and clipping (skipped without a GPU):
//   - the trainer reads a step's micro-batch losses and the gradient norm in ONE transfer
//     (Trainer::read_step_scalars): the losses and pre-clip norms a CUDA run logs must be the
//     CPU run's;
//   - AdamW's multi-tensor launch applies the step's clip factor to every parameter: CUDA
//     parameters must follow the CPU optimizer through steps with different scales.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "lizard/eval/random_tokens.h"
#include "lizard/io/json.h"
#include "lizard/ops/elementwise.h"
#include "lizard/optim/adamw.h"
#include "lizard/train/config.h"
#include "lizard/train/stages.h"
#include "test_util.h"
#include "train_fixture.h"

namespace lizard {
namespace {

namespace fs = std::filesystem;

train::RunConfig tiny(const fs::path& d, const std::string& device) {
  // Accumulation 3 (global 6, micro 2): three losses and the norm come back in one read.
  const std::string yaml =
      "stage: pretrain\nseed: 4\ndevice: " + device + "\ndtype: f32\nloss_on: all\nout_dir: " +
      (d / device).string() +
      "\nmodel: {vocab_size: 61, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2,\n"
      "        num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}\n"
      "data: {path: " + (d / "train.h5").string() +
      ", val_fraction: 0.0, seq_len: 13, micro_batch: 2, global_batch: 6}\n"
      "eval: {every: 0}\nschedule: {steps: 3, warmup: 0.0}\noptimizer: {lr: 1.0e-3, clip: 0.5}\n"
      "metrics: {log_every: 1}\n";
  return train::load_config_string(yaml, "gpu_step_test")[0];
}

std::vector<double> logged(const fs::path& f, const std::string& key) {
  std::ifstream in(f);
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) {
    io::Json j = io::parse_json(line, f.string());
    if (j.at("kind").as_string() == "train") out.push_back(j.at(key).as_double());
  }
  return out;
}

TEST(GpuTrainStep, OneReadGivesTheLossesAndGradientNormOfTheCpuRun) {
  LZ_REQUIRE_GPU();
  const fs::path d = test::fresh_temp_dir("lizard_gpu_step_", "run");
  eval::write_random_token_dataset((d / "train.h5").string(), {61, 20, 30, 4});
  train::run_stage(tiny(d, "cpu"), false);
  train::run_stage(tiny(d, "cuda"), false);
  const auto loss_cpu = logged(d / "cpu" / "metrics.jsonl", "loss");
  const auto loss_gpu = logged(d / "cuda" / "metrics.jsonl", "loss");
  const auto norm_cpu = logged(d / "cpu" / "metrics.jsonl", "grad_norm");
  const auto norm_gpu = logged(d / "cuda" / "metrics.jsonl", "grad_norm");
  ASSERT_EQ(loss_cpu.size(), 3u);
  ASSERT_EQ(loss_gpu.size(), 3u);
  // Same init and batches in f32 on both devices; the GPU's GEMMs and reductions round in
  // another order (and may use TF32 for f32, ~1e-3 relative per product): 1e-2. A read that
  // mixed up the slots (the norm, ~1, taken for a loss of ~4.1, or a micro-batch lost) moves
  // the step's loss by >= 15% and the norm by far more.
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(loss_gpu[i], loss_cpu[i], 1e-2 * std::abs(loss_cpu[i])) << "step " << i + 1;
    EXPECT_NEAR(norm_gpu[i], norm_cpu[i], 1e-2 * std::abs(norm_cpu[i])) << "step " << i + 1;
  }
  EXPECT_GT(norm_cpu[0], 0.5) << "clip 0.5 must be active for the check to mean something";
  fs::remove_all(d);
}

TEST(GpuTrainStep, AdamWClipScaleReachesEveryParameter) {
  LZ_REQUIRE_GPU();
  // Three parameters of awkward sizes; gradients rescaled every step so the clip factor
  // (max_norm / norm) differs between steps: AdamW's moments carry each step's factor, so a
  // parameter updated with another factor (or an unclipped gradient) drifts off the CPU's.
  const std::vector<Shape> shapes{{7, 5}, {1}, {1031}};
  std::vector<autograd::Var> cpu, gpu;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor w = test::rand(shapes[i], 30 + i, DType::F32);
    cpu.emplace_back(w.clone(), true);
    gpu.emplace_back(w.to(Device::cuda()), true);
  }
  optim::AdamW oc(optim::make_param_groups(cpu, 0.1)), og(optim::make_param_groups(gpu, 0.1));
  for (int s = 0; s < 3; ++s) {
    const double factor = 3.0 + 2.0 * s;  // norms well above max_norm 0.5
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor g = ops::affine(test::rand(shapes[i], 100 + 10 * s + i, DType::F32), factor);
      cpu[i].set_grad(g.clone());
      gpu[i].set_grad(g.to(Device::cuda()));
    }
    const optim::StepResult rc = oc.step(1e-2, 0.5), rg = og.step(1e-2, 0.5);
    ASSERT_LT(rc.clip_scale, 1.0);
    EXPECT_NEAR(rg.grad_norm, rc.grad_norm, 1e-5 * rc.grad_norm) << "step " << s;
  }
  // f32 updates in another order of operations (fused kernel vs the CPU loop in double):
  // ~1e-6 relative per step on weights of order 1; a wrong clip factor moves them by ~1e-3.
  for (size_t i = 0; i < shapes.size(); ++i)
    EXPECT_LT(test::max_abs_diff(gpu[i].data().to(Device::cpu()), cpu[i].data()), 2e-5) << i;
}

}  // namespace
}  // namespace lizard
