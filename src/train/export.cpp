// Export of a training checkpoint (see include/lizard/train/export.h).
#include "lizard/train/export.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lizard/io/hdf5_file.h"
#include "lizard/io/json.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/ops/elementwise.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/stages.h"

namespace lizard::train {

namespace fs = std::filesystem;

std::string resolve_checkpoint_dir(const std::string& path) {
  LZ_INPUT_CHECK(fs::exists(path), "checkpoint '", path, "' does not exist");
  if (fs::exists(fs::path(path) / "DONE")) return path;
  for (const fs::path& root : {fs::path(path), fs::path(path) / "checkpoints"})
    if (auto last = find_last_checkpoint(root.string())) return *last;
  LZ_INPUT_CHECK(!fs::exists(fs::path(path) / "model.h5"), "checkpoint '", path,
                 "' is incomplete (no DONE marker: the save was interrupted); export a complete one");
  throw InputError(str_cat("checkpoint '", path,
                           "': not a checkpoint directory (no DONE) and no complete checkpoint under it"));
}

std::unique_ptr<nn::LlamaForCausalLM> rebuild_checkpoint_model(
    const std::string& path, const std::vector<std::string>& overrides, RunConfig* cfg_out) {
  const std::string dir = resolve_checkpoint_dir(path);
  const fs::path cfg_path = fs::path(dir) / "config.yaml";
  LZ_INPUT_CHECK(fs::exists(cfg_path), "checkpoint '", dir, "' has no config.yaml");
  std::vector<RunConfig> cfgs =
      load_config_string(io::read_text_file(cfg_path.string()), cfg_path.string(), overrides);
  LZ_INPUT_CHECK(cfgs.size() == 1, cfg_path.string(), ": expected one resolved stage, got ", cfgs.size());
  RunConfig cfg = cfgs[0];
  cfg.device = "cpu";
  // Check the paths first: without model.path's config.json, build_model would build the
  // saved arch section (the defaults when an HF base was used: a 7B model) before failing.
  const std::string hint =
      " (paths in config.yaml are relative to the directory training ran in; override them "
      "with --set model.path=DIR / --set model.init_from=DIR)";
  if (!cfg.model.path.empty() && !fs::exists(fs::path(cfg.model.path) / "config.json")) {
    try {
      resolve_checkpoint_dir(cfg.model.path);
    } catch (const InputError& e) {
      throw InputError(str_cat("checkpoint '", dir, "': model.path '", cfg.model.path,
                               "' is neither a Hugging Face directory nor a checkpoint: ", e.what(), hint));
    }
  }
  if (!cfg.model.init_from.empty()) {
    try {
      resolve_checkpoint_dir(cfg.model.init_from);
    } catch (const InputError& e) {
      throw InputError(str_cat("checkpoint '", dir, "': model.init_from: ", e.what(), hint));
    }
  }
  std::unique_ptr<nn::LlamaForCausalLM> model;
  try {
    model = build_model(cfg, Device::cpu(), DType::F32);
  } catch (const InputError& e) {
    throw InputError(str_cat("checkpoint '", dir, "': rebuilding its model failed: ", e.what(), hint));
  }
  for (auto& [name, t] : load_checkpoint_model(dir)) {
    autograd::Var v;
    try {
      v = model->parameter(name);
    } catch (const Error&) {
      throw InputError(str_cat("checkpoint '", dir, "': tensor '", name,
                               "' is not a parameter of the model its config.yaml describes"));
    }
    LZ_INPUT_CHECK(v.shape() == t.shape(), "checkpoint '", dir, "': tensor '", name, "' has shape ",
                   shape_str(t.shape()), " but the model expects ", shape_str(v.shape()));
    v.set_data(t.to(v.device(), v.dtype()));
  }
  if (cfg_out) *cfg_out = cfg;
  return model;
}

void export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                       io::ExportOptions opt, const std::vector<std::string>& overrides) {
  // Refuse an existing output before the (possibly long) rebuild.
  LZ_INPUT_CHECK(opt.overwrite || !fs::exists(out_dir), "export: output '", out_dir,
                 "' already exists (remove it, choose another --output, or pass --overwrite)");
  RunConfig cfg;
  auto model = rebuild_checkpoint_model(checkpoint, overrides, &cfg);
  if (opt.base_model_dir.empty() && !cfg.model.path.empty() &&
      fs::exists(fs::path(cfg.model.path) / "config.json"))
    opt.base_model_dir = cfg.model.path;
  io::export_model(*model, out_dir, opt);
}

std::string write_random_checkpoint(const RunConfig& cfg, const std::string& dir, uint64_t seed) {
  auto model = build_model(cfg, Device::cpu(), DType::F32);
  // Base weights from model.path stay (a real base model, or an HF fixture); without one
  // they are drawn here.
  if (cfg.model.path.empty()) model->init_random(seed);
  // Far from the initialisation, so that every term of the maths is exercised: feature maps
  // away from the identity, a gate that varies per token (x is RMS-normalised, so z = x.w_g + b
  // has a spread of about 1), sinks of different weights, alpha != 1, LoRA B != 0.
  uint64_t offset = 1u << 20;
  for (auto& [name, v] : model->named_parameters()) {
    const Tensor& d = v.data();
    const bool lizard = nn::is_lizard_parameter(name), lora = nn::is_lora_parameter(name);
    if (!lizard && !lora) continue;
    double mean = 0, std = 0;
    bool add = true;  // noise added to the initial value, or replacing it
    if (name.find("feature_map") != std::string::npos) std = 0.5;
    else if (name.find("gate_weight") != std::string::npos) std = 1.0 / std::sqrt(static_cast<double>(d.size(-1)));
    else if (name.find("gate_bias") != std::string::npos) mean = 1.0, std = 1.0, add = false;
    else if (name.find("sinks") != std::string::npos) std = 1.0;
    else if (name.find("alpha") != std::string::npos) mean = 0.7, std = 0.3, add = false;
    else if (name.find("lora_B") != std::string::npos) std = 0.05, add = false;
    else continue;  // lora_A keeps its Kaiming-uniform draw
    Tensor noise = Tensor::normal(d.shape(), mean, std, seed, offset++, DType::F32);
    v.set_data((add ? ops::add(d.to(DType::F32), noise) : noise).to(d.device(), d.dtype()));
  }
  const fs::path final_dir(dir), tmp = fs::path(dir + str_cat(".tmp-", ::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  {
    io::H5File f = io::H5File::create((tmp / "model.h5").string());
    for (const auto& [name, v] : model->named_parameters()) f.write(name, v.data());
    f.set_attr("step", int64_t{0});
    f.close();
  }
  std::ofstream(tmp / "config.yaml") << config_to_yaml(cfg);
  std::ofstream(tmp / "DONE") << "step 0 world 1 random " << seed << "\n";
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  return final_dir.string();
}

}  // namespace lizard::train
