// Loading and saving whole Llama-family models from/to Hugging Face checkpoint directories.
#pragma once
#include <memory>
#include <string>

#include "lizard/nn/llama.h"

namespace lizard::io {

/// Options of load_hf_model.
struct LoadOptions {
  Device device = Device::cpu();
  DType dtype = DType::F32;        ///< parameter dtype (converted on load)
  nn::AttentionFactory attention;  ///< student attention per layer (default: softmax)
  nn::LoraSpec lora;               ///< LoRA adapters to add (not in the checkpoint)
};

/// Reads DIR/config.json and DIR's safetensors (single or sharded) into a new model.
/// Every tensor the model has and the checkpoint lacks (except LoRA adapters and Lizard
/// parameters, which start from their initialisation), every unexpected and every mis-shaped
/// tensor is named in one InputError. A lizard export (io/export.h) loads as the student it
/// was: Lizard attention per its config.json "lizard" section (every Lizard parameter must be
/// present) unless opt.attention is set, and its adapter_model.safetensors applied unmerged
/// when it has one (unless opt.lora is set).
std::unique_ptr<nn::LlamaForCausalLM> load_hf_model(const std::string& dir,
                                                    const LoadOptions& opt = {});

/// Copies the checkpoint's tensors into `model` by name (same rules as load_hf_model).
/// Names present in the checkpoint but not in the model are an error unless allow_unexpected.
void load_weights(nn::Module& model, const std::string& path, bool allow_unexpected = false);

/// True for parameters that are not part of a Hugging Face base checkpoint (LoRA adapters,
/// Lizard attention parameters).
bool is_added_parameter(const std::string& name);

}  // namespace lizard::io
