#include "lizard/train/stages.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "lizard/autograd/checkpoint.h"
#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/dist/logging.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/hf_model.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/train/checkpoint.h"
#include "lizard/train/data_prep.h"

namespace lizard::train {

namespace fs = std::filesystem;
namespace ag = lizard::autograd;
using autograd::ParamTag;
using autograd::Var;

ops::LizardConfig lizard_config_of(const RunConfig& cfg) {
  const LizardSection& s = cfg.lizard;
  ops::LizardConfig c;
  c.preset = ops::preset_from_name(s.preset);
  c.feature_dim = s.feature_dim;
  c.feature_activation = ops::feature_activation_from_name(s.feature_activation);
  c.window = s.window;
  c.sinks = s.sinks;
  c.sinks_per_head = s.sinks_per_head;
  c.combine = ops::combine_from_name(s.combine);
  c.chunk = s.chunk;
  // Fields a preset sets are explicit only when they differ from the paper default.
  if (s.gate != "shared") c.gate = ops::gate_mode_from_name(s.gate);
  if (s.gate_bias_init != 0.0) c.gate_bias_init = s.gate_bias_init;
  if (s.window_rope) c.window_rope = true;
  c = c.resolved();
  c.validate();
  c.keep_states = !cfg.recompute_states;
  return c;
}

namespace {

nn::LoraTargets lora_targets(const std::vector<std::string>& names) {
  nn::LoraTargets t;
  for (const std::string& n : names) {
    if (n == "q") t.q = true;
    else if (n == "k") t.k = true;
    else if (n == "v") t.v = true;
    else if (n == "o") t.o = true;
    else if (n == "gate") t.gate = true;
    else if (n == "up") t.up = true;
    else if (n == "down") t.down = true;
    else throw InputError("lora.targets: unknown target '" + n + "' (expected q, k, v, o, gate, up, down)");
  }
  LZ_INPUT_CHECK(!(t.gate || t.up || t.down), "lora.targets: MLP targets are not supported yet (use q, k, v, o)");
  return t;
}

// A checkpoint directory, or a run's checkpoint root, or a stage out_dir.
std::string resolve_checkpoint(const std::string& what, const std::string& p) {
  if (fs::exists(fs::path(p) / "DONE")) return p;
  for (const fs::path& root : {fs::path(p), fs::path(p) / "checkpoints"}) {
    if (auto last = find_last_checkpoint(root.string())) return *last;
  }
  throw InputError(what + ": no Hugging Face config.json and no complete checkpoint (with DONE) at '" + p + "'");
}

}  // namespace

std::unique_ptr<nn::LlamaForCausalLM> build_model(const RunConfig& cfg, Device device, DType dtype) {
  const bool student = cfg.stage != "pretrain";
  nn::AttentionFactory factory;
  if (student) factory = nn::lizard_factory(lizard_config_of(cfg), cfg.lizard.softmax_layers, dtype, device);
  nn::LoraSpec spec;
  if (cfg.stage == "finetune") {
    spec.config = nn::LoraConfig{cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout};
    spec.targets = lora_targets(cfg.lora.targets);
    spec.seed = cfg.seed + 7919;
  }
  std::unique_ptr<nn::LlamaForCausalLM> model;
  auto load_checkpoint_into = [&](const std::string& what, const std::string& path) {
    const std::string dir = resolve_checkpoint(what, path);
    NamedTensors saved = load_checkpoint_model(dir);
    for (auto& [name, t] : saved) {
      Var v = model->parameter(name);  // throws naming an unknown tensor
      LZ_INPUT_CHECK(v.shape() == t.shape(), what, ": tensor '", name, "' in ", dir,
                     " has shape ", shape_str(t.shape()), " but the model expects ",
                     shape_str(v.shape()));
      v.set_data(t.to(v.device(), v.dtype()));
    }
  };
  const bool hf_dir = !cfg.model.path.empty() && fs::exists(fs::path(cfg.model.path) / "config.json");
  // A model.path that is neither kind fails here, before model.arch (defaults: Llama-3-8B
  // sized) is allocated for nothing.
  if (!hf_dir && !cfg.model.path.empty()) (void)resolve_checkpoint("model.path", cfg.model.path);
  if (hf_dir) {
    io::LoadOptions lo;
    lo.device = device;
    lo.dtype = dtype;
    lo.attention = factory;
    lo.lora = spec;
    model = io::load_hf_model(cfg.model.path, lo);
  } else {
    // model.path may name a lizard checkpoint (a pretrain run): the architecture comes from
    // the config, the weights from the checkpoint.
    model = std::make_unique<nn::LlamaForCausalLM>(cfg.model.arch, factory, spec, dtype, device);
    model->init_random(cfg.seed);
    if (!cfg.model.path.empty()) load_checkpoint_into("model.path", cfg.model.path);
  }
  if (!cfg.model.init_from.empty()) load_checkpoint_into("model.init_from", cfg.model.init_from);
  // Tags per stage: pretrain trains everything; distill only Lizard parameters; finetune the
  // adapters (and the Lizard parameters when train_lizard_params).
  for (auto& [name, v] : model->named_parameters()) {
    const bool is_lizard = nn::is_lizard_parameter(name);
    const bool is_lora = nn::is_lora_parameter(name);
    bool train = false;
    if (cfg.stage == "pretrain") train = true;
    else if (cfg.stage == "distill") train = is_lizard;
    else train = is_lora || (is_lizard && cfg.train_lizard_params);
    v.set_tag(train ? (is_lora ? ParamTag::Adapter : ParamTag::Trainable) : ParamTag::Frozen);
  }
  return model;
}

namespace {

class ModelTask : public TrainTask {
 public:
  ModelTask(const RunConfig& cfg, std::unique_ptr<nn::LlamaForCausalLM> model, Device dev)
      : cfg_(cfg), model_(std::move(model)), dev_(dev) {}
  std::vector<autograd::Var> parameters() override {
    std::vector<autograd::Var> ps;
    for (auto& [name, v] : model_->named_parameters())
      if (v.requires_grad()) ps.push_back(v);
    return ps;
  }
  NamedTensors state_tensors() override {
    NamedTensors out;
    const bool all = cfg_.stage == "pretrain";
    for (auto& [name, v] : model_->named_parameters())
      if (all || v.requires_grad() || nn::is_lizard_parameter(name))
        out.emplace_back(name, v.data());
    return out;
  }
  void load_state(const NamedTensors& tensors) override {
    for (auto& [name, t] : tensors) {
      Var v = model_->parameter(name);
      v.set_data(t.to(v.device(), v.dtype()));
    }
  }
  std::string locate_nonfinite(const Batch& b, const StepContext&) override {
    ag::NoGradGuard ng;
    std::string first;
    const nn::ModuleProbe probe = [&](const std::string& module, const Var& out) {
      if (!first.empty()) return;
      for (double v : out.data().to(Device::cpu()).to_vector())
        if (!std::isfinite(v)) {
          first = module;
          return;
        }
    };
    nn::ForwardOptions o;
    o.teacher = cfg_.stage == "pretrain";  // students run their own attention
    o.probe = &probe;
    (void)model_->forward(dev_ids(b.inputs), o);
    return first;
  }
  double flops_per_token() const override {
    // step_cost.h: 6N + causal attention (pretrain), 4N + LoRA + attention (finetune), the
    // teacher layers' forward + attention (distill); the count `lizard bench step` reports.
    return step_flops_per_token(step_shape_of(cfg_, model_->config(), DType::BF16)).total;
  }
  /// The input embedding when its gradient is non-zero only on the rows of the step's input
  /// ids: trained and untied; else undefined. A tied table is also the LM head, whose gradient
  /// (hidden^T dlogits) is dense over every row, so it stays in the all-reduced buckets.
  Var row_sparse_embedding() const {
    if (model_->lm_head == nullptr) return {};
    const Var& w = model_->model->embed_tokens->weight();
    return w.requires_grad() ? w : Var();
  }
  std::string flops_formula() const override {
    return str_cat(step_flops_per_token(step_shape_of(cfg_, model_->config(), DType::BF16)).formula,
                   " (N = ", model_->config().num_parameters(), " parameters, T = ",
                   cfg_.data.seq_len, ")");
  }

 protected:
  Tensor dev_ids(const Tensor& t) const { return t.to(dev_); }
  RunConfig cfg_;
  std::unique_ptr<nn::LlamaForCausalLM> model_;
  Device dev_;
};

class LanguageModelTask : public ModelTask {
 public:
  using ModelTask::ModelTask;
  LossResult loss(const Batch& b, const StepContext& ctx) override {
    nn::ForwardOptions o;
    o.teacher = cfg_.stage == "pretrain";
    o.recompute = cfg_.recompute && ctx.training;
    o.recompute_attention = cfg_.recompute_attention && ctx.training;
    const int64_t B = b.inputs.size(0), T = b.inputs.size(1), V = model_->config().vocab_size;
    const Tensor ids = dev_ids(b.inputs);  // one upload, shared with the teacher's forward
    Var logits = ag::reshape(model_->forward(ids, o), {B * T, V});
    const Tensor host_targets = b.targets.reshape({B * T});
    Tensor targets = dev_ids(host_targets);
    // The host copy counts and checks the targets: no device read in the forward.
    auto ce = ag::cross_entropy(logits, targets,
                                host_targets.device().is_cpu() ? host_targets : Tensor());
    Var total = ag::scale(ce.loss, static_cast<double>(ce.count));
    if (cfg_.kl_to_teacher > 0 && cfg_.stage == "finetune") {
      Tensor t_logits;
      {
        ag::NoGradGuard ng;
        nn::ForwardOptions to;
        to.teacher = true;
        t_logits = model_->forward(ids, to).data().reshape({B * T, V});
      }
      // KL(teacher || student) summed over positions: sum p_t (log p_t - log p_s).
      Var lt(ag::log_softmax(Var(t_logits)).data());
      Var ls = ag::log_softmax(logits);
      Var kl = ag::sum(ag::mul(ag::exp(lt), ag::sub(lt, ls)));
      total = ag::add(total, ag::scale(kl, cfg_.kl_to_teacher * ce.count / static_cast<double>(B * T)));
    }
    return {total, ce.count};
  }
};

class DistillTask : public ModelTask {
 public:
  using ModelTask::ModelTask;
  LossResult loss(const Batch& b, const StepContext& ctx) override {
    // Teacher forcing: every layer sees the teacher's hidden state; only the student's
    // attention output (before o_proj) is compared with the teacher's.
    const ops::RopeTable& rope = model_->rope(b.inputs.size(1), dev_);
    mark_phase(ctx.timer, Phase::TeacherForward);
    Var x = model_->model->embed_tokens->forward(dev_ids(b.inputs));
    Var total;
    int64_t layers = 0;
    // With recomputation each layer keeps only the student's inputs and the teacher's target
    // (no kernel state): the student attention and its MSE run again in backward.
    const bool recompute = (cfg_.recompute || cfg_.recompute_attention) && ctx.training;
    // The teacher runs only as far as the last linearized layer's attention: its o_proj and
    // MLP, and any softmax layers after it, feed no target (a wasted GEMM pass otherwise).
    const auto& all = model_->model->layers;
    size_t last = all.size();
    for (size_t l = 0; l < all.size(); ++l)
      if (all[l]->self_attn->is_linearized()) last = l;
    LZ_INPUT_CHECK(last < all.size(), "distill: every layer is in lizard.softmax_layers; nothing to train");
    for (size_t l = 0; l <= last; ++l) {
      const nn::DecoderLayer* layer = all[l];
      Var xn = layer->input_layernorm->forward(x);
      nn::QKV qkv = layer->self_attn->project(xn);
      Var y_t = layer->self_attn->softmax_mix(qkv, rope);
      if (layer->self_attn->is_linearized()) {
        mark_phase(ctx.timer, Phase::StudentAttention);
        const nn::Attention* attn = layer->self_attn;
        auto student_mse = [attn, &rope](const std::vector<Var>& in) {
          return ag::mse(attn->student_mix(in[0], nn::QKV{in[1], in[2], in[3]}, rope), in[4]);
        };
        Var mse = recompute ? ag::checkpoint(student_mse, {xn, qkv.q, qkv.k, qkv.v, y_t})
                            : student_mse({xn, qkv.q, qkv.k, qkv.v, y_t});
        total = total.defined() ? ag::add(total, mse) : mse;
        ++layers;
        mark_phase(ctx.timer, Phase::TeacherForward);
      }
      if (l == last) break;
      // The residual adds ride in o_proj's and down_proj's GEMMs (as in DecoderLayer::forward).
      Var h = layer->self_attn->output(y_t, x);
      x = layer->mlp->forward(layer->post_attention_layernorm->forward(h), h);
    }
    // Loss = (1/L) sum_l mse_l, reported per token so the trainer's normaliser restores it.
    const int64_t n = b.inputs.numel();
    return {ag::scale(total, static_cast<double>(n) / static_cast<double>(layers)), n};
  }

};

}  // namespace

std::unique_ptr<TrainTask> make_stage_task(const RunConfig& cfg, Device dev, DType dtype) {
  auto model = build_model(cfg, dev, dtype);
  if (cfg.stage == "distill") return std::make_unique<DistillTask>(cfg, std::move(model), dev);
  return std::make_unique<LanguageModelTask>(cfg, std::move(model), dev);
}

StepShape step_shape_of(const RunConfig& cfg, const nn::LlamaConfig& arch, DType dtype) {
  StepShape s;
  s.arch = arch;
  s.stage = cfg.stage;
  s.lizard = lizard_config_of(cfg);
  s.softmax_layers = cfg.lizard.softmax_layers;
  s.seq_len = cfg.data.seq_len;
  s.micro_batch = cfg.data.micro_batch;
  s.lora_r = cfg.lora.r;
  s.lora_targets = cfg.lora.targets;
  s.train_lizard_params = cfg.train_lizard_params;
  s.dtype_bytes = static_cast<int64_t>(dtype_size(dtype));
  s.recompute = cfg.recompute ? RecomputeMode::Layer
                : cfg.recompute_attention ? RecomputeMode::Attention
                : cfg.recompute_states    ? RecomputeMode::States
                                          : RecomputeMode::None;
  return s;
}

TrainSummary run_stage(const RunConfig& cfg, bool resume, int64_t stop_after,
                       dist::Communicator* comm) {
  const int world = comm ? comm->world_size() : 1;
  const int rank = comm ? comm->rank() : 0;
  Device dev = Device::parse(cfg.device);
  // Under NCCL each rank's GPU is its node-local rank's, whatever cuda:N the config names.
  if (world > 1 && comm->device().is_cuda()) dev = comm->device();
  if (dev.is_cuda() && !cuda_available())
    throw InputError("device: '" + cfg.device + "' requested but no GPU is visible (set device: cpu)");
  const DType dtype = dev.is_cpu() ? DType::F32 : dtype_from_name(cfg.dtype);
  std::unique_ptr<TrainTask> task = make_stage_task(cfg, dev, dtype);
  // The vocabulary the model was built with (its HF config.json, or model.arch).
  const fs::path hf_cfg = fs::path(cfg.model.path) / "config.json";
  const nn::LlamaConfig model_arch = !cfg.model.path.empty() && fs::exists(hf_cfg)
                                        ? io::load_hf_config(hf_cfg.string())
                                        : cfg.model.arch;
  const int64_t model_vocab = model_arch.vocab_size;
  // recompute_states acts on the tensor-core Lizard path only: say so where it cannot.
  if (cfg.recompute_states && !cfg.recompute && !cfg.recompute_attention && rank == 0 &&
      (!dev.is_cuda() || !lizard_states_recomputable(step_shape_of(cfg, model_arch, dtype))))
    std::fprintf(stderr,
                 "warning: recompute_states has no effect here: only the bf16 CUDA Lizard kernels "
                 "(head dim and feature_dim multiples of 16, head dim <= 128, feature_dim <= 128) "
                 "rebuild the states; this run keeps them\n");

  LZ_INPUT_CHECK(!cfg.data.path.empty(), "data.path: no dataset given (write one with `lizard prepare-data`)");
  auto data = std::make_shared<const io::TokenDataset>(io::TokenDataset::open(cfg.data.path));
  // A dataset made with another tokenizer trains garbage (or indexes past the embedding):
  // compare its vocabulary size, and its tokenizer hash with model.path's tokenizer.json.
  const fs::path tok_json = fs::path(cfg.model.path) / "tokenizer.json";
  const std::string tok_hash =
      !cfg.model.path.empty() && fs::exists(tok_json) ? file_hash(tok_json.string()) : "";
  auto check_tokenizer = [&](const io::TokenDataset& ds, const char* key) {
    LZ_INPUT_CHECK(ds.meta().vocab_size <= model_vocab, key, " ", ds.path(),
                   ": tokenized for a vocabulary of ", ds.meta().vocab_size,
                   " tokens but the model has ", model_vocab,
                   " (another tokenizer?); re-run `lizard prepare-data` with the model's tokenizer");
    const std::string& h = ds.meta().tokenizer_hash;
    const bool file_hashed = h.size() == 16 && h.find_first_not_of("0123456789abcdef") == std::string::npos;
    LZ_INPUT_CHECK(tok_hash.empty() || !file_hashed || h == tok_hash, key, " ", ds.path(),
                   ": tokenized with a tokenizer.json of hash ", h, " but model.path's ",
                   tok_json.string(), " has hash ", tok_hash,
                   "; re-run `lizard prepare-data --tokenizer ", cfg.model.path, "`");
  };
  check_tokenizer(*data, "data.path");
  LoaderOptions lo;
  lo.seq_len = cfg.data.seq_len;
  lo.micro_batch = cfg.data.micro_batch;
  lo.shuffle = cfg.data.shuffle;
  lo.whole_documents = cfg.data.pack == "documents";
  lo.seed = cfg.seed;
  lo.use_loss_mask = cfg.loss_on != "all";
  lo.rank = rank;
  lo.world = world;
  std::vector<int64_t> train_docs, val_docs;
  std::shared_ptr<const io::TokenDataset> val_data;
  if (!cfg.data.val_path.empty()) {
    val_data = std::make_shared<const io::TokenDataset>(io::TokenDataset::open(cfg.data.val_path));
    check_tokenizer(*val_data, "data.val_path");
    for (int64_t i = 0; i < data->num_docs(); ++i) train_docs.push_back(i);
    for (int64_t i = 0; i < val_data->num_docs(); ++i) val_docs.push_back(i);
  } else {
    std::tie(train_docs, val_docs) = split_documents(data->num_docs(), cfg.data.val_fraction);
    val_data = data;
  }
  DataLoader train_loader(data, train_docs, lo);
  LoaderOptions vo = lo;
  vo.shuffle = false;
  std::unique_ptr<DataLoader> val_loader;
  if (!val_docs.empty()) val_loader = std::make_unique<DataLoader>(val_data, val_docs, vo);
  TrainerOptions to;
  to.resume = resume;
  to.stop_after = stop_after;
  to.print = rank == 0;
  if (dev.is_cuda()) to.device_name = cuda::context(dev.index).name;
  std::unique_ptr<StepTimer> timer;
  if (cfg.metrics.phases) {
    timer = std::make_unique<StepTimer>(dev, 1);  // the trainer logs the last step only
    to.timer = timer.get();
  }
  DistHooks hooks;
  std::unique_ptr<dist::DataParallel> dp;
  if (world > 1) {
    dist::DataParallelOptions o;
    o.bucket_bytes = static_cast<size_t>(cfg.dist.bucket_mb) << 20;
    // Recomputed blocks give their parameters gradients in a nested backward that the
    // leaf-ready hook cannot see: reduce after backward instead.
    o.overlap = cfg.dist.overlap && !cfg.recompute;
    o.zero1 = cfg.dist.zero1;
    if (cfg.dist.sparse_embedding_grad)
      if (const auto* mt = dynamic_cast<const ModelTask*>(task.get()))
        o.sparse_rows = mt->row_sparse_embedding();
    dp = std::make_unique<dist::DataParallel>(*comm, task->parameters(), o);
    if (o.sparse_rows.defined())
      dist::log_rank0_cat(*comm, "dist: the gradient of ", o.sparse_rows.name(),
                          " is summed over ranks as the rows of each step's tokens "
                          "(dist.sparse_embedding_grad)");
    dist::DataParallel* d = dp.get();
    hooks.rank = rank;
    hooks.world = world;
    hooks.allreduce_sum = [d](double* v, int n) { d->allreduce_sum(v, n); };
    hooks.allreduce_grads = [d](const std::vector<Var>&) { d->finish_grad_sync(); };
    hooks.grads_prepare = [d] { d->prepare_grads(); };
    hooks.barrier = [d] { d->barrier(); };
    if (o.sparse_rows.defined()) {
      // The embedding rows each rank's gradient can touch: its inputs' token ids.
      hooks.step_batches = [d](const std::vector<Batch>& batches) {
        std::vector<Tensor> ids;
        for (const Batch& b : batches) ids.push_back(b.inputs);
        d->set_step_ids(ids);
      };
    }
    if (o.overlap) {
      hooks.grads_begin = [d] { d->begin_grad_sync(); };
      hooks.grad_ready = [d](autograd::VarImpl* leaf) { d->on_leaf_ready(leaf); };
    }
    if (o.zero1) {
      hooks.optimizer_shard = [d](const std::vector<Var>& ps) { return d->owned_params(ps); };
      hooks.sync_params = [d] { d->sync_params(); };
    }
  }
  Trainer trainer(cfg, *task, train_loader, val_loader.get(), hooks, to);
  return trainer.run();
}

}  // namespace lizard::train
