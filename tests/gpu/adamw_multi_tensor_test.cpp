// The multi-tensor AdamW step and sum of squares (cuda/adamw.cu) over many tensors of awkward
// sizes in one call: against the CPU AdamW, batched against one tensor per call (bitwise), and
// across the 256-descriptor launch boundary. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "gpu_test_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/adamw.h"
#include "lizard/optim/adamw.h"

#ifdef LIZARD_WITH_CUDA

namespace lizard {
namespace {

using test::f64;
using test::gpu_rand;

void* st(const Tensor& t) { return cuda::stream_of(t); }

// Sizes: single elements, odd counts, one above a block (4097 > 16 x 256), and one past the
// 4096-block cap of a tensor's update (1M + 7 elements: threads take several elements).
const std::vector<Shape> kShapes{{1}, {7}, {4097}, {3, 5}, {257}, {1}, {33, 31}, {(1 << 20) + 7}, {64, 8}, {7}};

struct GpuParam {
  Tensor param, master, m, v;  // param is master itself for f32 parameters
};

GpuParam make_param(const Shape& s, DType pdt, uint64_t seed) {
  GpuParam p;
  p.master = gpu_rand(s, seed, DType::F32);
  p.param = pdt == DType::F32 ? p.master : p.master.to(pdt);
  p.m = Tensor::zeros(s, DType::F32, Device::cuda());
  p.v = Tensor::zeros(s, DType::F32, Device::cuda());
  return p;
}

TEST(GpuAdamWMultiTensor, ManyTensorsFollowTheCpuAdamW) {
  LZ_REQUIRE_GPU();
  // Every other tensor bf16 (with its f32 master), weight decay on for the even ones; three
  // steps, the gradients rescaled every step so the clip factor changes (AdamW's moments carry
  // each step's factor: a tensor updated with another one drifts off the CPU's path).
  const size_t n = kShapes.size();
  std::vector<GpuParam> gpu;
  std::vector<autograd::Var> cpu;
  std::vector<optim::ParamGroup> groups{{{}, 0.1}, {{}, 0.0}};
  for (size_t i = 0; i < n; ++i) {
    gpu.push_back(make_param(kShapes[i], i % 2 ? DType::BF16 : DType::F32, 40 + i));
    // The CPU reference: an f32 parameter holding the GPU master's values (a bf16 parameter's
    // state IS its f32 master; the bf16 copy is only written from it).
    cpu.emplace_back(gpu[i].master.to(Device::cpu()), true);
    groups[i % 2 ? 1 : 0].params.push_back(cpu[i]);
  }
  // The groups' order differs from the list's: look each tensor's decay up by index.
  optim::AdamW oc(groups);
  const double lr = 1e-2, max_norm = 0.5;
  for (int step = 1; step <= 3; ++step) {
    std::vector<cuda::AdamWTensor> ts;
    double sq = 0;
    for (size_t i = 0; i < n; ++i) {
      const DType gdt = gpu[i].param.dtype();  // gradients in the parameter's dtype
      Tensor g = gpu_rand(kShapes[i], 100 + 10 * step + i, gdt, -3.0 * step, 3.0 * step);
      cpu[i].set_grad(f64(g).to(DType::F32));  // exactly the values the GPU sees
      for (double e : f64(g).to_vector()) sq += e * e;
      ts.push_back({gpu[i].param, gpu[i].master, gpu[i].m, gpu[i].v, g, i % 2 ? 0.0 : 0.1});
    }
    const optim::StepResult rc = oc.step_with_norm(lr, max_norm, std::sqrt(sq));
    ASSERT_LT(rc.clip_scale, 0.1) << "clipping must be active for the check to mean something";
    cuda::AdamWHyper h;
    h.lr = lr;
    h.step = step;
    h.clip_scale = rc.clip_scale;
    cuda::adamw_step(ts, h, st(gpu[0].master));
  }
  for (size_t i = 0; i < n; ++i) {
    // The CPU works in double and rounds each stored value to f32; the GPU rounds every f32
    // op (~10 per element, ~1e-6 relative of an update of size lr ~ 1e-2, i.e. ~1e-8) and the
    // clip factor to f32 (6e-8 relative). With |w| < 1.1, f32 rounding of w itself is <= 6e-8
    // per step (one ulp, 1.2e-7, near |w| = 1): 3 steps stay below 4e-7. A wrong clip factor
    // or decay (lr * wd * |w| = 1e-3 |w| a step) moves w by far more.
    const double dw = test::max_abs_diff(f64(gpu[i].master), cpu[i].data().to(DType::F64));
    EXPECT_LT(dw, 1e-6) << "tensor " << i << " " << shape_str(kShapes[i]);
    if (gpu[i].param.dtype() == DType::BF16) {
      // The bf16 parameter is its master rounded once: exactly the cast of the GPU master.
      EXPECT_EQ(test::max_abs_diff(f64(gpu[i].param), f64(gpu[i].master.to(DType::BF16))), 0.0) << i;
    }
  }
}

TEST(GpuAdamWMultiTensor, OneCallEqualsOneCallPerTensorBitwise) {
  LZ_REQUIRE_GPU();
  // The update is element-wise: batching must not change a bit. 300 tensors cross the
  // 256-descriptor launch boundary.
  std::vector<GpuParam> a, b;
  std::vector<Tensor> grads;
  std::vector<Shape> shapes;
  for (size_t i = 0; i < 300; ++i) shapes.push_back(kShapes[i % kShapes.size()]);
  for (size_t i = 8; i < shapes.size(); ++i)  // one 1M tensor is enough (host-side checks)
    if (shapes[i] == kShapes[7]) shapes[i] = {4097};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const DType pdt = i % 3 == 0 ? DType::BF16 : DType::F32;
    a.push_back(make_param(shapes[i], pdt, 500 + i));
    b.push_back(make_param(shapes[i], pdt, 500 + i));
    grads.push_back(gpu_rand(shapes[i], 900 + i, i % 2 ? DType::BF16 : DType::F32));
  }
  cuda::AdamWHyper h;
  h.lr = 3e-3;
  h.clip_scale = 0.37;
  for (int step = 1; step <= 2; ++step) {
    h.step = step;
    std::vector<cuda::AdamWTensor> all;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const double wd = i % 4 == 0 ? 0.0 : 0.05;
      all.push_back({a[i].param, a[i].master, a[i].m, a[i].v, grads[i], wd});
      cuda::adamw_step({{b[i].param, b[i].master, b[i].m, b[i].v, grads[i], wd}}, h, st(grads[i]));
    }
    cuda::adamw_step(all, h, st(grads[0]));
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    ASSERT_EQ(test::max_abs_diff(f64(a[i].master), f64(b[i].master)), 0.0) << i;
    ASSERT_EQ(test::max_abs_diff(f64(a[i].m), f64(b[i].m)), 0.0) << i;
    ASSERT_EQ(test::max_abs_diff(f64(a[i].v), f64(b[i].v)), 0.0) << i;
    ASSERT_EQ(test::max_abs_diff(f64(a[i].param), f64(b[i].param)), 0.0) << i;
  }
  // Not a trivially true comparison: the step moved the weights.
  EXPECT_GT(test::max_abs_diff(f64(a[1].master), f64(gpu_rand(shapes[1], 501, DType::F32))), 1e-4);
}

TEST(GpuAdamWMultiTensor, SumOfSquaresAcrossLaunchesIsExactEnoughAndDeterministic) {
  LZ_REQUIRE_GPU();
  // 300 tensors (two partial launches), mixed f32/bf16, one with 1024 blocks, an empty one
  // skipped. Each f32 partial sums <= 1024 positive terms and the final sum the
  // partials (~1.6K), each add rounding by <= 6e-8 relative: well under 1e-5 in all. The
  // second launch's 44 tensors hold ~3% of the total: losing it fails by 3000x the margin.
  std::vector<Tensor> gs;
  double ref = 0;
  for (size_t i = 0; i < 300; ++i) {
    Shape s = kShapes[i % kShapes.size()];
    if (i > 7 && s == kShapes[7]) s = {4097};
    const Tensor g = i == 150 ? Tensor::empty({0}, DType::F32, Device::cuda())
                              : gpu_rand(s, 1200 + i, i % 2 ? DType::BF16 : DType::F32);  // [0]: skipped
    for (double e : f64(g).to_vector()) ref += e * e;
    gs.push_back(g);
  }
  Tensor out = Tensor::empty({1}, DType::F32, Device::cuda()), out2 = Tensor::empty({1}, DType::F32, Device::cuda());
  cuda::sum_squares(gs, out, st(out));
  cuda::sum_squares(gs, out2, st(out));
  EXPECT_NEAR(out.item(), ref, 1e-5 * ref);
  EXPECT_EQ(out.item(), out2.item()) << "sum_squares must be deterministic";
  // The last tensor alone: the list's tail must reach the sum too.
  Tensor last = Tensor::empty({1}, DType::F32, Device::cuda());
  cuda::sum_squares({gs.back()}, last, st(out));
  double lref = 0;
  for (double e : f64(gs.back()).to_vector()) lref += e * e;
  EXPECT_NEAR(last.item(), lref, 1e-5 * lref);
}

}  // namespace
}  // namespace lizard

#endif  // LIZARD_WITH_CUDA
