// Options of the Lizard backward that must not change its numbers:
// - the `want` mask (ops::LizardWants): gradients left out come back undefined, and the ones
//   asked for equal those of a full backward. Stage 2 freezes the Lizard parameters (no
//   feature-map dW, no gate parameter gradient); stage 1 needs no gradient of the frozen q, k,
//   v and x. Both through the default (split) feature backward and the fused one
//   (LIZARD_FEATURES_BWD_KERNEL=old, which accumulates into a scratch dW when none is wanted),
//   and the f32 window backward (LIZARD_ATTENTION_TC_OFF=window_bwd), whose dtau and dalpha
//   atomics a frozen sinks/alpha (dsinks false) skips like the tensor-core kernel's;
// - LizardConfig::keep_states false (recompute_states): the forward keeps no per-chunk states
//   and no feature maps, and the backward rebuilds them with the same kernels.
#include <string>
#include <tuple>

#include "lizard/ops/lizard_attention.h"
#include "gpu_test_util.h"
#include "lizard_gpu_case.h"

namespace lizard::test {
namespace {

double err(const Tensor& a, const Tensor& b) { return rel_err(f64(a), f64(b)); }

void expect_masks_keep_values(const FeatureShape& sh, const char* features_kernel) {
  ScopedEnv env("LIZARD_FEATURES_BWD_KERNEL", features_kernel);
  const LizardCase c = feature_case(sh, 4100 + sh.T);
  const std::string what = sh.str() + (features_kernel ? " features_bwd=old" : "");
  const Tensor dy = rand(c.in.q.shape(), 77, DType::F64);
  const ops::LizardGrads all = gpu_grads(c, dy, {});

  // Stage 2: frozen Lizard parameters. The same kernels run for dq, dk, dv, dx, only
  // the GQA atomics of dk and dv add in another order (f32 sums, then one bf16 rounding: a
  // rare element one bf16 ulp off, far below 1e-3 norm-wise; a missing term is O(1e-2) or more).
  ops::LizardWants s2;
  s2.dwq = s2.dwk = s2.dgate = s2.dsinks = false;
  const ops::LizardGrads g2 = gpu_grads(c, dy, s2);
  for (auto [name, got, ref] : {std::tuple{"dq", &g2.dq, &all.dq}, {"dk", &g2.dk, &all.dk},
                                {"dv", &g2.dv, &all.dv}, {"dx", &g2.dx, &all.dx}}) {
    ASSERT_TRUE(got->defined()) << what << " " << name;
    EXPECT_LE(err(*got, *ref), 1e-3) << what << " stage 2 " << name;
  }
  EXPECT_FALSE(g2.dwq.defined()) << what;
  EXPECT_FALSE(g2.dwk.defined()) << what;
  EXPECT_FALSE(g2.dw_g.defined()) << what;
  EXPECT_FALSE(g2.db_g.defined()) << what;
  EXPECT_FALSE(g2.dtau.defined()) << what;
  EXPECT_FALSE(g2.dalpha.defined()) << what;

  // Stage 1: frozen inputs. Parameter gradients are f32 sums (dW over tokens, dtau and dalpha
  // by atomics) in another order: ~1e-7 relative; 1e-5 still catches any lost token.
  ops::LizardWants s1;
  s1.dq = s1.dk = s1.dv = s1.dx = false;
  const ops::LizardGrads g1 = gpu_grads(c, dy, s1);
  for (auto [name, got, ref] : {std::tuple{"dwq", &g1.dwq, &all.dwq}, {"dwk", &g1.dwk, &all.dwk},
                                {"dw_g", &g1.dw_g, &all.dw_g}, {"db_g", &g1.db_g, &all.db_g},
                                {"dtau", &g1.dtau, &all.dtau}, {"dalpha", &g1.dalpha, &all.dalpha}}) {
    ASSERT_TRUE(got->defined()) << what << " " << name;
    EXPECT_LE(err(*got, *ref), 1e-5) << what << " stage 1 " << name;
  }
  for (const Tensor* t : {&g1.dq, &g1.dk, &g1.dv, &g1.dx}) EXPECT_FALSE(t->defined()) << what;
}

TEST(LizardBackwardOptionsGpu, MaskedGradientsEqualTheFullBackward) {
  LZ_REQUIRE_GPU();
  for (FeatureShape sh : {FeatureShape{2, 65, 4, 1, 128, 128, false}, FeatureShape{1, 333, 8, 2, 64, 48, true}}) {
    expect_masks_keep_values(sh, nullptr);
    expect_masks_keep_values(sh, "old");
    ScopedEnv f32_window("LIZARD_ATTENTION_TC_OFF", "window_bwd");
    expect_masks_keep_values(sh, nullptr);
  }
}

// The rebuilt states and phi pairs are the forward's bit for bit (the same deterministic
// kernels on the same inputs), so every gradient equals the kept-states backward's up to the order
// of the GQA atomics (dk, dv: f32 sums, then one bf16 rounding) and of the parameter
// gradients' f32 atomics: 1e-3 for the bf16 inputs' gradients as above, 1e-5 for the f32
// parameter gradients. A stale or zero state moves the gradients by O(1).
TEST(LizardBackwardOptionsGpu, RebuiltStatesGiveTheSameGradients) {
  LZ_REQUIRE_GPU();
  for (FeatureShape sh : {FeatureShape{2, 65, 4, 1, 128, 128, false}, FeatureShape{1, 1000, 8, 2, 64, 48, true},
                          FeatureShape{1, 1, 4, 4, 128, 128, false}}) {
    LizardCase c = feature_case(sh, 4200 + sh.T);
    const Tensor dy = rand(c.in.q.shape(), 78, DType::F64);
    const ops::LizardGrads kept = gpu_grads(c, dy, {});
    // keep_states: the tensor-core forward keeps its phi pairs too (the backward then skips
    // their recompute); without, neither
    for (bool keep : {true, false}) {
      c.cfg.keep_states = keep;
      const auto [in, p] = to_gpu(c);
      ops::LizardSaved saved;
      ops::lizard_attention_forward(c.cfg, in, p, &saved);
      if (f32_forced()) continue;
      const Shape phi_shape{sh.B, sh.H, sh.T, 2 * sh.F};
      EXPECT_EQ(saved.states.defined(), keep) << sh.str();
      for (const Tensor* t : {&saved.phiq, &saved.phiq_lo, &saved.phik, &saved.phik_lo}) {
        EXPECT_EQ(t->defined(), keep) << sh.str();
        if (keep && t->defined()) EXPECT_EQ(t->shape(), phi_shape) << sh.str();
      }
      for (const Tensor& w : {saved.wq_hi, saved.wq_lo, saved.wk_hi, saved.wk_lo}) {  // kept with them
        EXPECT_EQ(w.defined(), keep) << sh.str();
        if (keep && w.defined()) EXPECT_EQ(w.shape(), (Shape{sh.H, sh.D, sh.F})) << sh.str();
      }
    }
    const ops::LizardGrads rebuilt = gpu_grads(c, dy, {});
    for (auto [name, got, ref, tol] :
         {std::tuple{"dq", &rebuilt.dq, &kept.dq, 1e-3}, {"dk", &rebuilt.dk, &kept.dk, 1e-3},
          {"dv", &rebuilt.dv, &kept.dv, 1e-3}, {"dx", &rebuilt.dx, &kept.dx, 1e-3},
          {"dwq", &rebuilt.dwq, &kept.dwq, 1e-5}, {"dwk", &rebuilt.dwk, &kept.dwk, 1e-5},
          {"dw_g", &rebuilt.dw_g, &kept.dw_g, 1e-5}, {"db_g", &rebuilt.db_g, &kept.db_g, 1e-5},
          {"dtau", &rebuilt.dtau, &kept.dtau, 1e-5}, {"dalpha", &rebuilt.dalpha, &kept.dalpha, 1e-5}})
      EXPECT_LE(err(*got, *ref), tol) << sh.str() << " " << name;
  }
}

}  // namespace
}  // namespace lizard::test
