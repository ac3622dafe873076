// GPU side of the Lizard test cases (tests/lizard/lizard_case.h): a case's inputs and
// parameters on the GPU, and whether this process forces the exact f32 kernels.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lizard/core/error.h"

#include "gpu_test_util.h"
#include "lizard/ops/lizard_attention.h"
#include "../lizard/lizard_case.h"

namespace lizard::test {

struct GpuArgs {
  ops::LizardInputs in;
  ops::LizardParams p;
};

/// The case's inputs as bf16 (RoPE tables f32, when the case has them) and its parameters as
/// f32 on GPU 0: what a bf16 training run hands the op.
inline GpuArgs to_gpu(const LizardCase& c) {
  const Device gpu = Device::cuda(0);
  GpuArgs a;
  a.in.q = c.in.q.to(gpu, DType::BF16);
  a.in.k = c.in.k.to(gpu, DType::BF16);
  a.in.v = c.in.v.to(gpu, DType::BF16);
  a.in.x = c.in.x.to(gpu, DType::BF16);
  if (c.in.cos.defined()) a.in.cos = c.in.cos.to(gpu, DType::F32), a.in.sin = c.in.sin.to(gpu, DType::F32);
  for (auto [src, dst] : {std::pair{&c.p.wq, &a.p.wq}, {&c.p.wk, &a.p.wk}, {&c.p.w_g, &a.p.w_g},
                          {&c.p.b_g, &a.p.b_g}, {&c.p.tau, &a.p.tau}, {&c.p.alpha, &a.p.alpha}})
    if (src->defined()) *dst = src->to(gpu, DType::F32);
  return a;
}

/// Whether this process forces the f32 kernels (LIZARD_ATTENTION_KERNELS=f32): otherwise
/// training and inference take the tensor cores where they cover the shape (the default, see
/// cuda::lizard_attention_kernel_path).
inline bool f32_forced() {
  const char* e = std::getenv("LIZARD_ATTENTION_KERNELS");
  return e && std::string(e) == "f32";
}

/// What a training step and an inference forward of a case give on the GPU.
struct GpuPasses {
  Tensor y, y_inf;          ///< training forward output, inference forward output
  ops::LizardSaved saved;   ///< what the training forward saved for backward
  ops::LizardGrads g;       ///< the backward of the training forward
};

/// Training forward (saved), backward (dy in bf16) and an inference forward of the case on
/// GPU 0 (to_gpu), with the environment variable `var` set to `value` for the three calls
/// (null: unset, the default kernels).
inline GpuPasses run_passes(const LizardCase& c, const Tensor& dy, const char* var, const char* value) {
  ScopedEnv env(var, value);
  const auto [in, p] = to_gpu(c);
  GpuPasses r;
  r.y = ops::lizard_attention_forward(c.cfg, in, p, &r.saved);
  r.g = ops::lizard_attention_backward(c.cfg, in, p, r.saved, dy.to(Device::cuda(0), DType::BF16));
  r.y_inf = ops::lizard_attention_forward(c.cfg, in, p, nullptr);
  return r;
}

/// The gradients of a training forward (saved) and its backward of the case on GPU 0
/// (to_gpu, dy in bf16), with the backward's `want` mask.
inline ops::LizardGrads gpu_grads(const LizardCase& c, const Tensor& dy,
                                  const ops::LizardWants& want = {}) {
  const auto [in, p] = to_gpu(c);
  ops::LizardSaved saved;
  ops::lizard_attention_forward(c.cfg, in, p, &saved);
  return ops::lizard_attention_backward(c.cfg, in, p, saved, dy.to(Device::cuda(0), DType::BF16), want);
}

/// A feature-map test case: batch, length, heads, kv heads, head dim, feature dim, and the map
/// (exp or softmax).
struct FeatureShape {
  int64_t B, T, H, Hkv, D, F;
  bool exp;
  std::string str() const {
    return "B " + std::to_string(B) + " T " + std::to_string(T) + " H " + std::to_string(H) + " Hkv " +
           std::to_string(Hkv) + " D " + std::to_string(D) + " F " + std::to_string(F) +
           (exp ? " exp" : " softmax");
  }
};

/// The case of a feature-map test (window 40, 4 sinks, q and k scaled by 0.5, gate bias 1) with
/// its inputs rounded to bf16 once, so an f64 reference sees exactly what the kernels see.
inline LizardCase feature_case(const FeatureShape& sh, uint64_t seed) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 40;
  cfg.sinks = 4;
  cfg.feature_activation = sh.exp ? ops::FeatureActivation::Exp : ops::FeatureActivation::Softmax;
  LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, 8, seed, DType::F64, 0.5, 1.0);
  for (Tensor* t : {&c.in.q, &c.in.k, &c.in.v, &c.in.x}) *t = t->to(DType::BF16).to(DType::F64);
  return c;
}

/// An unknown value of the kernel switch `var` is an input error naming the variable, not a
/// silent default: run("fast") (which sets var to its argument and runs the op) must throw
/// an InputError whose message contains `var`.
template <class Run>
void expect_unknown_switch_rejected(const char* var, Run&& run) {
  try {
    run("fast");
    FAIL() << var << "=fast was accepted";
  } catch (const InputError& err) {
    EXPECT_NE(std::string(err.what()).find(var), std::string::npos) << err.what();
  }
}

}  // namespace lizard::test
