#include "lizard/eval/model_loader.h"

#include <filesystem>

#include "lizard/core/error.h"
#include "lizard/io/hf_model.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/config.h"
#include "lizard/train/stages.h"

namespace lizard::eval {

namespace fs = std::filesystem;

namespace {

// The complete checkpoint `p` names: itself (DONE), or the newest under p or p/checkpoints.
std::string resolve_checkpoint_dir(const std::string& p) {
  if (fs::exists(fs::path(p) / "DONE")) return p;
  for (const fs::path& root : {fs::path(p), fs::path(p) / "checkpoints"}) {
    if (!fs::is_directory(root)) continue;
    if (auto last = train::find_last_checkpoint(root.string())) return *last;
  }
  return "";
}

std::string tokenizer_in(const std::string& dir) {
  if (dir.empty()) return "";
  const fs::path t = fs::path(dir) / "tokenizer.json";
  return fs::exists(t) ? t.string() : "";
}

}  // namespace

Device inference_device(const std::string& name) {
  if (name == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  return Device::parse(name);
}

DType inference_dtype(Device device) { return device.is_cuda() ? DType::BF16 : DType::F32; }

InferenceModel load_model_for_inference(const std::string& path, Device device, DType dtype) {
  LZ_INPUT_CHECK(!path.empty(), "--model: no model directory given");
  LZ_INPUT_CHECK(fs::exists(path), "--model: '", path, "' does not exist");
  InferenceModel out;
  int64_t config_window = 0;  // a checkpoint's lizard.window, for teachers of a recipe run
  if (fs::exists(fs::path(path) / "config.json")) {
    io::LoadOptions lo;
    lo.device = device;
    lo.dtype = dtype;
    out.model = io::load_hf_model(path, lo);
    out.kind = "hf";
    out.dir = path;
    out.tokenizer = tokenizer_in(path);
  } else {
    const std::string dir = resolve_checkpoint_dir(path);
    LZ_INPUT_CHECK(!dir.empty(), "--model: '", path,
                   "' is neither a Hugging Face directory (no config.json) nor holds a complete "
                   "lizard checkpoint (a step-N directory with DONE)");
    const std::string yaml = (fs::path(dir) / "config.yaml").string();
    LZ_INPUT_CHECK(fs::exists(yaml), "--model: checkpoint ", dir, " has no config.yaml");
    std::vector<train::RunConfig> cfgs = train::load_config(yaml);
    LZ_INPUT_CHECK(cfgs.size() == 1, "--model: ", yaml, " holds ", cfgs.size(),
                   " stages, expected the one resolved stage of a checkpoint");
    train::RunConfig cfg = cfgs[0];
    // The checkpoint's tensors (all of them for pretrain; Lizard and LoRA tensors otherwise)
    // go in last, over the base weights that model.path provides.
    cfg.model.init_from = dir;
    out.model = train::build_model(cfg, device, dtype);
    out.kind = "checkpoint";
    out.dir = dir;
    out.stage = cfg.stage;
    config_window = cfg.lizard.window;
    out.tokenizer = tokenizer_in(dir);
    if (out.tokenizer.empty()) out.tokenizer = tokenizer_in(cfg.model.path);
  }
  for (const nn::DecoderLayer* layer : out.model->model->layers) {
    if (!layer->self_attn->is_linearized()) continue;
    ++out.linearized_layers;
    if (const auto* la = dynamic_cast<const nn::LizardAttention*>(layer->self_attn); la && !out.window)
      out.window = la->lizard_config().window;
  }
  out.student = out.linearized_layers > 0;
  if (!out.student) out.window = config_window;
  return out;
}

}  // namespace lizard::eval
