// Bad input, end to end (issue #9, DESIGN.md section 7): runs the real `lizard` binary on
// every kind of bad input we know of (missing, corrupt and truncated files, wrong dtypes and
// shapes, config typos, out-of-range values, a dataset made by another tokenizer, ...) and
// checks that each ends with a non-zero exit code and one message naming the thing (file, key,
// tensor) and what was expected. A few cases that need a second process layout (world-size
// change) run the library call the CLI makes. The test writes the table of docs/robustness.md
// to <build>/docs/robustness.md, and over the committed one when LIZARD_UPDATE_DOCS=1.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "cli_runner.h"
#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/json.h"
#include "lizard/optim/adamw.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/data_prep.h"

namespace lizard::test {
namespace {

namespace fs = std::filesystem;

struct Row {
  std::string area, input, command;
  int exit_code;
  std::string message;
};

/// The CLI's message: from "error: " to the end of the output (some messages list several
/// tensors on following lines), or the last non-empty line when there is none.
std::string error_line(const std::string& out) {
  size_t at = out.rfind("\nerror: ");
  at = at == std::string::npos ? (out.rfind("error: ", 0) == 0 ? 0 : at) : at + 1;
  if (at != std::string::npos) {
    std::string m = out.substr(at + 7);
    while (!m.empty() && m.back() == '\n') m.pop_back();
    return m;
  }
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

/// Copies the fixture model directory and lets `edit` spoil it.
fs::path model_variant(const fs::path& base, const fs::path& dir,
                       const std::function<void(const fs::path&)>& edit) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    fs::copy_file(base / f, dir / f);
  edit(dir);
  return dir;
}

/// Rewrites the JSON header of a safetensors file (the data buffer is kept as is).
void edit_safetensors_header(const fs::path& p, const std::function<void(io::Json&)>& edit) {
  const std::string bytes = read_file(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  io::Json h = io::parse_json(bytes.substr(8, n));
  edit(h);
  const std::string hs = h.dump();
  const uint64_t m = hs.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  write_file(p, out + hs + bytes.substr(8 + n));
}

/// A JSON object without member `key` (Json has no erase).
io::Json without(const io::Json& obj, const std::string& key) {
  io::Json out = io::Json::object();
  for (size_t i = 0; i < obj.keys().size(); ++i)
    if (obj.keys()[i] != key) out.set(obj.keys()[i], obj.values()[i]);
  return out;
}

void write_dataset(const fs::path& p, const std::string& hash, int64_t vocab, int32_t max_token) {
  io::TokenDatasetWriter w(p.string(), {hash, vocab});
  std::mt19937 gen(5);
  for (int d = 0; d < 12; ++d) {
    std::vector<int32_t> doc(20);
    for (auto& t : doc) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(max_token));
    w.add(doc);
  }
  w.finish();
}

class BadInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lizard_bad_inputs_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    src_ = LIZARD_SOURCE_DIR;
    hf_ = dir_ / "hf";
    model_variant(src_ / "tests/fixtures/hf/llama", hf_, [](const fs::path&) {});
    data_ = dir_ / "data.h5";
    write_dataset(data_, train::file_hash((hf_ / "tokenizer.json").string()), 512, 512);
    config_ = dir_ / "distill.yaml";
    std::ofstream(config_) << "stage: distill\ndevice: cpu\ndtype: f32\n"
                           << "out_dir: " << (dir_ / "out").string() << "\n"
                           << "model: {path: " << hf_.string() << "}\n"
                           << "data: {path: " << data_.string()
                           << ", seq_len: 16, micro_batch: 1, global_batch: 1}\n"
                           << "schedule: {steps: 1}\n"
                           << "lizard: {feature_dim: 8, window: 4, chunk: 16}\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string clean(const std::string& s) const {
    return replace_all(replace_all(s, dir_.string(), "$TMP"), src_.string(), "$SRC");
  }

  /// Runs lizard; expects exit code `want` and every string of `names` in the message.
  void cli(const std::string& area, const std::string& input, std::vector<std::string> args,
           int want, const std::vector<std::string>& names) {
    const ProcessResult r = run_lizard(args, (dir_ / "run.log").string());
    const std::string msg = error_line(r.output);
    std::string cmd = "lizard";
    for (const std::string& a : args) cmd += " " + a;
    EXPECT_EQ(r.exit_code, want) << input << "\n" << cmd << "\n" << r.output;
    for (const std::string& n : names)
      EXPECT_NE(msg.find(n), std::string::npos)
          << input << ": the message does not name '" << n << "':\n" << msg;
    rows_.push_back({area, input, clean(cmd), r.exit_code, clean(msg)});
  }

  /// `lizard train` on the base config with overrides.
  void train(const std::string& area, const std::string& input, std::vector<std::string> sets,
             int want, const std::vector<std::string>& names) {
    std::vector<std::string> args{"train", "--config", config_.string()};
    for (const std::string& s : sets) args.insert(args.end(), {"--set", s});
    cli(area, input, args, want, names);
  }

  /// A library call the CLI makes; the exit code is main()'s mapping (InputError 2, Error 1).
  void lib(const std::string& area, const std::string& input, const std::string& call,
           const std::function<void()>& f, int want, const std::vector<std::string>& names) {
    int code = 0;
    std::string msg;
    try {
      f();
    } catch (const InputError& e) {
      code = 2, msg = e.what();
    } catch (const std::exception& e) {
      code = 1, msg = e.what();
    }
    EXPECT_EQ(code, want) << input << ": " << msg;
    for (const std::string& n : names)
      EXPECT_NE(msg.find(n), std::string::npos) << input << ": the message does not name '" << n
                                                << "':\n" << msg;
    rows_.push_back({area, input, call, code, clean(msg)});
  }

  void write_doc() const;

  fs::path dir_, src_, hf_, data_, config_;
  std::vector<Row> rows_;
};

std::string cell(std::string s) {
  s = replace_all(replace_all(s, "|", "\\|"), "\n", " / ");
  if (s.size() > 400) s = s.substr(0, 397) + "...";
  return s;
}

void BadInputs::write_doc() const {
  std::ostringstream md;
  md << "# Robustness: what every bad input does\n\n"
        "GENERATED by `tests/train/bad_inputs_test.cpp` (test `BadInputs.EveryCaseNamesTheThing"
        "AndWhatWasExpected`), which runs the real `lizard` binary on each input below and "
        "checks the exit code and that the message names the file/key/tensor and what was "
        "expected. Regenerate with `LIZARD_UPDATE_DOCS=1 build/bin/test_train "
        "--gtest_filter='BadInputs.*'`. `$TMP` is the test's scratch directory (a copy of "
        "`tests/fixtures/hf/llama` in `$TMP/hf`, a token dataset made with its tokenizer in "
        "`$TMP/data.h5`, a one-step distill config in `$TMP/distill.yaml`).\n\n"
        "Exit codes: 0 success, 2 bad input (`lizard::InputError`), 1 any other error. "
        "Rows marked *(library)* call the function the CLI calls (the multi-process layout "
        "they need is not available to a CPU test); their exit code is `main()`'s mapping.\n\n"
        "| # | area | bad input | command | exit | message |\n|---|---|---|---|---|---|\n";
  int i = 0;
  for (const Row& r : rows_)
    md << "| " << ++i << " | " << r.area << " | " << cell(r.input) << " | `" << cell(r.command)
       << "` | " << r.exit_code << " | " << cell(r.message) << " |\n";
  md << "\n## Not generated here\n\n"
        "- **Out of GPU memory** (needs a GPU): the caching allocator (`src/core/cuda_runtime.cpp`) "
        "frees its cache and retries once, then throws `lizard::OutOfMemoryError` \"out of GPU "
        "memory on cuda:N allocating X MiB (in use Y MiB, peak Z MiB); lower data.micro_batch or "
        "data.seq_len, or set recompute: true\"; `main()` prints `error: <message>` and exits 1 "
        "(host memory: row *out of host memory* above). Measured on an H200 (139 GiB, "
        "2026-11-27): `lizard train --config configs/demo.yaml --set stages.0.data.seq_len=8192 "
        "--set stages.0.data.micro_batch=4096 --set stages.0.data.global_batch=4096` printed "
        "`error: out of GPU memory on cuda:0 allocating 44032 MiB (in use 132522 MiB, peak "
        "132522 MiB); lower data.micro_batch or data.seq_len, or set recompute: true` and exited "
        "1 before the first step; the stage directory holds only its resolved config.yaml and "
        "an empty metrics.jsonl (no checkpoint).\n"
        "- **GPU sanitizers** (compute-sanitizer, H200, 2026-11-27): memcheck reports 0 errors "
        "on test_gpu (26 tests; LongSequenceNoNaN left out for time) and again on the "
        "flash-attention tests (every forward variant) and the Lizard attention tests after "
        "the window-backward change (the later phi hi + lo split of the tensor-core training "
        "path has not been under the sanitizers yet). racecheck reports 0 hazards on 20 tests run one per "
        "process: the elementwise, reduction, RMSNorm, RoPE, SwiGLU, softmax, cross-entropy, "
        "embedding and AdamW tests, the 5 flash-attention tests, and the Lizard tests that run "
        "the f32 kernels, the tensor-core forward and backward (LIZARD_ATTENTION_KERNELS=tc) "
        "and mixes of both. MatchesReferenceAcrossLengthsAndGqa (T up to 4096) did not finish "
        "under racecheck in 200 s; it runs the same kernels at longer lengths.\n"
        "- **World-size change under `mpirun`**: `tests/dist/test_train_mpirun.cpp` "
        "(`TrainMpirun.ResumeWithAnotherWorldSizeNamesBothSizes`) trains under `mpirun -np 2`, "
        "resumes with 3 and with 1 rank and expects \"checkpoint ... was written by 2 ranks, "
        "this run has 3; resume with the same number of ranks (mpirun -np 2)\" (exit 2); the "
        "library row *world-size change* above is the same check.\n"
        "- **Fuzzed inputs**: `scripts/fuzz.sh` (libFuzzer on the safetensors, tokenizer.json, "
        "YAML config, config.json and HDF5 dataset readers; see `fuzz/README.md`). Fuzzing ran "
        "minutes per target without a crash in lizard code; hand-written adversarial inputs "
        "fed through the same feeders found two bugs, both fixed: token ids of 2^31 in tokenizer.json grew the id tables until `std::bad_alloc` "
        "(ids are now bounded to [0, 2^24)); an HDF5 file of 2 KB declaring 500M tokens made "
        "the reader allocate 2 GB of fill values (a contiguous dataset must now store what it "
        "declares). Inside libhdf5 1.10.8 (upstream, not fixable here): heap-use-after-free "
        "and huge allocations on malformed object headers (`fuzz/known_upstream/`). Kept inputs "
        "are replayed by `tests/io/fuzz_regression_test.cpp`, which runs in CI; the fuzzers "
        "themselves do not (their clang + sanitizer build alone exceeds CI's budget on 2 "
        "cores).\n"
        "- **SIGKILL during a checkpoint**: `tests/train/kill_resume_test.cpp` kills `lizard "
        "train` at random moments and checks that resuming ends bit-identical to a straight "
        "run.\n";
  fs::create_directories(fs::path(LIZARD_BINARY_DIR) / "docs");
  std::ofstream(fs::path(LIZARD_BINARY_DIR) / "docs" / "robustness.md") << md.str();
  const char* update = std::getenv("LIZARD_UPDATE_DOCS");
  if (update && std::string(update) == "1") std::ofstream(src_ / "docs" / "robustness.md") << md.str();
}

TEST_F(BadInputs, EveryCaseNamesTheThingAndWhatWasExpected) {
  ASSERT_TRUE(fs::exists(lizard_binary())) << "lizard binary not built: " << lizard_binary();
  const std::string cfg = config_.string();

  // ---- control: the inputs every case below spoils are good
  train("control", "(none: the valid fixture, dataset and config)", {}, 0, {});

  // ---- config files and overrides
  cli("config", "config file missing", {"train", "--config", (dir_ / "nope.yaml").string()}, 2,
      {"nope.yaml", "not found"});
  write_file(dir_ / "syntax.yaml", "stage: distill\nmodel: [unclosed\n");
  cli("config", "YAML syntax error", {"train", "--config", (dir_ / "syntax.yaml").string()}, 2,
      {"syntax.yaml", "YAML error"});
  write_file(dir_ / "typo_section.yaml", "include: distill.yaml\noptimzer: {lr: 1.0e-3}\n");
  cli("config", "misspelt section `optimzer:`",
      {"train", "--config", (dir_ / "typo_section.yaml").string()}, 2,
      {"'optimzer'", "typo_section.yaml", "did you mean 'optimizer'"});
  write_file(dir_ / "typo_key.yaml", "include: distill.yaml\noptimizer: {lrr: 1.0e-3}\n");
  cli("config", "misspelt key `optimizer.lrr`",
      {"train", "--config", (dir_ / "typo_key.yaml").string()}, 2,
      {"'optimizer.lrr'", "typo_key.yaml", "did you mean 'optimizer.lr'"});
  train("config", "unknown key via --set", {"optimizer.momentum=0.9"}, 2,
        {"'optimizer.momentum'", "--set"});
  write_file(dir_ / "type.yaml", "include: distill.yaml\noptimizer: {lr: fast}\n");
  cli("config", "wrong type (`lr: fast`)", {"train", "--config", (dir_ / "type.yaml").string()},
      2, {"'optimizer.lr'", "type.yaml", "expected a number", "fast"});
  train("config", "out-of-range value", {"optimizer.lr=-1"}, 2,
        {"'optimizer.lr'", "[0, 10]", "-1"});
  train("config", "value not among the choices", {"schedule.name=cosin"}, 2,
        {"'schedule.name'", "one of cosine|linear|constant", "cosin"});
  train("config", "list where a number is expected", {"data.seq_len=[1, 2]"}, 2,
        {"'data.seq_len'", "an integer"});
  train("config", "inconsistent values (global batch not a multiple of micro batch)",
        {"data.micro_batch=3", "data.global_batch=4"}, 2,
        {"'data.global_batch'", "multiple of data.micro_batch"});
  cli("config", "`--set` without `=`", {"train", "--config", cfg, "--set", "optimizer.lr"}, 2,
      {"--set 'optimizer.lr'", "key=value"});
  train("config", "stage index out of range in --set", {"stages.3.optimizer.lr=1"}, 2,
        {"stages.3", "does not exist"});
  write_file(dir_ / "include_missing.yaml", "include: base_missing.yaml\n");
  cli("config", "included file missing",
      {"train", "--config", (dir_ / "include_missing.yaml").string()}, 2, {"base_missing.yaml"});

  // ---- the model directory: config.json and safetensors
  train("model", "model directory missing", {"model.path=" + (dir_ / "no_model").string()}, 2,
        {"model.path", "no_model"});
  auto variant = [&](const std::string& name, const std::function<void(const fs::path&)>& edit) {
    return "model.path=" + model_variant(hf_, dir_ / name, edit).string();
  };
  train("model", "config.json not JSON",
        {variant("m_cfg_json", [](const fs::path& d) { write_file(d / "config.json", "{\"vocab_size\": 512,"); })},
        2, {"config.json", "JSON error"});
  train("model", "config.json: unsupported model_type",
        {variant("m_cfg_type", [](const fs::path& d) {
          io::Json j = io::load_json_file((d / "config.json").string());
          j.set("model_type", "gpt2");
          write_file(d / "config.json", j.dump());
        })},
        2, {"config.json", "gpt2", "supported"});
  train("model", "config.json: required field missing",
        {variant("m_cfg_missing", [](const fs::path& d) {
          write_file(d / "config.json", without(io::load_json_file((d / "config.json").string()), "hidden_size").dump());
        })},
        2, {"config.json", "hidden_size"});
  train("model", "config.json: wrong type (`\"num_hidden_layers\": \"two\"`)",
        {variant("m_cfg_typed", [](const fs::path& d) {
          io::Json j = io::load_json_file((d / "config.json").string());
          j.set("num_hidden_layers", "two");
          write_file(d / "config.json", j.dump());
        })},
        2, {"config.json", "num_hidden_layers", "integer"});
  train("model", "config.json disagrees with the weights (intermediate_size 128, weights 160)",
        {variant("m_cfg_shape", [](const fs::path& d) {
          io::Json j = io::load_json_file((d / "config.json").string());
          j.set("intermediate_size", 128);
          write_file(d / "config.json", j.dump());
        })},
        2, {"model.safetensors", "mlp.down_proj.weight", "expected [64, 128]", "[64, 160]"});
  train("model", "model.safetensors missing",
        {variant("m_st_missing", [](const fs::path& d) { fs::remove(d / "model.safetensors"); })}, 2,
        {"m_st_missing", "model.safetensors"});
  train("model", "model.safetensors truncated (half the file)",
        {variant("m_st_trunc", [](const fs::path& d) {
          const std::string b = read_file(d / "model.safetensors");
          write_file(d / "model.safetensors", b.substr(0, b.size() / 2));
        })},
        2, {"model.safetensors", "truncated"});
  train("model", "model.safetensors is random bytes",
        {variant("m_st_garbage", [](const fs::path& d) {
          std::string b(4096, '\0');
          std::mt19937 g(1);
          for (char& c : b) c = static_cast<char>(g());
          write_file(d / "model.safetensors", b);
        })},
        2, {"model.safetensors", "not a valid safetensors file"});
  train("model", "safetensors header: dtype U32 (valid safetensors, no lizard type)",
        {variant("m_st_u32", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors", [](io::Json& h) {
            io::Json t = *h.find("model.norm.weight");
            t.set("dtype", "U32");
            h.set("model.norm.weight", t);
          });
        })},
        2, {"model.norm.weight", "U32", "cannot load"});
  train("model", "safetensors header: integer dtype I32 for a float weight",
        {variant("m_st_i32", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors", [](io::Json& h) {
            io::Json t = *h.find("model.norm.weight");
            t.set("dtype", "I32");
            h.set("model.norm.weight", t);
          });
        })},
        2, {"model.norm.weight", "I32", "floating-point"});
  train("model", "safetensors header: shape disagrees with the byte span",
        {variant("m_st_span", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors", [](io::Json& h) {
            io::Json t = *h.find("model.norm.weight");
            t.set("shape", io::Json::array({io::Json(65)}));
            h.set("model.norm.weight", t);
          });
        })},
        2, {"model.norm.weight", "[65]", "data_offsets span"});
  train("model", "tensor of the wrong shape (same byte count)",
        {variant("m_st_shape", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors", [](io::Json& h) {
            io::Json t = *h.find("model.layers.0.self_attn.q_proj.weight");
            t.set("shape", io::Json::array({io::Json(32), io::Json(128)}));
            h.set("model.layers.0.self_attn.q_proj.weight", t);
          });
        })},
        2, {"model.layers.0.self_attn.q_proj.weight", "expected [64, 64]", "[32, 128]"});
  train("model", "tensor missing",
        {variant("m_st_missing_tensor", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors",
                                  [](io::Json& h) { h = without(h, "model.layers.1.mlp.up_proj.weight"); });
        })},
        2, {"missing", "model.layers.1.mlp.up_proj.weight"});
  train("model", "overlapping tensors",
        {variant("m_st_overlap", [](const fs::path& d) {
          edit_safetensors_header(d / "model.safetensors", [](io::Json& h) {
            io::Json a = *h.find("model.layers.0.input_layernorm.weight");
            io::Json b = *h.find("model.layers.1.input_layernorm.weight");
            b.set("data_offsets", a.at("data_offsets"));
            h.set("model.layers.1.input_layernorm.weight", b);
          });
        })},
        2, {"model.safetensors", "overlap"});

  // ---- tokenizer.json (lizard prepare-data)
  write_file(dir_ / "text.txt", "hello world\n\nanother document\n");
  auto prep = [&](const std::string& input, const fs::path& tok, std::vector<std::string> names,
                  const std::string& text = "") {
    cli("tokenizer", input,
        {"prepare-data", "--tokenizer", tok.string(), "--format", "text", "--input",
         text.empty() ? (dir_ / "text.txt").string() : text, "--output", (dir_ / "prep.h5").string()},
        2, names);
  };
  fs::create_directories(dir_ / "no_tok");
  prep("tokenizer.json missing", dir_ / "no_tok", {"no_tok", "tokenizer.json"});
  const std::string tok = read_file(hf_ / "tokenizer.json");
  write_file(dir_ / "tok_trunc.json", tok.substr(0, tok.size() / 3));
  prep("tokenizer.json truncated", dir_ / "tok_trunc.json", {"tok_trunc.json", "JSON error"});
  write_file(dir_ / "tok_wordpiece.json",
             replace_all(tok, "\"type\": \"BPE\"", "\"type\": \"WordPiece\""));
  prep("tokenizer.json: unsupported model type (WordPiece)", dir_ / "tok_wordpiece.json",
       {"tok_wordpiece.json", "WordPiece"});
  prep("input text file missing", hf_, {"missing.txt"}, (dir_ / "missing.txt").string());

  // ---- token datasets (HDF5)
  train("dataset", "data.path missing", {"data.path=" + (dir_ / "none.h5").string()}, 2,
        {"none.h5", "not found"});
  {
    std::string junk(3000, 'x');
    write_file(dir_ / "junk.h5", junk);
    const std::string good = read_file(data_);
    write_file(dir_ / "trunc.h5", good.substr(0, good.size() / 2));
  }
  train("dataset", "data.path is not HDF5", {"data.path=" + (dir_ / "junk.h5").string()}, 2,
        {"junk.h5", "not an HDF5 file"});
  train("dataset", "data.path truncated (half the file)", {"data.path=" + (dir_ / "trunc.h5").string()},
        2, {"trunc.h5"});
  {
    io::H5File f = io::H5File::create((dir_ / "i64.h5").string());
    f.write("tokens", Tensor::from_data<int64_t>({1, 2, 3}, {3}));
    f.write("offsets", Tensor::from_data<int64_t>({0}, {1}));
    f.set_attr("tokenizer_hash", std::string("x"));
    f.set_attr("vocab_size", int64_t(512));
    f.set_attr("schema_version", int64_t(1));
    f.close();
    io::H5File g = io::H5File::create((dir_ / "no_offsets.h5").string());
    g.write("tokens", Tensor::from_data<int32_t>({1, 2, 3}, {3}));
    g.set_attr("tokenizer_hash", std::string("x"));
    g.set_attr("vocab_size", int64_t(512));
    g.set_attr("schema_version", int64_t(1));
    g.close();
    io::H5File h = io::H5File::create((dir_ / "range.h5").string());
    h.write("tokens", Tensor::from_data<int32_t>({1, 600, 3}, {3}));
    h.write("offsets", Tensor::from_data<int64_t>({0}, {1}));
    h.set_attr("tokenizer_hash", std::string("x"));
    h.set_attr("vocab_size", int64_t(512));
    h.set_attr("schema_version", int64_t(1));
    h.close();
    io::H5File v = io::H5File::create((dir_ / "schema.h5").string());
    v.write("tokens", Tensor::from_data<int32_t>({1}, {1}));
    v.write("offsets", Tensor::from_data<int64_t>({0}, {1}));
    v.set_attr("tokenizer_hash", std::string("x"));
    v.set_attr("vocab_size", int64_t(512));
    v.set_attr("schema_version", int64_t(7));
    v.close();
  }
  train("dataset", "`tokens` stored as int64", {"data.path=" + (dir_ / "i64.h5").string()}, 2,
        {"i64.h5", "'tokens' must be 1-D int32"});
  train("dataset", "`offsets` dataset missing", {"data.path=" + (dir_ / "no_offsets.h5").string()},
        2, {"no_offsets.h5", "'offsets' is missing"});
  train("dataset", "token id outside the vocabulary", {"data.path=" + (dir_ / "range.h5").string()},
        2, {"range.h5", "token 600", "outside [0, 512)"});
  train("dataset", "unknown schema version", {"data.path=" + (dir_ / "schema.h5").string()}, 2,
        {"schema.h5", "schema version 7"});
  write_dataset(dir_ / "big_vocab.h5", train::file_hash((hf_ / "tokenizer.json").string()), 1000, 1000);
  train("dataset", "wrong tokenizer: dataset vocabulary 1000, model 512",
        {"data.path=" + (dir_ / "big_vocab.h5").string()}, 2,
        {"data.path", "big_vocab.h5", "vocabulary of 1000", "512"});
  write_dataset(dir_ / "other_tok.h5", "0123456789abcdef", 512, 512);
  train("dataset", "wrong tokenizer: same vocabulary size, other tokenizer.json hash",
        {"data.path=" + (dir_ / "other_tok.h5").string()}, 2,
        {"data.path", "other_tok.h5", "0123456789abcdef", "tokenizer.json"});

  // ---- checkpoints and resume
  {
    const fs::path ck = dir_ / "bad_ckpt";
    fs::create_directories(ck);
    io::H5File f = io::H5File::create((ck / "model.h5").string());
    f.write("model.norm.weight", Tensor::ones({32}));
    f.close();
    std::ofstream(ck / "DONE") << "test\n";
  }
  train("checkpoint", "model.init_from: a tensor of another shape",
        {"model.init_from=" + (dir_ / "bad_ckpt").string()}, 2,
        {"model.init_from", "model.norm.weight", "[32]", "[64]"});
  train("checkpoint", "model.init_from: no complete checkpoint there",
        {"model.init_from=" + (dir_ / "no_ckpt").string()}, 2, {"model.init_from", "no_ckpt", "DONE"});
  {
    // A finished run whose newest checkpoint then lost half of model.h5 (disk trouble).
    const std::string out = "out_dir=" + (dir_ / "resume").string();
    const ProcessResult r = run_lizard({"train", "--config", cfg, "--set", out}, (dir_ / "r.log").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const fs::path m = dir_ / "resume" / "checkpoints" / "step-00000001" / "model.h5";
    const std::string b = read_file(m);
    write_file(m, b.substr(0, b.size() / 2));
    cli("checkpoint", "--resume from a checkpoint whose model.h5 is truncated",
        {"train", "--config", cfg, "--set", out, "--set", "schedule.steps=2", "--resume"}, 2,
        {"model.h5", "corrupt or truncated"});
  }
  lib("checkpoint", "world-size change on resume (written by 1 rank, resumed by 2) *(library)*",
      "train::load_checkpoint_state(dir, opt, rank 0, world 2)",
      [&] {
        autograd::Var w(Tensor::zeros({2}), true);
        w.set_name("w");
        optim::AdamW opt({{{w}, 0.0}});
        train::save_checkpoint((dir_ / "ws").string(), 1, {{"w", w.data()}}, opt, {}, "", 0, 1, 0);
        train::load_checkpoint_state(train::checkpoint_path((dir_ / "ws").string(), 1), opt, 0, 2);
      },
      2, {"written by 1 ranks", "this run has 2", "mpirun -np 1"});

  lib("memory", "out of host memory (a 128 TiB tensor) *(library)*",
      "Tensor::empty({2^45}, F32)", [] { (void)Tensor::empty({int64_t(1) << 45}, DType::F32); }, 1,
      {"out of host memory", "140737488355328 bytes"});

  // ---- training itself
  {
    const fs::path ck = dir_ / "nan_ckpt";
    fs::create_directories(ck);
    io::H5File f = io::H5File::create((ck / "model.h5").string());
    f.write("model.layers.1.mlp.down_proj.weight", Tensor::full({64, 160}, std::nan("")));
    f.close();
    std::ofstream(ck / "DONE") << "test\n";
  }
  train("training", "non-finite loss every step (NaN weight in layer 1), debug_nonfinite on",
        {"model.init_from=" + (dir_ / "nan_ckpt").string(), "schedule.steps=10",
         "max_nonfinite_steps=3", "debug_nonfinite=true", "stage=pretrain"},
        1, {"non-finite", "steps 1 to 3", "model.layers.1.mlp"});

  write_doc();
}

}  // namespace
}  // namespace lizard::test
