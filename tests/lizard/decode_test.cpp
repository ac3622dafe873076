// Recurrent decode equals the parallel form at every position, from scratch and after a
// prefill, for both combines, RoPE in the window, GQA and a window shorter than the sequence.
#include "lizard/ops/lizard_attention.h"
#include "lizard_case.h"

namespace lizard::test {
namespace {

ops::LizardInputs token(const ops::LizardInputs& in, int64_t t, bool rope) {
  ops::LizardInputs o;
  o.q = in.q.slice(1, t, t + 1).contiguous();
  o.k = in.k.slice(1, t, t + 1).contiguous();
  o.v = in.v.slice(1, t, t + 1).contiguous();
  o.x = in.x.slice(1, t, t + 1).contiguous();
  if (rope) {
    o.cos = in.cos.slice(0, t, t + 1).contiguous();
    o.sin = in.sin.slice(0, t, t + 1).contiguous();
  }
  return o;
}

TEST(LizardDecode, EqualsParallelAtEveryPosition) {
  for (int plus = 0; plus < 2; ++plus) {
    ops::LizardConfig cfg;
    cfg.preset = plus ? ops::Preset::Plus : ops::Preset::Paper;
    cfg.combine = plus ? ops::Combine::Convex : ops::Combine::Sum;
    cfg.feature_dim = 6;
    cfg.window = 5;
    cfg.sinks = 3;
    cfg.chunk = 8;
    const int64_t T = 37;
    auto c = make_case(cfg, 2, T, 4, 2, 8, 5, 90 + plus, DType::F32);
    const Tensor ref = ops::lizard_oracle_forward(cfg, c.in, c.p);
    // from scratch
    auto st = ops::lizard_decode_init(cfg, 2, 4, 2, 8);
    for (int64_t t = 0; t < T; ++t) {
      const Tensor yt = ops::lizard_decode_step(cfg, st, token(c.in, t, cfg.use_window_rope()), c.p);
      // f32 recurrence vs f32 oracle: ~1e-6 relative
      EXPECT_LE(rel_err(yt, ref.slice(1, t, t + 1).contiguous()), 1e-4) << "t " << t;
    }
    // prefill 20 tokens, decode the rest
    ops::LizardInputs pre = c.in;
    for (Tensor* tt : {&pre.q, &pre.k, &pre.v, &pre.x}) *tt = tt->slice(1, 0, 20).contiguous();
    if (cfg.use_window_rope()) {
      pre.cos = pre.cos.slice(0, 0, 20).contiguous();
      pre.sin = pre.sin.slice(0, 0, 20).contiguous();
    }
    Tensor ypre;
    auto st2 = ops::lizard_prefill(cfg, pre, c.p, &ypre);
    EXPECT_LE(rel_err(ypre, ref.slice(1, 0, 20).contiguous()), 1e-4);
    EXPECT_EQ(st2.pos, 20);
    for (int64_t t = 20; t < T; ++t) {
      const Tensor yt = ops::lizard_decode_step(cfg, st2, token(c.in, t, cfg.use_window_rope()), c.p);
      EXPECT_LE(rel_err(yt, ref.slice(1, t, t + 1).contiguous()), 1e-4) << "after prefill, t " << t;
    }
  }
}

TEST(LizardAttention, CpuDispatchIsTheChunkedReference) {
  ops::LizardConfig cfg;
  cfg.feature_dim = 4;
  cfg.window = 3;
  auto c = make_case(cfg, 1, 9, 2, 1, 4, 3, 4);
  ops::LizardSaved saved;
  const Tensor y = ops::lizard_attention_forward(cfg, c.in, c.p, &saved);
  EXPECT_LE(rel_err(y, ops::lizard_oracle_forward(cfg, c.in, c.p)), 1e-12);
  Tensor dy = rand(y.shape(), 1, DType::F64);
  auto g = ops::lizard_attention_backward(cfg, c.in, c.p, saved, dy);
  auto go = ops::lizard_oracle_backward(cfg, c.in, c.p, dy);
  EXPECT_LE(rel_err(g.dx, go.dx), 1e-10);
  EXPECT_LE(rel_err(g.dwq, go.dwq), 1e-10);
}

}  // namespace
}  // namespace lizard::test
