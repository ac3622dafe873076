// The training loop (see include/lizard/train/trainer.h).
#include "lizard/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "lizard/autograd/functions.h"
#include "lizard/core/error.h"
#include "lizard/core/storage.h"
#include "lizard/optim/adamw.h"
#include "lizard/optim/schedule.h"
#include "lizard/train/metrics.h"

namespace lizard::train {

namespace fs = std::filesystem;
using autograd::Var;

NamedTensors TrainTask::state_tensors() {
  NamedTensors out;
  for (const Var& p : parameters()) {
    LZ_CHECK(!p.name().empty(), "TrainTask: a trainable parameter has no name");
    out.emplace_back(p.name(), p.data());
  }
  return out;
}

void TrainTask::load_state(const NamedTensors& tensors) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : tensors) by_name[n] = &t;
  for (Var& p : parameters()) {
    auto it = by_name.find(p.name());
    LZ_INPUT_CHECK(it != by_name.end(), "checkpoint: tensor '", p.name(), "' is missing");
    LZ_INPUT_CHECK(it->second->shape() == p.shape(), "checkpoint: tensor '", p.name(),
                   "' has shape ", shape_str(it->second->shape()), ", the model expects ",
                   shape_str(p.shape()));
    Tensor dst = p.data();
    dst.copy_(*it->second);
  }
}

namespace {

/// Name of the first parameter whose gradient holds a NaN/Inf, or "" (debug path: copies).
std::string first_nonfinite_grad(const std::vector<Var>& params) {
  for (const Var& p : params) {
    if (!p.grad().defined()) continue;
    for (double v : p.grad().to(Device::cpu()).to_vector())
      if (!std::isfinite(v)) return p.name().empty() ? std::string("(unnamed)") : p.name();
  }
  return "";
}

}  // namespace

Trainer::StepScalars Trainer::read_step_scalars(const std::vector<Tensor>& micro_losses) const {
  StepScalars out;
  const bool gpu = !micro_losses.empty() && micro_losses[0].is_cuda();
  // f32 holds a bf16/f16/f32 loss exactly, so the batched read changes no bit; anything else
  // (and the CPU, where a read costs nothing) takes the one-by-one path.
  bool batch = gpu;
  for (const Tensor& l : micro_losses)
    batch = batch && l.numel() == 1 && l.is_cuda() && l.device() == micro_losses[0].device() &&
            (l.dtype() == DType::F32 || l.dtype() == DType::BF16 || l.dtype() == DType::F16);
  if (!batch) {
    for (const Tensor& l : micro_losses) out.losses.push_back(l.item());
    return out;
  }
  // The parameters AdamW::step would take the norm over (its groups in order), or all of them
  // under ZeRO-1: the same list, so the same kernel partition and the same bits.
  std::vector<Var> norm_params = norm_params_;
  if (norm_params.empty())
    for (const auto& g : optim_->groups())
      norm_params.insert(norm_params.end(), g.params.begin(), g.params.end());
  const optim::GradSumSquares sq = optim::grad_sum_squares(norm_params);
  const bool device_norm = sq.device_sum.defined() && sq.device_sum.device() == micro_losses[0].device();
  const int64_t n = static_cast<int64_t>(micro_losses.size());
  Tensor all = Tensor::empty({n + (device_norm ? 1 : 0)}, DType::F32, micro_losses[0].device());
  for (int64_t i = 0; i < n; ++i) {
    Tensor slot = all.slice(0, i, i + 1);
    slot.copy_(micro_losses[static_cast<size_t>(i)].reshape({1}));
  }
  if (device_norm) {
    Tensor slot = all.slice(0, n, n + 1);
    slot.copy_(sq.device_sum);
  }
  out.losses = all.to_vector();  // the one device-to-host transfer of the step
  double total = sq.host_sum;
  if (device_norm) {
    total += out.losses.back();
    out.losses.pop_back();
  } else if (sq.device_sum.defined()) {
    total += sq.device_sum.item();
  }
  out.grad_norm = std::sqrt(total);
  return out;
}

Trainer::Trainer(RunConfig cfg, TrainTask& task, DataLoader& train, DataLoader* val,
                 DistHooks dist, TrainerOptions opt)
    : cfg_(std::move(cfg)), task_(task), train_(train), val_(val), dist_(std::move(dist)),
      opt_(std::move(opt)), rng_(cfg_.seed) {
  accum_ = grad_accum_steps(cfg_, dist_.world);
  total_steps_ = cfg_.schedule.steps;
  if (total_steps_ == 0) {
    const double seqs = cfg_.schedule.epochs * static_cast<double>(train_.sequences_per_epoch());
    total_steps_ = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(seqs / cfg_.data.global_batch)));
  }
  params_ = task_.parameters();
  LZ_INPUT_CHECK(!params_.empty(), "stage '", cfg_.name, "': no trainable parameters");
  optim::AdamWOptions ao;
  ao.beta1 = cfg_.optimizer.betas[0];
  ao.beta2 = cfg_.optimizer.betas[1];
  ao.eps = cfg_.optimizer.eps;
  std::vector<Var> mine = params_;
  if (dist_.optimizer_shard) {
    // ZeRO-1: this rank keeps the state of its shard only; the clip norm is taken over all
    // parameters in the order the unsharded optimizer would use (same norm bit for bit).
    for (const auto& g : optim::make_param_groups(params_, cfg_.optimizer.weight_decay))
      norm_params_.insert(norm_params_.end(), g.params.begin(), g.params.end());
    mine = dist_.optimizer_shard(params_);
  }
  optim_ = std::make_unique<optim::AdamW>(
      optim::make_param_groups(mine, cfg_.optimizer.weight_decay), ao);
}

Trainer::~Trainer() = default;

double Trainer::validate() {
  LZ_CHECK(val_ != nullptr, "validate: no validation data");
  autograd::NoGradGuard no_grad;
  val_->set_position(0);
  int64_t n = cfg_.eval.batches;
  if (n == 0)
    n = std::max<int64_t>(1, val_->sequences_per_epoch() / (dist_.world * cfg_.data.micro_batch));
  double sums[2] = {0, 0};  // loss sum, count
  for (int64_t i = 0; i < n; ++i) {
    Batch b = val_->next();
    StepContext ctx{0, static_cast<int>(i), false, &rng_};
    LossResult r = task_.loss(b, ctx);
    sums[0] += r.loss_sum.data().item();
    sums[1] += static_cast<double>(r.count);
  }
  if (dist_.allreduce_sum) dist_.allreduce_sum(sums, 2);
  return sums[0] / std::max(sums[1], 1.0);
}

void Trainer::save(int64_t step) {
  TrainState st;
  st.step = step;
  st.data_position = train_.position();
  st.rng_seed = rng_.seed();
  st.rng_offset = rng_.offset();
  st.tokens_seen = tokens_seen_;
  save_checkpoint((fs::path(cfg_.out_dir) / "checkpoints").string(), step, task_.state_tensors(),
                  *optim_, st, config_to_yaml(cfg_), dist_.rank, dist_.world,
                  cfg_.checkpoint.keep_last, dist_.barrier);
}

TrainSummary Trainer::run() {
  using clock = std::chrono::steady_clock;
  const bool lead = dist_.rank == 0;
  const std::string ckpt_root = (fs::path(cfg_.out_dir) / "checkpoints").string();
  TrainSummary sum;
  int64_t step = 0;
  if (opt_.resume) {
    if (auto dir = find_last_checkpoint(ckpt_root)) {
      task_.load_state(load_checkpoint_model(*dir));
      TrainState st = load_checkpoint_state(*dir, *optim_, dist_.rank, dist_.world);
      step = st.step;
      train_.set_position(st.data_position);
      rng_.set_state(st.rng_seed, st.rng_offset);
      tokens_seen_ = st.tokens_seen;
      sum.last_checkpoint = *dir;
    }
  }
  sum.start_step = step;
  ProgressPrinter printer(stdout);
  std::unique_ptr<MetricsWriter> metrics;
  if (lead) {
    fs::create_directories(cfg_.out_dir);
    std::ofstream(fs::path(cfg_.out_dir) / "config.yaml") << config_to_yaml(cfg_);
    metrics = std::make_unique<MetricsWriter>(
        cfg_.metrics.file.empty() ? "" : (fs::path(cfg_.out_dir) / cfg_.metrics.file).string());
    if (opt_.print) {
      printer.message(str_cat("stage '", cfg_.name, "': ", total_steps_, " steps of ",
                              cfg_.data.global_batch, " x ", cfg_.data.seq_len, " tokens (",
                              accum_, " accumulation x ", dist_.world, " ranks)",
                              step > 0 ? str_cat(", resumed at step ", step) : std::string()));
      const double peak_flops = peak_flops_for(opt_.device_name);
      if (!task_.flops_formula().empty())
        printer.message(str_cat("mfu: flops/token = ", task_.flops_formula(), " over ",
                                peak_flops > 0 ? str_cat(peak_flops / 1e12, " TFLOP/s bf16 dense peak per GPU")
                                               : std::string("no known peak for this device (mfu not shown)")));
    }
  }
  optim::Schedule sched{optim::schedule_kind(cfg_.schedule.name), cfg_.optimizer.lr, total_steps_,
                        cfg_.schedule.warmup, cfg_.schedule.floor};
  const double peak = peak_flops_for(opt_.device_name) * dist_.world;
  const auto t_start = clock::now();
  const int64_t first_step = step;
  // Non-finite streak guard: each non-finite step is skipped and counted; max_skips in a row
  // stop the run, naming (with debug_nonfinite) the first module whose output went non-finite.
  const int64_t max_skips =
      opt_.max_consecutive_skips >= 0 ? opt_.max_consecutive_skips : cfg_.max_nonfinite_steps;
  const char* debug_env = std::getenv("LIZARD_DEBUG_NONFINITE");
  const bool debug_nonfinite =
      cfg_.debug_nonfinite || (debug_env && std::string(debug_env) == "1");
  int64_t consecutive_skips = 0, loss_skips = 0;
  Batch suspect{};      // debug: the batch of the last step, for locate_nonfinite
  std::string bad_grad;  // debug: the first parameter with a non-finite gradient
  while (step < total_steps_) {
    const auto t0 = clock::now();
    StepTimer* timer = opt_.timer;
    if (timer) timer->begin_step();
    mark_phase(timer, Phase::Data);
    std::vector<Batch> batches;
    double counts[1] = {0};
    for (int64_t i = 0; i < accum_; ++i) {
      batches.push_back(train_.next());
      counts[0] += static_cast<double>(batches.back().num_targets);
    }
    if (dist_.allreduce_sum) dist_.allreduce_sum(counts, 1);
    if (dist_.step_batches) dist_.step_batches(batches);
    // Normalising by the global count makes the gradient the mean over every counted
    // position of the step, whatever the accumulation and the number of ranks.
    const double inv = 1.0 / std::max(counts[0], 1.0);
    for (Var& p : params_) p.zero_grad();  // all of them: a ZeRO-1 optimizer holds a shard
    if (dist_.grads_prepare) dist_.grads_prepare();
    double loss_sum[1] = {0};
    int bad_micro = -1;  // the first micro-batch with a non-finite loss
    // Each micro-batch's loss stays on the device until the step's gradients are queued: a
    // read per micro-batch would stall the host between forward and backward.
    std::vector<Tensor> micro_losses;
    for (int64_t i = 0; i < accum_; ++i) {
      StepContext ctx{step, static_cast<int>(i), true, &rng_, timer};
      mark_phase(timer, Phase::Forward);
      LossResult r = task_.loss(batches[i], ctx);
      micro_losses.push_back(r.loss_sum.data());
      mark_phase(timer, Phase::Backward);
      Var scaled = autograd::scale(r.loss_sum, inv);
      if (i + 1 == accum_ && dist_.grads_begin) {
        // The last backward of the step: gradients become final as it runs, so each bucket's
        // all-reduce starts while backward goes on through the earlier layers.
        dist_.grads_begin();
        autograd::backward({scaled}, {}, false, dist_.grad_ready);
      } else {
        scaled.backward();
      }
    }
    mark_phase(timer, Phase::Communication);
    if (dist_.allreduce_grads) dist_.allreduce_grads(params_);
    mark_phase(timer, Phase::Sync);
    // Every read of the device stalls the host until the GPU has drained its queue, and the
    // GPU then idles until the host queues more. On a GPU the step's losses and the gradient
    // norm's sum of squares (queued now, after the reduced gradients) come back in ONE
    // transfer; on the CPU nothing waits and the norm is taken by the optimizer as before.
    const StepScalars scalars = read_step_scalars(micro_losses);
    micro_losses.clear();
    // Summed in micro-batch order as before: the same bits as reading each after its forward.
    for (size_t i = 0; i < scalars.losses.size(); ++i) {
      const double li = scalars.losses[i];
      if (!std::isfinite(li) && bad_micro < 0) bad_micro = static_cast<int>(i);
      loss_sum[0] += li;
    }
    if (debug_nonfinite) suspect = batches[std::max(bad_micro, 0)];
    batches.clear();
    if (dist_.allreduce_sum) dist_.allreduce_sum(loss_sum, 1);
    mark_phase(timer, Phase::Optimizer);
    const double lr = sched.lr_at(step);
    // A non-finite loss skips the step even when the gradients are finite (an Inf loss can
    // have finite gradients); AdamW skips and counts non-finite gradients itself. The loss is
    // all-reduced, so every rank takes the same branch.
    optim::StepResult res;
    if (std::isfinite(loss_sum[0])) {
      if (scalars.grad_norm)
        res = optim_->step_with_norm(lr, cfg_.optimizer.clip, *scalars.grad_norm);
      else if (norm_params_.empty())
        res = optim_->step(lr, cfg_.optimizer.clip);
      else
        res = optim_->step_with_norm(lr, cfg_.optimizer.clip, optim::global_grad_norm(norm_params_));
    } else {
      res.skipped = true;
      res.grad_norm = std::nan("");
      ++loss_skips;
    }
    if (res.skipped && debug_nonfinite) bad_grad = first_nonfinite_grad(params_);
    if (dist_.sync_params) dist_.sync_params();
    for (Var& p : params_) p.zero_grad();
    if (timer) timer->end_step();
    ++step;
    const int64_t step_tokens = cfg_.data.global_batch * cfg_.data.seq_len;
    tokens_seen_ += step_tokens;
    const double loss = loss_sum[0] * inv;
    sum.losses.push_back(loss);
    consecutive_skips = res.skipped ? consecutive_skips + 1 : 0;
    if (consecutive_skips >= max_skips) {
      std::string where;
      if (debug_nonfinite) {
        const StepContext ctx{step - 1, std::max(bad_micro, 0), false, &rng_};
        const std::string module = task_.locate_nonfinite(suspect, ctx);
        if (!module.empty())
          where = str_cat("; first module with a non-finite output: '", module, "' (step ", step,
                          ", micro-batch ", ctx.micro, ")");
        else if (!bad_grad.empty())
          where = str_cat("; the forward is finite, the first non-finite gradient is of '",
                          bad_grad, "'");
        else
          where = "; every module output was finite on re-running the forward";
      } else {
        where = "; set debug_nonfinite: true (or LIZARD_DEBUG_NONFINITE=1) to name the first "
                "module that goes non-finite";
      }
      throw Error(str_cat("stage '", cfg_.name, "': non-finite loss or gradients at ",
                          consecutive_skips, " consecutive steps (steps ",
                          step - consecutive_skips + 1, " to ", step, ", last loss ", loss,
                          "; max_nonfinite_steps ", max_skips, ")", where,
                          "; lower optimizer.lr or check the data and weights"));
    }
    if (lead && (step % cfg_.metrics.log_every == 0 || step == total_steps_)) {
      const double dt = std::chrono::duration<double>(clock::now() - t0).count();
      StepMetrics m;
      m.step = step;
      m.total = total_steps_;
      m.loss = loss;
      m.lr = lr;
      m.grad_norm = res.grad_norm;
      m.skipped = res.skipped;
      m.tokens_per_s = step_tokens / std::max(dt, 1e-9);
      m.mfu = peak > 0 ? task_.flops_per_token() * m.tokens_per_s / peak : 0;
      const Device dev = Device::parse(cfg_.device);
      if (dev.is_cuda() && cuda_available()) m.memory_gib = memory_stats(dev.index).peak / 1073741824.0;
      m.elapsed_s = std::chrono::duration<double>(clock::now() - t_start).count();
      m.first_step = first_step;
      if (opt_.print) printer.step(m);
      if (metrics) {
        JsonFields f = step_fields(m);
        if (timer && !timer->steps().empty()) {
          // The last step's split (with log_every > 1 the others are not written).
          const StepTiming& st = timer->steps().back();
          f.emplace_back("ms_step", st.total_ms);
          for (int k = 0; k < kNumPhases; ++k)
            if (st.phase_ms[k] > 0)
              f.emplace_back(std::string("ms_") + phase_name(static_cast<Phase>(k)), st.phase_ms[k]);
        }
        metrics->write("train", f);
      }
    }
    if (val_ && cfg_.eval.every > 0 && (step % cfg_.eval.every == 0 || step == total_steps_)) {
      const double vl = validate();
      sum.val_losses.push_back(vl);
      if (lead) {
        if (metrics) metrics->write("val", {{"step", double(step)}, {"loss", vl}, {"ppl", std::exp(vl)}});
        if (opt_.print) printer.message(str_cat("step ", step, ": validation loss ", vl, " (ppl ", std::exp(vl), ")"));
      }
    }
    const bool ckpt_due = cfg_.checkpoint.every > 0 && step % cfg_.checkpoint.every == 0;
    if (ckpt_due || step == total_steps_) {
      save(step);
      sum.last_checkpoint = checkpoint_path(ckpt_root, step);
    }
    if (opt_.stop_after >= 0 && step >= opt_.stop_after) break;
  }
  if (lead && opt_.print) printer.finish();
  sum.final_step = step;
  sum.skipped_steps = optim_->skipped_steps() + loss_skips;
  return sum;
}

}  // namespace lizard::train
