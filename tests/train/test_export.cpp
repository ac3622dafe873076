// Export (io/export.h, train/export.h) on tiny students built over the HF fixtures
// (tests/fixtures/hf, made with transformers 5.17): a random checkpoint is rebuilt, exported and
// loaded back by io::load_hf_model, and the reloaded model must reproduce the rebuilt one's
// student logits -- bitwise where the same parameters meet the same code (f32 and bf16
// unmerged), within fp32 rounding where LoRA was folded in. Failing exports leave nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "lizard/autograd/variable.h"
#include "lizard/core/error.h"
#include "lizard/eval/generate.h"
#include "lizard/io/export.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/hf_model.h"
#include "lizard/io/json.h"
#include "lizard/io/safetensors.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/matmul.h"
#include "lizard/train/export.h"
#include "io/io_test_util.h"
#include "test_util.h"

namespace lizard::train {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) {
  return std::string(LIZARD_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}

/// A fresh scratch directory per test.
class ExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           str_cat("lizard_export_", info->name(), "_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  /// A random complete checkpoint of `yaml` (one stage) at dir/name.
  std::string checkpoint(const std::string& yaml, const std::string& name, uint64_t seed = 11) {
    const RunConfig cfg = load_config_string(yaml, name + ".yaml")[0];
    return write_random_checkpoint(cfg, path(name), seed);
  }
  fs::path dir_;
};

/// Token ids spanning several windows (window 4 below) and every chunk boundary case of the
/// CPU kernel (T = 23 is not a multiple of anything used).
Tensor ids_for(int64_t vocab) {
  std::vector<int32_t> v;
  for (int i = 0; i < 23; ++i) v.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));
  return Tensor::from_data<int32_t>(v, {1, 23});
}

Tensor student_logits(const nn::LlamaForCausalLM& m) {
  autograd::NoGradGuard ng;
  nn::ForwardOptions fo;
  fo.teacher = false;
  return m.forward(ids_for(m.config().vocab_size), fo).data().to(DType::F32);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.raw(), bc.raw(), ac.nbytes()) == 0;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to_vector()) m = std::max(m, std::abs(x));
  return m;
}

constexpr const char* kFinetune = R"(
stage: finetune
device: cpu
seed: 5
model: {path: FIXTURE}
lizard: {feature_dim: 8, window: 4, sinks: 2}
lora: {r: 4, alpha: 8, targets: [q, v, o]}
)";

std::string with_fixture(std::string yaml, const std::string& fx) {
  const auto p = yaml.find("FIXTURE");
  if (p != std::string::npos) yaml.replace(p, 7, fixture(fx));
  return yaml;
}

TEST_F(ExportTest, AdapterExportReloadsBitwiseAndMergedWithinRounding) {
  const std::string ck = checkpoint(with_fixture(kFinetune, "llama"), "ckpt");
  auto ref = rebuild_checkpoint_model(ck);
  const Tensor y_ref = student_logits(*ref);

  io::ExportOptions opt;
  opt.dtype = DType::F32;
  opt.merge_lora = false;
  export_checkpoint(ck, path("adapter"), opt);
  opt.merge_lora = true;
  export_checkpoint(ck, path("merged"), opt);

  // Unmerged f32: the same parameters through the same code -> the same bits.
  auto adapter = io::load_hf_model(path("adapter"));
  ASSERT_TRUE(dynamic_cast<const nn::LoRALinear*>(adapter->model->layers[0]->self_attn->o_proj));
  EXPECT_TRUE(bitwise_equal(student_logits(*adapter), y_ref));
  for (const auto& [name, v] : ref->named_parameters())
    EXPECT_TRUE(bitwise_equal(adapter->parameter(name).data(), v.data())) << name;

  // Merged: x (W + s B A)^T against x W^T + s (x A^T) B^T, both in fp32. Each differs from
  // the exact product by a few fp32 ulps of the accumulated dot products (d = 64, r = 4), and
  // two decoder layers pass that on with gains of order one: 1e-5 of the logit scale is about
  // 100x fp32 epsilon and far below what a wrong scale (alpha/r) or transposed factor gives
  // (the LoRA moves the logits by more than 1e-2 of their scale, checked below).
  auto merged = io::load_hf_model(path("merged"));
  EXPECT_FALSE(dynamic_cast<const nn::LoRALinear*>(merged->model->layers[0]->self_attn->q_proj));
  const Tensor y_merged = student_logits(*merged);
  const double scale = max_abs(y_ref);
  EXPECT_LE(test::max_abs_diff(y_merged, y_ref), 1e-5 * scale);
  EXPECT_LE(test::max_abs_diff(student_logits(*adapter), y_merged), 1e-5 * scale);

  // The adapters matter: the base model without them is far from both.
  // (Caller-given LoRA replaces the export's adapter; these stay at B = 0.)
  io::LoadOptions base_only;
  base_only.lora.config = nn::LoraConfig{4, 8.0, 0.0};
  base_only.lora.targets.q = true;
  auto no_lora = io::load_hf_model(path("adapter"), base_only);
  EXPECT_GT(test::max_abs_diff(student_logits(*no_lora), y_ref), 1e-2 * scale);

  // The files: HF names, f32 Lizard parameters, peft adapter names and fields.
  io::SafetensorsCheckpoint st(path("adapter"));
  EXPECT_TRUE(st.contains("model.layers.1.self_attn.lizard.feature_map_q"));
  EXPECT_EQ(st.info("model.layers.1.self_attn.lizard.gate_bias").dtype_str, "F32");
  EXPECT_FALSE(st.contains("model.layers.0.self_attn.q_proj.lora_A.weight"));
  io::SafetensorsFile ad(path("adapter") + "/adapter_model.safetensors");
  EXPECT_TRUE(ad.contains("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"));
  EXPECT_EQ(ad.metadata().at("format"), "pt");
  const io::Json ac = io::load_json_file(path("adapter") + "/adapter_config.json");
  EXPECT_EQ(ac.at("r").as_int(), 4);
  EXPECT_EQ(ac.at("lora_alpha").as_double(), 8.0);
  EXPECT_EQ(ac.at("target_modules").dump(), R"(["q_proj","v_proj","o_proj"])");
  EXPECT_FALSE(fs::exists(path("merged") + "/adapter_config.json"));
}

TEST_F(ExportTest, ConfigCarriesBaseFieldsLizardSectionTokenizerAndModelingCode) {
  const std::string ck = checkpoint(with_fixture(kFinetune, "llama3_rope"), "ckpt");
  io::ExportOptions opt;
  export_checkpoint(ck, path("out"), opt);
  const io::Json c = io::load_json_file(path("out") + "/config.json");
  EXPECT_EQ(c.at("model_type").as_string(), "lizard");
  EXPECT_EQ(c.at("architectures").dump(), R"(["LizardForCausalLM"])");
  EXPECT_EQ(c.at("auto_map").at("AutoModelForCausalLM").as_string(), "modeling_lizard.LizardForCausalLM");
  EXPECT_EQ(c.at("auto_map").at("AutoConfig").as_string(), "modeling_lizard.LizardConfig");
  EXPECT_EQ(c.at("dtype").as_string(), "bfloat16");  // the fixture's "float32", updated
  EXPECT_EQ(c.at("initializer_range").as_double(), 0.02);  // a base field kept verbatim
  const io::Json& lz = c.at("lizard");
  EXPECT_EQ(lz.at("base_model_type").as_string(), "llama");
  EXPECT_EQ(lz.at("feature_dim").as_int(), 8);
  EXPECT_EQ(lz.at("window").as_int(), 4);
  EXPECT_EQ(lz.at("sinks").as_int(), 2);
  EXPECT_EQ(lz.at("gate").as_string(), "shared");
  EXPECT_EQ(lz.at("rope").at("rope_type").as_string(), "llama3");
  EXPECT_EQ(lz.at("rope").at("factor").as_double(), 8.0);
  // The exported config reads back as the base architecture and the same LizardConfig.
  const nn::LlamaConfig arch = io::load_hf_config(path("out"));
  EXPECT_EQ(arch.model_type, "llama");
  EXPECT_EQ(arch.rope_scaling.type, "llama3");
  const auto sec = io::parse_lizard_section(c, "config.json");
  ASSERT_TRUE(sec.has_value());
  auto ref = rebuild_checkpoint_model(ck);
  EXPECT_EQ(sec->config.str(), io::lizard_section_of(*ref)->config.str());
  // Tokenizer and generation config copied; the modeling code is the source tree's.
  EXPECT_TRUE(fs::exists(path("out") + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(path("out") + "/generation_config.json"));
  EXPECT_EQ(io::read_text_file(path("out") + "/modeling_lizard.py"),
            io::read_text_file(std::string(LIZARD_SOURCE_DIR) + "/scripts/hf/modeling_lizard.py"));
  // bf16 weights, f32 Lizard parameters.
  io::SafetensorsCheckpoint st(path("out"));
  EXPECT_EQ(st.info("model.layers.0.self_attn.q_proj.weight").dtype_str, "BF16");
  EXPECT_EQ(st.info("model.layers.0.self_attn.lizard.alpha").dtype_str, "F32");
}

TEST_F(ExportTest, Bf16UnmergedIsBitwiseAndMergedRoundsOnce) {
  const std::string ck = checkpoint(with_fixture(kFinetune, "llama"), "ckpt");
  io::ExportOptions opt;
  opt.dtype = DType::F32;
  opt.merge_lora = false;
  export_checkpoint(ck, path("f32"), opt);
  opt.dtype = DType::BF16;
  export_checkpoint(ck, path("bf16"), opt);
  opt.merge_lora = true;
  export_checkpoint(ck, path("bf16_merged"), opt);

  // The bf16 export holds exactly the bf16 rounding of the weights: a bf16 model loaded from
  // the f32 export and one loaded from the bf16 export are the same model, parameter for
  // parameter (the CPU backend does not compute in bf16, so parameters are compared, not
  // logits); the Lizard parameters stay f32 in both.
  io::LoadOptions lo;
  lo.dtype = DType::BF16;
  auto from_f32 = io::load_hf_model(path("f32"), lo);
  auto from_bf16 = io::load_hf_model(path("bf16"), lo);
  EXPECT_EQ(from_bf16->model->layers[0]->self_attn->q_proj->weight().dtype(), DType::BF16);
  EXPECT_EQ(from_bf16->parameter("model.layers.0.self_attn.lizard.gate_weight").dtype(), DType::F32);
  for (const auto& [name, v] : from_f32->named_parameters())
    EXPECT_TRUE(bitwise_equal(from_bf16->parameter(name).data(), v.data())) << name;
  // Loaded in f32 the bf16 export is the f32 model with weights rounded by at most 2^-9
  // relative: through two layers that moves logits by a few 1e-3 of their scale; 3e-2 bounds
  // it with margin and still catches a mangled tensor.
  auto ref = rebuild_checkpoint_model(ck);
  const Tensor y_ref = student_logits(*ref);
  EXPECT_LE(test::max_abs_diff(student_logits(*io::load_hf_model(path("bf16"))), y_ref),
            3e-2 * max_abs(y_ref));

  // Merged bf16 = bf16(W + (alpha/r) B A computed in fp32): one rounding, at the end.
  io::SafetensorsCheckpoint st(path("bf16_merged"));
  for (const char* p : {"q_proj", "v_proj", "o_proj"}) {
    const std::string base = str_cat("model.layers.1.self_attn.", p);
    const Tensor a = ref->parameter(base + ".lora_A.weight").data();
    const Tensor b = ref->parameter(base + ".lora_B.weight").data();
    const Tensor w = ref->parameter(base + ".weight").data();
    const Tensor want = ops::add(w, ops::affine(ops::matmul(b, a), 8.0 / 4.0)).to(DType::BF16);
    EXPECT_TRUE(bitwise_equal(st.load(base + ".weight"), want)) << base;
  }
  EXPECT_TRUE(bitwise_equal(st.load("model.layers.0.mlp.up_proj.weight"),
                            ref->parameter("model.layers.0.mlp.up_proj.weight").data().to(DType::BF16)));
}

TEST_F(ExportTest, EveryLizardSwitchHybridTiedAndQwenBiasRoundTrip) {
  // Switches away from the paper defaults, a softmax layer, tied embeddings, q/k/v bias, the
  // Mistral window on the softmax layer; a distill checkpoint (no LoRA).
  const struct {
    const char* fixture;
    const char* lizard;
  } cases[] = {
      {"llama_tied",
       "{preset: plus, feature_dim: 24, feature_activation: exp, window: 5, sinks: 3, "
       "sinks_per_head: true, combine: convex, softmax_layers: [1]}"},
      {"qwen2", "{feature_dim: 8, window: 0, gate: per_head}"},
      {"mistral_swa", "{feature_dim: 16, window: 3, sinks: 0, window_rope: true, softmax_layers: [0]}"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fixture);
    const std::string yaml = str_cat("stage: distill\ndevice: cpu\nmodel: {path: ", fixture(c.fixture),
                                     "}\nlizard: ", c.lizard, "\n");
    const std::string ck = checkpoint(yaml, str_cat("ck_", c.fixture), 3);
    auto ref = rebuild_checkpoint_model(ck);
    io::ExportOptions opt;
    opt.dtype = DType::F32;
    export_checkpoint(ck, path(str_cat("out_", c.fixture)), opt);
    auto back = io::load_hf_model(path(str_cat("out_", c.fixture)));
    EXPECT_EQ(io::lizard_section_of(*back)->config.str(), io::lizard_section_of(*ref)->config.str());
    EXPECT_EQ(io::lizard_section_of(*back)->softmax_layers, io::lizard_section_of(*ref)->softmax_layers);
    EXPECT_TRUE(bitwise_equal(student_logits(*back), student_logits(*ref)));
    // Generation on the export follows the rebuilt student token for token.
    eval::SamplingOptions so;
    so.max_new_tokens = 5;
    EXPECT_EQ(eval::generate(*back, {3, 1, 4, 1}, so, /*teacher=*/false),
              eval::generate(*ref, {3, 1, 4, 1}, so, /*teacher=*/false));
  }
}

TEST_F(ExportTest, ShardedExportAndTeacherExport) {
  // A pretrain (teacher) checkpoint without an HF base: a plain llama export, sharded.
  const std::string yaml =
      "stage: pretrain\ndevice: cpu\nmodel: {vocab_size: 40, hidden_size: 32, intermediate_size: 48, "
      "num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8}\n";
  const std::string ck = checkpoint(yaml, "teacher");
  io::ExportOptions opt;
  opt.dtype = DType::F32;
  opt.max_shard_bytes = 8000;  // a few tensors per shard
  export_checkpoint(ck, path("out"), opt);
  EXPECT_TRUE(fs::exists(path("out") + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(path("out") + "/modeling_lizard.py"));
  const io::Json c = io::load_json_file(path("out") + "/config.json");
  EXPECT_EQ(c.at("model_type").as_string(), "llama");
  EXPECT_FALSE(c.contains("lizard"));
  auto ref = rebuild_checkpoint_model(ck);
  auto back = io::load_hf_model(path("out"));
  autograd::NoGradGuard ng;
  const Tensor ids = ids_for(40);
  EXPECT_TRUE(bitwise_equal(back->forward(ids).data(), ref->forward(ids).data()));
}

TEST_F(ExportTest, FailuresLeaveNothingAndNameTheProblem) {
  const std::string ck = checkpoint(with_fixture(kFinetune, "llama"), "ckpt");
  auto leftovers = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) ++n;
    return n;
  };
  io::ExportOptions opt;

  // A checkpoint whose save was interrupted (no DONE).
  fs::copy(ck, path("partial"), fs::copy_options::recursive);
  fs::remove(path("partial") + "/DONE");
  std::string m = test::error_of<InputError>([&] { export_checkpoint(path("partial"), path("o1"), opt); });
  EXPECT_NE(m.find("no DONE"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("o1")));

  // An output whose parent is a file.
  std::ofstream(path("afile")) << "x";
  m = test::error_of<InputError>([&] { export_checkpoint(ck, path("afile") + "/out", opt); });
  EXPECT_NE(m.find("afile"), std::string::npos) << m;

  // A failure halfway (a tokenizer.json that cannot be copied: a directory): the temporary is
  // removed and nothing appears at the output.
  fs::create_directories(path("badbase/tokenizer.json"));
  fs::copy_file(fixture("llama") + "/config.json", path("badbase/config.json"));
  opt.base_model_dir = path("badbase");
  m = test::error_of<InputError>([&] { export_checkpoint(ck, path("o2"), opt); });
  EXPECT_NE(m.find("o2"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("o2")));
  EXPECT_EQ(leftovers(), 0);
  opt.base_model_dir.clear();

  // An existing output is kept unless overwrite.
  fs::create_directories(path("o3"));
  m = test::error_of<InputError>([&] { export_checkpoint(ck, path("o3"), opt); });
  EXPECT_NE(m.find("already exists"), std::string::npos) << m;
  opt.overwrite = true;
  export_checkpoint(ck, path("o3"), opt);
  EXPECT_TRUE(fs::exists(path("o3") + "/model.safetensors"));

  // A base model that moved: the error says how to point at it.
  m = test::error_of<InputError>([&] {
    export_checkpoint(ck, path("o4"), io::ExportOptions{}, {"model.path=" + path("nowhere")});
  });
  EXPECT_NE(m.find("--set model.path"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("o4")));
}

TEST_F(ExportTest, CliFailsWithOneLineAndExitStatus2) {
  const char* bin = std::getenv("LIZARD_BIN");
  if (!bin || !fs::exists(bin)) GTEST_SKIP() << "LIZARD_BIN (the lizard binary, set by ctest) is not built";
  const std::string err = path("stderr.txt");
  const std::string cmd = str_cat(bin, " export --checkpoint ", path("missing"), " --output ", path("out"),
                                  " 2> ", err);
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string text = io::read_text_file(err);
  EXPECT_EQ(text.rfind("error: checkpoint '", 0), 0u) << text;
  EXPECT_NE(text.find("does not exist"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_FALSE(fs::exists(path("out")));
}

TEST(ExportFormat, LizardSectionErrorsNameFileAndKey) {
  auto parse = [](const std::string& text) {
    return io::parse_lizard_section(io::parse_json(text, "x/config.json"), "x/config.json");
  };
  EXPECT_FALSE(parse(R"({"model_type": "llama"})").has_value());
  const auto s = parse(R"({"lizard": {"gate": "per_head", "window": 0, "softmax_layers": [2]}})");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->config.gate_mode(), ops::GateMode::PerHead);
  EXPECT_EQ(s->softmax_layers, std::vector<int64_t>{2});
  std::string m = test::error_of<InputError>([&] { parse(R"({"lizard": {"window": "big"}})"); });
  EXPECT_NE(m.find("x/config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("lizard.window"), std::string::npos) << m;
  m = test::error_of<InputError>([&] { parse(R"({"lizard": {"combine": "max"}})"); });
  EXPECT_NE(m.find("lizard.combine"), std::string::npos) << m;
  m = test::error_of<InputError>([&] { parse(R"({"lizard": {"format_version": 9}})"); });
  EXPECT_NE(m.find("newer"), std::string::npos) << m;
}

}  // namespace
}  // namespace lizard::train
