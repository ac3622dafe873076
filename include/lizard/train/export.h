// Export of a training checkpoint (DESIGN.md section 5): the checkpoint's model is rebuilt
// exactly as its stage built it (base weights from model.path, then model.init_from, then the
// checkpoint's own tensors: Lizard parameters, LoRA adapters, or everything for pretraining)
// and written as a Hugging Face directory by io::export_model.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lizard/io/export.h"
#include "lizard/nn/llama.h"
#include "lizard/train/config.h"

namespace lizard::train {

/// The complete checkpoint directory that `path` names: `path` itself when it holds DONE, else
/// the newest complete checkpoint under `path` or `path`/checkpoints (a run's out_dir).
/// InputError naming the path otherwise (an interrupted save has no DONE).
std::string resolve_checkpoint_dir(const std::string& path);

/// Rebuilds the model of checkpoint directory `dir` (resolved as above) on the CPU in f32: its
/// saved config.yaml with `overrides` ("a.b=value", e.g. model.path=DIR when the base model has
/// moved) applied, build_model, then every tensor of its model.h5 (names and shapes checked).
/// `cfg_out`, when given, receives the config.
std::unique_ptr<nn::LlamaForCausalLM> rebuild_checkpoint_model(
    const std::string& dir, const std::vector<std::string>& overrides = {},
    RunConfig* cfg_out = nullptr);

/// Rebuilds `checkpoint` and exports it to `out_dir` (io::export_model). The base model's
/// config.json and tokenizer files are carried over when model.path is a Hugging Face
/// directory (opt.base_model_dir, when set, wins). Nothing is written at `out_dir` on failure.
void export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                       io::ExportOptions opt, const std::vector<std::string>& overrides = {});

/// Writes a complete checkpoint directory `dir` (model.h5 with every parameter, config.yaml,
/// DONE; no optimizer state, so it exports but does not resume) of the model `cfg` builds, with
/// its parameters drawn at random from `seed`: base weights as init_random (kept as loaded
/// when cfg has a model.path), and the Lizard
/// parameters and LoRA adapters perturbed far from their initialisation (feature maps, gate
/// weights and bias, sinks, alpha, both LoRA factors) so that an export round trip or a second
/// implementation is tested on every term of the maths. For tests and the HF export check.
std::string write_random_checkpoint(const RunConfig& cfg, const std::string& dir, uint64_t seed);

}  // namespace lizard::train
