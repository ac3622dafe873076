// The stage runners: pretrain (every weight from random init), distill (stage 1: layer-wise
// attention-output MSE, teacher-forced, only Lizard parameters train) and finetune (stage 2:
// LoRA on a frozen base, next-token cross-entropy on the student). Each builds its model from
// the config, implements TrainTask and runs the Trainer.
#pragma once
#include <memory>
#include <string>

#include "lizard/dist/communicator.h"
#include "lizard/nn/llama.h"
#include "lizard/ops/lizard_config.h"
#include "lizard/train/config.h"
#include "lizard/train/step_cost.h"
#include "lizard/train/trainer.h"

namespace lizard::train {

/// The model a stage trains (or evaluates): architecture from model.path (HF directory) or
/// model.arch; attention per the stage (students get LizardAttention except softmax_layers);
/// LoRA for finetune; weights from model.path, then model.init_from (a checkpoint directory or
/// a run's checkpoints root: its last complete checkpoint) by name.
std::unique_ptr<nn::LlamaForCausalLM> build_model(const RunConfig& cfg, Device device, DType dtype);

/// ops::LizardConfig from the config's lizard section (preset resolution included).
ops::LizardConfig lizard_config_of(const RunConfig& cfg);

/// The stage's task (DistillTask for distill, the language-model task otherwise) around a
/// model from build_model: what run_stage hands to the Trainer (and `lizard bench step` too).
std::unique_ptr<TrainTask> make_stage_task(const RunConfig& cfg, Device device, DType dtype);

/// The cost-model shape (step_cost.h) of a stage of `cfg` on architecture `arch`.
StepShape step_shape_of(const RunConfig& cfg, const nn::LlamaConfig& arch, DType dtype);

/// Runs one stage to completion and returns the Trainer's summary. `resume` continues from
/// the last complete checkpoint under cfg.out_dir. `comm` (null = one process) makes the
/// stage data parallel: the model goes to comm->device() when it is a GPU, each rank reads its
/// shard of every global batch, gradients are all-reduced in buckets (dist section of cfg).
TrainSummary run_stage(const RunConfig& cfg, bool resume, int64_t stop_after = -1,
                       dist::Communicator* comm = nullptr);

}  // namespace lizard::train
