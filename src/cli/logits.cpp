// `lizard logits --model DIR --tokens "1 2 3" --output FILE`: the model's logits for one token
// sequence, written as safetensors ("input_ids" i64 [1, T], "logits" f32 [1, T, V]), so that
// another implementation (scripts/hf/check_export.py: transformers) can be compared with ours.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>

#include "lizard/cli/commands.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/device.h"
#include "lizard/autograd/variable.h"
#include "lizard/io/hf_model.h"
#include "lizard/io/safetensors.h"

namespace lizard::cli {

namespace {

struct LogitsArgs {
  std::string model, tokens, output, device = "cpu", dtype = "f32";
  bool teacher = false;
};

void run_logits(const LogitsArgs& a) {
  std::vector<int64_t> ids;
  {
    std::istringstream is(a.tokens);
    std::string tok;
    while (is >> tok) {
      try {
        ids.push_back(std::stoll(tok));
      } catch (const std::exception&) {
        throw InputError(str_cat("--tokens: '", tok, "' is not a token id"));
      }
    }
  }
  LZ_INPUT_CHECK(!ids.empty(), "--tokens: no token ids given");
  io::LoadOptions lo;
  lo.device = Device::parse(a.device);
  lo.dtype = dtype_from_name(a.dtype);
  auto model = io::load_hf_model(a.model, lo);
  const int64_t V = model->config().vocab_size, T = static_cast<int64_t>(ids.size());
  for (int64_t t : ids)
    LZ_INPUT_CHECK(t >= 0 && t < V, "--tokens: id ", t, " outside the vocabulary of ", V);
  std::vector<int32_t> ids32(ids.begin(), ids.end());
  const Tensor in = Tensor::from_data<int32_t>(ids32, {1, T}).to(lo.device);
  Tensor logits;
  {
    autograd::NoGradGuard ng;
    nn::ForwardOptions fo;
    fo.teacher = a.teacher;  // the student path (the model as exported) unless --teacher
    logits = model->forward(in, fo).data().to(Device::cpu(), DType::F32);
  }
  io::write_safetensors(a.output, {{"input_ids", Tensor::from_data<int64_t>(ids, {1, T})},
                                   {"logits", logits}},
                        {{"format", "pt"}, {"model", a.model}});
  std::printf("wrote logits [1, %lld, %lld] of %s to %s\n", static_cast<long long>(T),
              static_cast<long long>(V), a.model.c_str(), a.output.c_str());
}

}  // namespace

void register_logits(CLI::App& app) {
  auto a = std::make_shared<LogitsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "logits", "Write a model's logits for one token sequence (safetensors) for comparisons");
  cmd->add_option("--model", a->model, "Hugging Face or lizard export directory")->required();
  cmd->add_option("--tokens", a->tokens, "token ids, whitespace separated")->required();
  cmd->add_option("--output", a->output, "safetensors file to write")->required();
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N");
  cmd->add_option("--dtype", a->dtype, "parameter dtype: f32 or bf16");
  cmd->add_flag("--teacher", a->teacher, "softmax attention in every layer (the original model)");
  cmd->callback([a]() { run_logits(*a); });
}

}  // namespace lizard::cli
