// The window backward's query side (win_bwd_q_kernel, cuda/lizard_window_mma.cu) without dq:
// window_bwd_tc_launch with dq null (stage-1 distillation wants no input gradient) runs the
// instance that skips the dq~ = dC K~ pass. Every other output must be the full path's:
// dO', cself, delta (and dk, dv of the key side, which reads delta) bit for bit, since they
// come from the same instructions on the same operands in the same order; dtau and dalpha are
// f32 atomics whose order varies from run to run (shared-memory atomics over a CTA's rows,
// then global ones over CTAs) even on the full path, so they are compared within an f32
// reassociation bound. Calls the launcher directly (the op does not pass dq null yet). The
// full run also writes dO' as the bf16 pair the dstate sweep reads: hi = bf16(dO'), lo =
// bf16(dO' - hi) of every element (its den column left out), checked against dO' itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "lizard/ops/lizard_attention.h"
#include "gpu_test_util.h"
#include "lizard_gpu_case.h"

#ifdef LIZARD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../../cuda/lizard_attention_tc.cuh"  // host-includable: device code is nvcc-only
#endif

namespace lizard::test {
namespace {

#ifdef LIZARD_WITH_CUDA
namespace ld = cuda::lizard_detail;

struct Case {
  int64_t B, T, H, Hkv, D, w;
  bool rope, convex, per_head_sinks;
  std::string str() const {
    return "B " + std::to_string(B) + " T " + std::to_string(T) + " H " + std::to_string(H) +
           " Hkv " + std::to_string(Hkv) + " D " + std::to_string(D) + " w " + std::to_string(w) +
           (rope ? " rope" : "") + (convex ? " convex" : " sum") + (per_head_sinks ? " sinks/head" : "");
  }
};

/// The outputs of one window_bwd_tc_launch, copied to the CPU as f32.
struct Outs {
  Tensor dO, cself, delta, dq, dk, dv, dtau, dalpha;
  Tensor dOh, dOl;  // bf16 on the device (full run only)
};

const __nv_bfloat16* bf(const Tensor& t) { return static_cast<const __nv_bfloat16*>(t.raw()); }
/// The f32 data of t, or null when t is undefined (an output not wanted, no sinks, no RoPE).
float* f32p(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

/// Number of elements whose f32 bits differ (both tensors f32 on the CPU); `first` gets the
/// first such index.
int64_t bit_mismatches(const Tensor& a, const Tensor& b, int64_t& first) {
  EXPECT_EQ(a.shape(), b.shape());
  const float *pa = a.data<float>(), *pb = b.data<float>();
  int64_t n = 0;
  first = -1;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i, pb + i, sizeof(float)) != 0 && n++ == 0) first = i;
  return n;
}

void expect_bits(const Tensor& got, const Tensor& ref, const std::string& what) {
  int64_t first = 0;
  const int64_t n = bit_mismatches(got, ref, first);
  EXPECT_EQ(n, 0) << what << ": " << n << " of " << ref.numel() << " elements differ, first at "
                  << first << " (" << (first >= 0 ? got.data<float>()[first] : 0.f) << " vs "
                  << (first >= 0 ? ref.data<float>()[first] : 0.f) << ")";
}

void check_case(const Case& cs) {
  ops::LizardConfig cfg;
  cfg.feature_dim = 32;  // the global branch only supplies numden here: small is enough
  cfg.window = cs.w;
  cfg.sinks = 4;
  cfg.sinks_per_head = cs.per_head_sinks;
  cfg.window_rope = cs.rope;
  cfg.combine = cs.convex ? ops::Combine::Convex : ops::Combine::Sum;
  const uint64_t seed = 5100 + uint64_t(cs.T) + uint64_t(cs.D) + uint64_t(cs.Hkv);
  const LizardCase c = make_case(cfg, cs.B, cs.T, cs.H, cs.Hkv, cs.D, 8, seed, DType::F64, 0.5, 1.0);
  const std::string what = cs.str();
  const auto [in, p] = to_gpu(c);
  ops::LizardSaved saved;  // numden and wstats of a training forward: what the backward reads
  ops::lizard_attention_forward(cfg, in, p, &saved);
  const ld::Dims d = ld::make_dims(cfg, ops::lizard_check_dims(cfg, in, p));
  ASSERT_TRUE(ld::tc_window_supported(d)) << what << ": the case must take the mma kernels";
  ASSERT_EQ(bool(d.rope), cs.rope) << what;
  const Tensor dy = gpu_rand(in.q.shape(), seed + 11, DType::BF16);
  const Device gpu = Device::cuda(0);
  const Tensor cosb = cs.rope ? in.cos : Tensor(), sinb = cs.rope ? in.sin : Tensor();

  // dq, dk, dv: null when not wanted. Outputs start as a sentinel (-3), the same in every run.
  auto run = [&](bool want_dq, bool want_keys, bool pair = false) {
    Outs o;
    if (pair) {
      o.dOh = Tensor::full({cs.B, cs.H, cs.T, cs.D}, -3.0, DType::BF16, gpu);
      o.dOl = Tensor::full({cs.B, cs.H, cs.T, cs.D}, -3.0, DType::BF16, gpu);
    }
    auto bfo = [](Tensor& t) {
      return t.defined() ? static_cast<__nv_bfloat16*>(t.raw()) : nullptr;
    };
    auto out = [&](const Shape& s) { return Tensor::full(s, -3.0, DType::F32, gpu); };
    o.dO = out({cs.B, cs.H, cs.T, cs.D + 1});
    o.cself = out({cs.B, cs.H, cs.T});
    o.delta = out({cs.B, cs.H, cs.T});
    if (want_dq) o.dq = out(in.q.shape());
    if (want_keys) o.dk = out(in.k.shape()), o.dv = out(in.v.shape());
    o.dtau = Tensor::zeros(p.tau.shape(), DType::F32, gpu);
    o.dalpha = Tensor::zeros({1}, DType::F32, gpu);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    ld::window_bwd_tc_launch(bf(in.q), bf(in.k), bf(in.v), f32p(cosb), f32p(sinb), f32p(p.tau),
                             f32p(p.alpha), f32p(saved.numden), f32p(saved.wstats), bf(dy),
                             f32p(o.dO), f32p(o.cself), bfo(o.dOh), bfo(o.dOl), f32p(o.delta),
                             f32p(o.dq), f32p(o.dk),
                             f32p(o.dv), f32p(o.dtau), f32p(o.dalpha), d, nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << what;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    for (Tensor* t : {&o.dO, &o.cself, &o.delta, &o.dq, &o.dk, &o.dv, &o.dtau, &o.dalpha})
      if (t->defined()) *t = t->to(Device::cpu());
    return o;
  };
  const Outs full = run(true, true, /*pair=*/true);
  {  // the pair: hi the round-to-nearest bf16 of dO', lo that of the rest (its f32 value)
    const std::vector<double> dO = full.dO.to_vector();
    const std::vector<double> hi = full.dOh.to_vector(), lo = full.dOl.to_vector();
    int64_t bad = 0, first = -1;
    for (int64_t r = 0; r < cs.B * cs.H * cs.T; ++r)
      for (int64_t j = 0; j < cs.D; ++j) {
        const float x = float(dO[size_t(r * (cs.D + 1) + j)]);
        const float h = __bfloat162float(__float2bfloat16(x));
        const float l = __bfloat162float(__float2bfloat16(x - h));
        const size_t i = size_t(r * cs.D + j);
        if (float(hi[i]) != h || float(lo[i]) != l) {
          if (bad++ == 0) first = int64_t(i);
        }
      }
    EXPECT_EQ(bad, 0) << what << ": dO' pair elements off the split of dO' (first " << first << ")";
  }

  // The bound of the atomics' reassociation: f64 sums of the absolute per-row terms, from the
  // full run's delta and the saved statistics. dtau_j = -sum_t e^(tau_j - m_t) / den_t delta_t;
  // dalpha = sum_t (x_t - [convex] dy.g_t) / div with x_t = delta_t / coef.
  const int64_t BHT = cs.B * cs.H * cs.T;
  const std::vector<double> delta = full.delta.to_vector(), ws = saved.wstats.to_vector();
  const std::vector<double> tau = c.p.tau.to_vector();
  const double alpha = c.p.alpha.to_vector()[0], A = cs.convex ? std::abs(alpha) : alpha;
  const double coef = cs.convex ? A / (1 + A) : alpha;
  const double div = cs.convex ? (1 + A) * (1 + A) : 1.0;
  const int64_t m = cfg.sinks;
  std::vector<double> dtau_abs(tau.size(), 0.0);
  double dalpha_abs = 0;
  {
    // dy.g per row for the convex combine: g = v + M / den, or (M + den v) / eps when den is
    // clamped (global_out)
    std::vector<double> nd, vv, dyv;
    if (cs.convex) {
      nd = saved.numden.to_vector(), vv = c.in.v.to_vector();
      dyv = dy.to(Device::cpu(), DType::F64).to_vector();
    }
    const int64_t rep = cs.H / cs.Hkv;
    for (int64_t b = 0; b < cs.B; ++b)
      for (int64_t h = 0; h < cs.H; ++h)
        for (int64_t t = 0; t < cs.T; ++t) {
          const int64_t r = (b * cs.H + h) * cs.T + t;
          const double dl = delta[size_t(r)], mx = ws[size_t(2 * r)], den = ws[size_t(2 * r + 1)];
          for (int64_t j = 0; j < m; ++j) {
            const int64_t ti = cs.per_head_sinks ? h * m + j : j;
            dtau_abs[size_t(ti)] += std::exp(tau[size_t(ti)] - mx) / den * std::abs(dl);
          }
          double dyg = 0;
          if (cs.convex) {
            const double* ndr = nd.data() + r * (cs.D + 1);
            const double dn = ndr[cs.D];
            for (int64_t j = 0; j < cs.D; ++j) {
              const double vj = vv[size_t(((b * cs.T + t) * cs.Hkv + h / rep) * cs.D + j)];
              const double gj = dn < cfg.eps ? (ndr[j] + dn * vj) / cfg.eps : vj + ndr[j] / dn;
              dyg += dyv[size_t(((b * cs.T + t) * cs.H + h) * cs.D + j)] * gj;
            }
          }
          dalpha_abs += (std::abs(dl / coef) + std::abs(dyg)) / div;
        }
  }
  // The test means something only if the outputs it compares are not trivially equal.
  double delta_norm = 0;
  for (double x : delta) delta_norm += x * x;
  ASSERT_GT(delta_norm, 0.0) << what << ": delta all zero";
  ASSERT_EQ(int64_t(delta.size()), BHT) << what;

  // The atomics: f32 sums of a CTA's rows (64 shared-memory atomics), then of the CTAs'
  // partials (global atomics), both in an order that varies from run to run. A sum of n
  // terms in any order is within (n - 1) 2^-24 of the sum of |terms| of the exact sum (first
  // order), so one run is within (64 + CTAs) 2^-24 sum|terms| and two runs twice that apart:
  // 2.3e-5 at 128 CTAs, 1.3e-4 at 1024 (the 8B layer). Typically far less (random rounding errors,
  // ~1e-8); a lost CTA moves a sum by about 1 / CTAs of the sum of |terms| (1e-3 or more here),
  // and a wrong delta fails the bit comparison first.
  const int64_t n_tiles = (cs.T + 63) / 64;
  const double u = std::ldexp(1.0, -24);
  const double dalpha_bound = double(64 + cs.B * cs.H * n_tiles) * u;
  const double dtau_bound = double(64 + cs.B * (cs.per_head_sinks ? 1 : cs.H) * n_tiles) * u;
  auto expect_atomics = [&](const Outs& o, const std::string& tag) {
    const std::vector<double> got = o.dtau.to_vector(), ref = full.dtau.to_vector();
    for (size_t j = 0; j < ref.size(); ++j)
      EXPECT_LE(std::abs(got[j] - ref[j]), 2 * dtau_bound * dtau_abs[j])
          << what << " " << tag << " dtau[" << j << "] " << got[j] << " vs " << ref[j];
    const double ga = o.dalpha.to_vector()[0], ra = full.dalpha.to_vector()[0];
    EXPECT_LE(std::abs(ga - ra), 2 * dalpha_bound * dalpha_abs)
        << what << " " << tag << " dalpha " << ga << " vs " << ra;
  };
  // the bound itself is tight enough to mean something: the full path's own dtau is the f64
  // sum of its terms to it (an independent recomputation from delta and the statistics)
  {
    std::vector<double> dtau_ref(tau.size(), 0.0);
    for (int64_t r = 0; r < BHT; ++r) {
      const int64_t h = (r / cs.T) % cs.H;
      for (int64_t j = 0; j < m; ++j) {
        const int64_t ti = cs.per_head_sinks ? h * m + j : j;
        dtau_ref[size_t(ti)] -= std::exp(tau[size_t(ti)] - ws[size_t(2 * r)]) /
                                ws[size_t(2 * r + 1)] * delta[size_t(r)];
      }
    }
    const std::vector<double> got = full.dtau.to_vector();
    // the summation bound above plus the f32 terms' own error: __expf within 2 + 1.2 |x| ulp
    // (|x| = |tau - max| < 4 here: |scores| <= 2.9, |tau| < 1), tau's f32 rounding (1 ulp of
    // e^x), 1 / den and two products: under 16 ulp of each term
    for (size_t j = 0; j < got.size(); ++j)
      EXPECT_LE(std::abs(got[j] - dtau_ref[j]), (dtau_bound + 16 * u) * dtau_abs[j])
          << what << " full dtau[" << j << "] " << got[j] << " vs f64 " << dtau_ref[j];
  }

  // Stage 1 (no input gradient) and dq alone left out (the key side still runs and reads
  // delta: its dk, dv must keep their bits too).
  const Outs s1 = run(false, false), nodq = run(false, true);
  for (const auto& [tag, o] : {std::pair<std::string, const Outs*>{"dq,dk,dv null", &s1}, {"dq null", &nodq}}) {
    expect_bits(o->dO, full.dO, what + " " + tag + " dO'");
    expect_bits(o->cself, full.cself, what + " " + tag + " cself");
    expect_bits(o->delta, full.delta, what + " " + tag + " delta");
    expect_atomics(*o, tag);
  }
  expect_bits(nodq.dk, full.dk, what + " dq null dk");
  expect_bits(nodq.dv, full.dv, what + " dq null dv");
}
#endif

TEST(LizardWindowBwdQGpu, WithoutDqEveryOtherOutputKeepsItsBits) {
  LZ_REQUIRE_GPU();
#ifdef LIZARD_WITH_CUDA
  // T 1 (one row), 65 (a partial second tile), 1000 (many tiles, several key tiles per CTA
  // at w = 130); GQA 1 and 4; D 64 and 128; with and without window RoPE (the split-score
  // instance); sum and convex combine; shared and per-head sinks
  for (const Case& cs : {Case{1, 1, 4, 4, 64, 40, false, false, false},
                         Case{2, 65, 4, 1, 128, 40, true, true, false},
                         Case{1, 1000, 4, 1, 64, 130, false, true, true},
                         Case{1, 1000, 8, 2, 128, 130, true, false, false},
                         Case{2, 1000, 4, 4, 128, 40, false, false, true},
                         Case{1, 65, 8, 2, 64, 130, true, false, true},
                         // the 8B distillation step's layer (paper preset: no window RoPE), so
                         // that ncu on this test times both instances at that shape
                         Case{1, 2048, 32, 8, 128, 128, false, false, false}})
    check_case(cs);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace lizard::test
