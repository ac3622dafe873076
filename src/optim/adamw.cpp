// AdamW, clipping and the skip of non-finite steps (see include/lizard/optim/adamw.h).
#include "lizard/optim/adamw.h"

#include <cmath>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#ifdef LIZARD_WITH_CUDA
#include "lizard/cuda/adamw.h"
#endif

namespace lizard::optim {

using autograd::Var;

namespace {

/// The CPU update of one tensor, in the master dtype T (f32 or f64).
template <class T>
void adamw_cpu(T* w, T* m, T* v, const T* g, int64_t n, double lr, double b1, double b2,
               double eps, double wd, double scale, int64_t t) {
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
  for (int64_t i = 0; i < n; ++i) {
    const double gi = static_cast<double>(g[i]) * scale;
    const double mi = b1 * m[i] + (1.0 - b1) * gi;
    const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double upd = (mi / bc1) / (std::sqrt(vi / bc2) + eps) + wd * w[i];
    w[i] = static_cast<T>(w[i] - lr * upd);
  }
}

}  // namespace

std::vector<ParamGroup> make_param_groups(const std::vector<Var>& params, double weight_decay) {
  ParamGroup decay{{}, weight_decay}, no_decay{{}, 0.0};
  for (const Var& p : params) {
    if (!p.requires_grad()) continue;
    (p.dim() >= 2 ? decay : no_decay).params.push_back(p);
  }
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(std::move(decay));
  if (!no_decay.params.empty()) out.push_back(std::move(no_decay));
  return out;
}

GradSumSquares grad_sum_squares(const std::vector<Var>& params) {
  GradSumSquares r;
  std::vector<Tensor> cuda_grads;
  for (const Var& p : params) {
    const Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (g.is_cuda()) {
      cuda_grads.push_back(g);
      continue;
    }
    for (double x : g.to_vector()) r.host_sum += x * x;
  }
  if (!cuda_grads.empty()) {
    // One device per process (data parallel), so one launch covers every CUDA gradient.
    r.device_sum = Tensor::empty({1}, DType::F32, cuda_grads[0].device());  // overwritten
    LZ_CUDA_ONLY(cuda::sum_squares(cuda_grads, r.device_sum, cuda::stream_of(r.device_sum)));
  }
  return r;
}

double global_grad_norm(const std::vector<Var>& params) {
  const GradSumSquares s = grad_sum_squares(params);
  double total = s.host_sum;
  if (s.device_sum.defined()) total += s.device_sum.item();
  return std::sqrt(total);
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opt)
    : groups_(std::move(groups)), opt_(opt) {
  int64_t index = 0;
  for (const ParamGroup& grp : groups_) {
    for (const Var& p : grp.params) {
      LZ_CHECK(p.defined() && p.is_leaf(), "AdamW: parameter ", index, " is not a leaf");
      State s;
      s.param = p;
      s.weight_decay = grp.weight_decay;
      s.key = p.name().empty() ? str_cat("param", index) : p.name();
      const DType master_dt = p.dtype() == DType::F64 ? DType::F64 : DType::F32;
      s.master = p.dtype() == master_dt ? Tensor() : p.data().to(master_dt);
      s.m = Tensor::zeros(p.shape(), master_dt, p.device());
      s.v = Tensor::zeros(p.shape(), master_dt, p.device());
      states_.push_back(std::move(s));
      ++index;
    }
  }
}

void AdamW::zero_grad() {
  for (State& s : states_) s.param.zero_grad();
}

StepResult AdamW::step(double lr, double max_norm) {
  std::vector<Var> params;
  for (const State& s : states_) params.push_back(s.param);
  return step_with_norm(lr, max_norm, global_grad_norm(params));
}

StepResult AdamW::step_with_norm(double lr, double max_norm, double grad_norm) {
  StepResult r;
  r.grad_norm = grad_norm;
  if (!std::isfinite(r.grad_norm)) {
    r.skipped = true;
    r.clip_scale = 0;
    ++skipped_;
    return r;
  }
  if (max_norm > 0 && r.grad_norm > max_norm) r.clip_scale = max_norm / (r.grad_norm + 1e-6);
  ++t_;
  // CUDA parameters are collected per device and updated by one multi-tensor launch each (a
  // LoRA step has hundreds of small tensors: one launch apiece cost more than the updates).
  // The clip factor travels as a kernel argument: the host computed it already.
#ifdef LIZARD_WITH_CUDA
  std::vector<std::vector<cuda::AdamWTensor>> per_device;
#endif
  for (State& s : states_) {
    const Tensor& g = s.param.grad();
    if (!g.defined()) continue;
    LZ_CHECK(g.shape() == s.param.shape(), "AdamW: gradient of ", s.key, " has shape ",
             shape_str(g.shape()), ", parameter ", shape_str(s.param.shape()));
    // A master that aliases the parameter is re-read each step: loading may swap the data.
    Tensor master = s.master.defined() ? s.master : s.param.data();
    if (master.is_cuda()) {
#ifdef LIZARD_WITH_CUDA
      auto it = per_device.begin();
      while (it != per_device.end() && it->front().master.device() != master.device()) ++it;
      if (it == per_device.end()) it = per_device.emplace(per_device.end());
      it->push_back({s.param.data(), master, s.m, s.v, g.contiguous(), s.weight_decay});
#else
      LZ_CUDA_ONLY();
#endif
      continue;
    }
    LZ_CHECK(master.is_contiguous(), "AdamW: parameter ", s.key, " is not contiguous");
    const Tensor gc = g.to(Device::cpu(), master.dtype()).contiguous();
    if (master.dtype() == DType::F64) {
      adamw_cpu(master.data<double>(), s.m.data<double>(), s.v.data<double>(), gc.data<double>(),
                master.numel(), lr, opt_.beta1, opt_.beta2, opt_.eps, s.weight_decay,
                r.clip_scale, t_);
    } else {
      adamw_cpu(master.data<float>(), s.m.data<float>(), s.v.data<float>(), gc.data<float>(),
                master.numel(), lr, opt_.beta1, opt_.beta2, opt_.eps, s.weight_decay,
                r.clip_scale, t_);
    }
    if (s.master.defined()) {  // e.g. a bf16 parameter on the CPU
      Tensor param = s.param.data();
      param.copy_(s.master);
    }
  }
#ifdef LIZARD_WITH_CUDA
  cuda::AdamWHyper h;
  h.lr = lr;
  h.beta1 = opt_.beta1;
  h.beta2 = opt_.beta2;
  h.eps = opt_.eps;
  h.step = t_;
  h.clip_scale = r.clip_scale;
  for (const auto& ts : per_device) cuda::adamw_step(ts, h, cuda::stream_of(ts.front().master));
#endif
  return r;
}

void AdamW::save(io::H5File& f, const std::string& prefix) const {
  for (const State& s : states_) {
    f.write(prefix + "/" + s.key + "/m", s.m);
    f.write(prefix + "/" + s.key + "/v", s.v);
    if (s.master.defined()) f.write(prefix + "/" + s.key + "/master", s.master);
  }
  f.write(prefix + "/step", Tensor::from_data<int64_t>({t_}, {}));
  f.write(prefix + "/skipped", Tensor::from_data<int64_t>({skipped_}, {}));
}

void AdamW::load(const io::H5File& f, const std::string& prefix) {
  auto restore = [&](const std::string& key, Tensor& dst) {
    const std::string name = prefix + "/" + key;
    LZ_INPUT_CHECK(f.has(name), "checkpoint ", f.path(), ": optimizer state '", name,
                   "' is missing (another model or trainable set?)");
    Tensor t = f.read(name);
    LZ_INPUT_CHECK(t.shape() == dst.shape(), "checkpoint ", f.path(), ": '", name, "' has shape ",
                   shape_str(t.shape()), ", expected ", shape_str(dst.shape()));
    dst.copy_(t);
  };
  for (State& s : states_) {
    restore(s.key + "/m", s.m);
    restore(s.key + "/v", s.v);
    if (s.master.defined()) {
      restore(s.key + "/master", s.master);
      Tensor param = s.param.data();
      param.copy_(s.master);
    }
  }
  LZ_INPUT_CHECK(f.has(prefix + "/step"), "checkpoint ", f.path(), ": '", prefix, "/step' is missing");
  t_ = static_cast<int64_t>(f.read(prefix + "/step").item());
  skipped_ = static_cast<int64_t>(f.read(prefix + "/skipped").item());
}

}  // namespace lizard::optim
