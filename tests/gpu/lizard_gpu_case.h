// GPU side of the Lizard test cases (tests/lizard/lizard_case.h): a case's inputs and
// parameters on the GPU, and whether this process forces the exact f32 kernels.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lizard/core/error.h"

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
