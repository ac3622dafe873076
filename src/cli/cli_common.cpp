#include "cli_common.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "lizard/core/error.h"
#include "lizard/io/json.h"

namespace lizard::cli {

int exit_code_of(const std::exception& e) {
  return dynamic_cast<const InputError*>(&e) ? 2 : 1;
}

CLI::Option* add_model_option(CLI::App& cmd, std::string& model) {
  return cmd
      .add_option("--model", model,
                  "Hugging Face / export directory, lizard checkpoint or stage out_dir")
      ->required();
}

CLI::Option* add_inference_device_option(CLI::App& cmd, std::string& device) {
  return cmd.add_option("--device", device, "auto, cpu, cuda or cuda:N");
}

CLI::Option* add_tokenizer_option(CLI::App& cmd, std::string& tokenizer, const std::string& scope) {
  return cmd.add_option("--tokenizer", tokenizer,
                        scope + "tokenizer.json (or its directory) when the model has none; "
                                "'demo' for the demo vocabulary");
}

CLI::Option* add_teacher_flag(CLI::App& cmd, bool& teacher, const std::string& verb) {
  return cmd.add_flag("--teacher", teacher,
                      verb + " a student model's teacher path (softmax everywhere)");
}

LoadedModel load_inference_model(const std::string& model_path, const std::string& device_name) {
  const Device dev = eval::inference_device(device_name);
  return {dev, eval::load_model_for_inference(model_path, dev, eval::inference_dtype(dev))};
}

void print_json(const io::Json& j, int indent) {
  std::printf("%s\n", j.dump(indent).c_str());
  std::fflush(stdout);
}

}  // namespace lizard::cli
