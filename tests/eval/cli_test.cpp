// The `lizard eval` and `lizard generate` commands, run as a user runs them (the built binary,
// LIZARD_BIN), against the same computation done in-process through the library: the CLI's
// option wiring, model loading, tokenizer choice, JSON output and streaming must not change
// the numbers. Uses the Hugging Face fixtures (tests/fixtures/hf, random tiny models).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lizard/eval/model_loader.h"
#include "lizard/eval/recall_eval.h"
#include "lizard/eval/recurrent_decoder.h"
#include "lizard/eval/text_codec.h"
#include "lizard/io/json.h"

namespace lizard::eval {
namespace {

std::string lizard_bin() {
  const char* env = std::getenv("LIZARD_BIN");
  return env ? env : LIZARD_BINARY_DIR "/bin/lizard";
}

std::string fixture(const std::string& name) {
  return std::string(LIZARD_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}

struct CliRun {
  int status = -1;
  std::string out;  ///< stdout only (stderr goes to stderr_file)
  std::string err;
};

CliRun run_cli(const std::string& args) {
  const std::string err_file = ::testing::TempDir() + "lizard_cli_stderr.txt";
  const std::string cmd = lizard_bin() + " " + args + " 2>" + err_file;
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  FILE* e = std::fopen(err_file.c_str(), "r");
  if (e) {
    while ((n = fread(buf.data(), 1, buf.size(), e)) > 0) r.err.append(buf.data(), n);
    std::fclose(e);
  }
  return r;
}

TEST(Cli, GenerateStreamsTheLibraryGreedyContinuation) {
  const std::string dir = fixture("llama");
  const CliRun r = run_cli("generate --model " + dir +
                    " --prompt 'Hello there' --max-new-tokens 10 --ignore-eos --device cpu");
  ASSERT_EQ(r.status, 0) << r.err;
  // In-process: the same tokens through the reference (recompute) decoder.
  InferenceModel m = load_model_for_inference(dir, Device::cpu(), DType::F32);
  const TextCodec codec = text_codec_for(m, "");
  std::vector<int32_t> prompt;
  if (codec.bos >= 0) prompt.push_back(codec.bos);
  for (int32_t id : codec.encode("Hello there")) prompt.push_back(id);
  SamplingOptions so;
  so.max_new_tokens = 10;
  RecomputeStepModel ref(*m.model, true);
  const std::vector<int32_t> out = generate(ref, prompt, so);
  ASSERT_EQ(out.size(), 10u);
  EXPECT_EQ(r.out, "Hello there" + codec.decode(out) + "\n");
  EXPECT_NE(r.err.find("10 new tokens"), std::string::npos) << r.err;
}

TEST(Cli, EvalMqarPrintsOneJsonLineMatchingTheLibrary) {
  const std::string dir = fixture("mistral_swa");  // vocabulary 720 >= the demo's 288
  const CliRun r = run_cli("eval --model " + dir +
                    " --task mqar --samples 6 --seq-len 48 --pairs 5 --window 20 --seed 9 --device cpu");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "exactly one line: " << r.out;
  const io::Json j = io::parse_json(r.out);
  EXPECT_EQ(j.at("task").as_string(), "mqar");
  EXPECT_EQ(j.at("path").as_string(), "teacher");
  EXPECT_EQ(j.at("window").as_int(), 20);

  InferenceModel m = load_model_for_inference(dir, Device::cpu(), DType::F32);
  MqarSpec spec;
  spec.seq_len = 48;
  spec.num_pairs = 5;
  const MqarResult want = mqar_accuracy(*m.model, mqar_samples(SyntheticVocab(), spec, 6, 9), 20);
  EXPECT_EQ(j.at("queries").as_int(), want.queries);
  EXPECT_EQ(j.at("inside").as_int(), want.inside);
  EXPECT_EQ(j.at("beyond").as_int(), want.beyond);
  EXPECT_GT(want.inside, 0);
  EXPECT_GT(want.beyond, 0);
  EXPECT_DOUBLE_EQ(j.at("accuracy").as_double(), want.accuracy());
  EXPECT_DOUBLE_EQ(j.at("inside_accuracy").as_double(), want.inside_accuracy());
}

TEST(Cli, BadModelIsOneLineAndExitTwo) {
  const CliRun r = run_cli("eval --model /nonexistent/model-dir --task mqar --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("/nonexistent/model-dir"), std::string::npos) << r.err;
  const CliRun g = run_cli("generate --model " + fixture("llama") + " --prompt hi --top-p 0 --temperature 1 --device cpu");
  EXPECT_EQ(g.status, 2) << g.err;
  EXPECT_NE(g.err.find("--top-p"), std::string::npos) << g.err;
  EXPECT_TRUE(g.out.empty()) << "nothing printed before the options are checked: " << g.out;
}

}  // namespace
}  // namespace lizard::eval
