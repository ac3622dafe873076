// Pieces the `lizard` subcommands share (private to src/cli): the options every inference
// command spells the same way, loading a model for inference on the device the user named,
// printing a JSON result, and the exit code of an error.
#pragma once

#include <exception>
#include <string>

#include "lizard/core/device.h"
#include "lizard/eval/model_loader.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace lizard::io {
class Json;
}

namespace lizard::cli {

/// The process exit code of an error that ends a command: 2 for an InputError (bad input:
/// the user can fix the command), 1 for any other failure.
int exit_code_of(const std::exception& e);

/// Adds the required `--model` option of the inference commands (an HF / export directory, a
/// lizard checkpoint or a stage's out_dir) bound to `model`.
CLI::Option* add_model_option(CLI::App& cmd, std::string& model);

/// Adds the `--device` option of the inference commands ("auto" picks cuda:0 when a GPU is
/// visible) bound to `device`.
CLI::Option* add_inference_device_option(CLI::App& cmd, std::string& device);

/// Adds the `--tokenizer` option of the inference commands (a tokenizer.json or its directory
/// for a model without one; "demo" for the demo vocabulary); `scope` prefixes the help, e.g.
/// "mc: " where only some tasks read it.
CLI::Option* add_tokenizer_option(CLI::App& cmd, std::string& tokenizer, const std::string& scope = "");

/// Adds the `--teacher` flag: run a student model's teacher path (softmax in every layer);
/// `verb` says what the command does with it ("evaluate", "decode").
CLI::Option* add_teacher_flag(CLI::App& cmd, bool& teacher, const std::string& verb);

/// A model loaded for inference and the device it is on.
struct LoadedModel {
  Device device;
  eval::InferenceModel model;
};

/// Resolves `device_name` (eval::inference_device: "auto", cpu, cuda, cuda:N) and loads
/// `model_path` there in that device's usual inference dtype (bf16 on CUDA, f32 on the CPU).
/// Throws InputError naming the path or the device when either is not usable.
LoadedModel load_inference_model(const std::string& model_path, const std::string& device_name);

/// Prints `j` on one line of stdout (indent < 0) or pretty-printed with `indent`, and flushes
/// so a pipe sees the result at once.
void print_json(const io::Json& j, int indent = -1);

}  // namespace lizard::cli
