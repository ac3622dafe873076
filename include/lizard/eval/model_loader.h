// One entry point from a directory on disk to a model ready for evaluation or generation, for
// every kind of model the project writes or reads:
//   - a Hugging Face directory (config.json + safetensors): the teacher; an export directory
//     (config.json with a `lizard` section) loads through io::load_hf_model the same way;
//   - a lizard checkpoint directory (step-N with DONE), a run's checkpoint root or a stage's
//     out_dir (its last complete checkpoint): the model is rebuilt from the checkpoint's own
//     config.yaml with train::build_model (teacher weights from its model.path, Lizard and LoRA
//     tensors from the checkpoint), so pretrain, distill and finetune checkpoints all load.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "lizard/core/device.h"
#include "lizard/core/dtype.h"
#include "lizard/nn/llama.h"

namespace lizard::eval {

struct InferenceModel {
  std::unique_ptr<nn::LlamaForCausalLM> model;
  bool student = false;    ///< some layer is linearized: evaluate the student path by default
  std::string kind;        ///< "hf" or "checkpoint"
  std::string dir;         ///< the directory actually read (the resolved checkpoint)
  std::string stage;       ///< checkpoint's stage (pretrain | distill | finetune); "" for hf
  std::string tokenizer;   ///< a tokenizer.json next to the weights (or the base model's); ""
  /// The Lizard window of the first linearized layer; for a model without one, the
  /// lizard.window of its checkpoint's config (the window its students use), else 0.
  int64_t window = 0;
  int64_t linearized_layers = 0;
};

/// Loads `path` (see the file comment) on `device` with parameters in `dtype`. InputError
/// naming the path when it is neither a Hugging Face directory nor holds a complete checkpoint.
InferenceModel load_model_for_inference(const std::string& path, Device device, DType dtype);

/// "auto" -> cuda:0 when a GPU is visible, else cpu; otherwise Device::parse.
Device inference_device(const std::string& name);

/// The usual inference dtype of a device: bf16 on CUDA, f32 on the CPU.
DType inference_dtype(Device device);

}  // namespace lizard::eval
