// `lizard generate --model DIR --prompt TEXT`: streams the continuation of a prompt to stdout
// as tokens come, decoded with eval::RecurrentStepModel (constant memory for Lizard layers, a
// KV cache for softmax layers). Greedy by default; --temperature and --top-p sample with the
// Philox stream of --seed, so a run is reproducible. Timing and memory go to stderr.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli_common.h"
#include "lizard/cli/commands.h"
#include "lizard/eval/model_loader.h"
#include "lizard/eval/recurrent_decoder.h"
#include "lizard/eval/text_codec.h"

namespace lizard::cli {

namespace {

struct GenerateArgs {
  std::string model, prompt, device = "auto", tokenizer;
  int64_t max_new_tokens = 64;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  bool teacher = false, no_bos = false, ignore_eos = false;
};

void run_generate(const GenerateArgs& a) {
  // Bad sampling options fail before any model is loaded or text printed.
  LZ_INPUT_CHECK(a.max_new_tokens >= 0, "--max-new-tokens: must be >= 0, got ", a.max_new_tokens);
  LZ_INPUT_CHECK(a.temperature >= 0.0 && std::isfinite(a.temperature),
                 "--temperature: must be finite and >= 0, got ", a.temperature);
  LZ_INPUT_CHECK(a.top_p > 0.0 && a.top_p <= 1.0, "--top-p: must be in (0, 1], got ", a.top_p);
  LoadedModel loaded = load_inference_model(a.model, a.device);
  const Device dev = loaded.device;
  eval::InferenceModel& m = loaded.model;
  const eval::TextCodec codec = eval::text_codec_for(m, a.tokenizer);
  std::vector<int32_t> prompt;
  if (!a.no_bos && codec.bos >= 0) prompt.push_back(codec.bos);
  for (int32_t id : codec.encode(a.prompt)) prompt.push_back(id);
  LZ_INPUT_CHECK(!prompt.empty(), "--prompt: encodes to no token (give text or drop --no-bos)");
  const int64_t V = m.model->config().vocab_size;
  for (int32_t id : prompt)
    LZ_INPUT_CHECK(id >= 0 && id < V, "--prompt: token id ", id, " (tokenizer ", codec.name,
                   ") is outside the model's vocabulary of ", V);
  const bool teacher = a.teacher || !m.student;
  std::fprintf(stderr, "[generate] %s (%s, %lld linearized layers, %s path, %s), prompt %zu tokens\n",
               a.model.c_str(), m.kind.c_str(), static_cast<long long>(m.linearized_layers),
               teacher ? "teacher" : "student", dev.str().c_str(), prompt.size());

  eval::RecurrentStepModel decoder(*m.model, teacher);
  eval::SamplingOptions so;
  so.max_new_tokens = a.max_new_tokens;
  so.temperature = a.temperature;
  so.top_p = a.top_p;
  so.seed = a.seed;
  so.eos = a.ignore_eos ? -1 : codec.eos;
  // Stream: decode everything generated so far and print what extends the printed text, so
  // tokens that end inside a multi-byte character wait for the rest of it.
  std::vector<int32_t> out;
  std::string printed;
  std::fputs(a.prompt.c_str(), stdout);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  auto first = t0;
  auto on_token = [&](int32_t tok) {
    if (out.empty()) first = std::chrono::steady_clock::now();
    out.push_back(tok);
    const std::string text = codec.decode(out);
    const bool clean = text.size() < 3 || text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") != 0;
    if (clean && text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      // The demo vocabulary joins words with spaces: keep one between prompt and output.
      const std::string add = text.substr(printed.size());
      if (printed.empty() && codec.name == "demo") std::fputc(' ', stdout);
      std::fputs(add.c_str(), stdout);
      std::fflush(stdout);
      printed = text;
    }
    return true;
  };
  eval::generate(decoder, prompt, so, on_token);
  const auto t1 = std::chrono::steady_clock::now();
  if (!out.empty()) {  // what waited for the rest of a character that never came
    const std::string text = codec.decode(out);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0)
      std::fputs(text.substr(printed.size()).c_str(), stdout);
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);
  const double prefill_s = std::chrono::duration<double>(first - t0).count();
  const double decode_s = std::chrono::duration<double>(t1 - first).count();
  std::fprintf(stderr,
               "[generate] %zu new tokens; prefill %.3f s, decode %.1f tokens/s; decoding state "
               "%.1f KiB at position %lld\n",
               out.size(), prefill_s,
               out.size() > 1 ? static_cast<double>(out.size() - 1) / std::max(decode_s, 1e-9) : 0.0,
               static_cast<double>(decoder.state_bytes()) / 1024.0,
               static_cast<long long>(decoder.position()));
}

}  // namespace

void register_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Continue a prompt, streaming tokens (constant-memory recurrent decoding)");
  add_model_option(*cmd, a->model);
  cmd->add_option("--prompt", a->prompt, "the text to continue")->required();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "tokens to generate at most");
  cmd->add_option("--temperature", a->temperature, "0 = greedy; else softmax(logits / T) sampling");
  cmd->add_option("--top-p", a->top_p, "nucleus mass in (0, 1]");
  cmd->add_option("--seed", a->seed, "sampling seed");
  add_inference_device_option(*cmd, a->device);
  add_tokenizer_option(*cmd, a->tokenizer);
  add_teacher_flag(*cmd, a->teacher, "decode");
  cmd->add_flag("--no-bos", a->no_bos, "do not prepend the tokenizer's BOS");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "keep going past the end-of-sequence token");
  cmd->callback([a]() { run_generate(*a); });
}

}  // namespace lizard::cli
