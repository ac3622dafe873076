// The Lizard backward's gradient buffers (issue #5): on the tensor-core path the window
// backward stores (does not add) its dq, dk, dv rows into unzeroed f32 buffers, the split q
// feature backward writes dq as bf16(window part + du W^T) straight into the output, and the
// gate writes dx in the dtype of q. Every one of those outputs must be written whole by its
// first (or only) writer. The caching allocator is filled with NaN-poisoned blocks of exactly
// the sizes these buffers take, so a row that no kernel writes (or one still added into)
// comes back NaN instead of a stale but plausible value; the gradients must equal those of a
// run on unpoisoned memory. At awkward shapes: T not a multiple of the 64-row CTAs or the
// 16-token feature units, GQA groups 1 and 4, D 32 / 64 / 128, window RoPE on and off (the
// split-score window kernels), both feature backward kernels (the fused one, a bisection
// path, writes f32 and rounds after).
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "lizard/core/storage.h"
#include "lizard/ops/lizard_attention.h"
#include "gpu_test_util.h"
#include "lizard_gpu_case.h"
#ifdef LIZARD_WITH_CUDA
#include "lizard/cuda/lizard_attention.h"
#endif

namespace lizard::test {
namespace {

struct BufShape {
  int64_t B, T, H, Hkv, D, F, dm;
  bool rope;
  std::string str() const {
    return "B " + std::to_string(B) + " T " + std::to_string(T) + " H " + std::to_string(H) +
           " Hkv " + std::to_string(Hkv) + " D " + std::to_string(D) + " F " + std::to_string(F) +
           " dm " + std::to_string(dm) + (rope ? " rope" : "");
  }
};

LizardCase buffers_case(const BufShape& sh) {
  ops::LizardConfig cfg;
  cfg.feature_dim = sh.F;
  cfg.window = 40;
  cfg.sinks = 4;
  cfg.window_rope = sh.rope;
  LizardCase c = make_case(cfg, sh.B, sh.T, sh.H, sh.Hkv, sh.D, sh.dm, 5100 + sh.T + sh.D, DType::F64, 0.5, 1.0);
  for (Tensor* t : {&c.in.q, &c.in.k, &c.in.v, &c.in.x}) *t = t->to(DType::BF16).to(DType::F64);
  return c;
}

/// Empties the allocator's cache, then leaves it holding only NaN-filled blocks: `copies` of
/// each shape of q, k, v, x in f32 and bf16 (the gradient buffers' exact sizes, so the
/// allocator's best fit hands them to those buffers).
void poison_cache(const LizardCase& c, int copies) {
  empty_cache(0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<Tensor> held;
  for (const Tensor* like : {&c.in.q, &c.in.k, &c.in.v, &c.in.x})
    for (DType dt : {DType::F32, DType::BF16})
      for (int i = 0; i < copies; ++i) held.push_back(Tensor::full(like->shape(), nan, dt, Device::cuda(0)));
  // `held` goes out of scope: its blocks return to the cache, NaN inside
}

void expect_poison_free(const BufShape& sh, const char* features_kernel) {
  ScopedEnv env("LIZARD_FEATURES_BWD_KERNEL", features_kernel);
  const LizardCase c = buffers_case(sh);
  const std::string what = sh.str() + (features_kernel ? " features_bwd=old" : "");
#ifdef LIZARD_WITH_CUDA  // CPU-only builds skip before this; the path query exists with CUDA only
  {
    const auto [in, p] = to_gpu(c);
    const cuda::LizardKernelPath path = cuda::lizard_attention_kernel_path(c.cfg, in, p, true);
    ASSERT_TRUE(path.global_tc && path.window_tc) << what << ": the case must take the tensor-core kernels";
  }
#endif
  const Tensor dy = rand(c.in.q.shape(), 97, DType::F64);
  const ops::LizardGrads ref = gpu_grads(c, dy);
  // stage 1 (no dq wanted: the q feature backward adds into the f32 scratch only, no output)
  ops::LizardWants no_dq;
  no_dq.dq = false;
  for (const ops::LizardWants& want : {ops::LizardWants{}, no_dq}) {
    poison_cache(c, 4);
    const ops::LizardGrads got = gpu_grads(c, dy, want);
    const std::string w = what + (want.dq ? "" : " (dq not wanted)");
    EXPECT_EQ(got.dq.defined(), want.dq) << w;
    // A row left unwritten is NaN (caught by all_finite, and rel_err is NaN: the EXPECT_LE
    // fails); one added into a stale block is off by O(1). The values otherwise equal the
    // unpoisoned run's up to the order of the f32 atomics of the GQA sums (dk, dv), the
    // parameter gradients and the log-gate gradient that dx sums (then one bf16 rounding: a
    // rare element one bf16 ulp off, ~1e-4 norm-wise at most), so 1e-3.
    for (auto [name, g, r] : {std::tuple{"dq", &got.dq, &ref.dq}, {"dk", &got.dk, &ref.dk},
                              {"dv", &got.dv, &ref.dv}, {"dx", &got.dx, &ref.dx},
                              {"dwq", &got.dwq, &ref.dwq}, {"dwk", &got.dwk, &ref.dwk}}) {
      if (!g->defined()) continue;
      EXPECT_EQ(g->dtype(), r->dtype()) << w << " " << name;
      EXPECT_TRUE(all_finite(*g)) << w << " " << name << ": a poisoned (unwritten) element came back";
      EXPECT_LE(rel_err(f64(*g), f64(*r)), 1e-3)
          << w << " " << name;
    }
  }
  // the reference's dq, dx come back in the dtype of q (bf16), as before the direct writes
  EXPECT_EQ(ref.dq.dtype(), DType::BF16) << what;
  EXPECT_EQ(ref.dx.dtype(), DType::BF16) << what;
}

TEST(LizardBackwardBuffersGpu, PoisonedBuffersAreWrittenWhole) {
  LZ_REQUIRE_GPU();
  if (f32_forced()) GTEST_SKIP() << "LIZARD_ATTENTION_KERNELS=f32 forces the f32 kernels";
  for (const BufShape& sh : {BufShape{2, 65, 4, 1, 128, 128, 300, false},
                             BufShape{1, 333, 8, 2, 64, 48, 96, true},
                             BufShape{3, 70, 4, 4, 32, 16, 40, true}}) {
    expect_poison_free(sh, nullptr);
    expect_poison_free(sh, "old");
  }
}

}  // namespace
}  // namespace lizard::test
