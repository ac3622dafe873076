// Causal softmax attention on the GPU (tensor-core bf16 forward, reference kernels for f32 and
// the backward) against a naive f64 evaluation of the formula on the same input values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "gpu_test_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/flash_attention.h"

// The CUDA launchers exist only in CUDA builds; elsewhere this file compiles to nothing.
#ifdef LIZARD_WITH_CUDA

using namespace lizard;
using namespace lizard::test;

namespace {

struct AttnCase {
  int64_t B, T, H, Hkv, D, window;
};

struct AttnRef {
  std::vector<double> o, lse, dq, dk, dv;
};

// o_t = sum_{visible s} softmax(scale q_t.k_s) v_s; gradients of sum(o * dout).
AttnRef naive_attention(const AttnCase& c, const std::vector<double>& q, const std::vector<double>& k,
                        const std::vector<double>& v, const std::vector<double>& dout, double scale) {
  const int64_t B = c.B, T = c.T, H = c.H, Hk = c.Hkv, D = c.D, G = H / Hk;
  AttnRef r;
  r.o.assign(B * T * H * D, 0.0);
  r.lse.assign(B * H * T, 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * H + h) * D; };
  auto ki = [&](int64_t b, int64_t s, int64_t hk) { return ((b * T + s) * Hk + hk) * D; };
  std::vector<double> p(T), dp(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t hk = h / G;
        const int64_t s0 = c.window > 0 ? std::max<int64_t>(0, t - c.window + 1) : 0;
        double m = -1e300;
        for (int64_t s = s0; s <= t; ++s) {
          double x = 0;
          for (int64_t d = 0; d < D; ++d) x += q[qi(b, t, h) + d] * k[ki(b, s, hk) + d];
          p[s] = x * scale;
          m = std::max(m, p[s]);
        }
        double l = 0;
        for (int64_t s = s0; s <= t; ++s) l += std::exp(p[s] - m);
        r.lse[(b * H + h) * T + t] = m + std::log(l);
        for (int64_t s = s0; s <= t; ++s) p[s] = std::exp(p[s] - m) / l;
        for (int64_t s = s0; s <= t; ++s)
          for (int64_t d = 0; d < D; ++d) r.o[qi(b, t, h) + d] += p[s] * v[ki(b, s, hk) + d];
        // Backward of this row: dp_s = dout.v_s; ds = p (dp - sum p dp).
        double pdp = 0;
        for (int64_t s = s0; s <= t; ++s) {
          dp[s] = 0;
          for (int64_t d = 0; d < D; ++d) dp[s] += dout[qi(b, t, h) + d] * v[ki(b, s, hk) + d];
          pdp += p[s] * dp[s];
        }
        for (int64_t s = s0; s <= t; ++s) {
          const double ds = p[s] * (dp[s] - pdp) * scale;
          for (int64_t d = 0; d < D; ++d) {
            r.dq[qi(b, t, h) + d] += ds * k[ki(b, s, hk) + d];
            r.dk[ki(b, s, hk) + d] += ds * q[qi(b, t, h) + d];
            r.dv[ki(b, s, hk) + d] += p[s] * dout[qi(b, t, h) + d];
          }
        }
      }
  return r;
}

Tensor cpu64(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s, DType::F64); }

const std::vector<AttnCase> kCases = {
    {1, 1, 1, 1, 64, 0},     // a single token
    {2, 77, 8, 2, 128, 0},   // GQA 4, T not a multiple of the 64-row tile
    {1, 130, 8, 1, 64, 17},  // GQA 8 (multi-query), window smaller than a tile
    {1, 70, 2, 2, 32, 0},    // D = 32 runs in the D = 64 kernel, zero padded
    {1, 65, 2, 1, 80, 64},   // D = 80 runs in the D = 128 kernel; window = tile size
    {1, 200, 4, 2, 128, 100},
};

}  // namespace

TEST(GpuFlashAttention, ForwardBackwardMatchNaiveF64) {
  LZ_REQUIRE_GPU();
  // bf16: the forward rounds P to bf16 before P V (2^-9 relative per term) and stores o in
  // bf16 (2^-9); the backward stores dq/dk/dv in bf16 and uses the bf16-stored o for its row
  // correction: 1e-2 norm-wise. f32: fp32 math with fast-math exp, sums of <= 200 terms: 1e-4.
  // lse is always fp32 math: 1e-5.
  for (const DtypeCase& dc : {DtypeCase{DType::BF16, 1e-2, "bf16 P and outputs"},
                              DtypeCase{DType::F32, 1e-4, "fp32"}}) {
    for (const AttnCase& c : kCases) {
      const double scale = 1.0 / std::sqrt(double(c.D));
      Tensor q = gpu_rand({c.B, c.T, c.H, c.D}, 101, dc.dtype, -2, 2);
      Tensor k = gpu_rand({c.B, c.T, c.Hkv, c.D}, 102, dc.dtype, -2, 2);
      Tensor v = gpu_rand({c.B, c.T, c.Hkv, c.D}, 103, dc.dtype);
      Tensor dout = gpu_rand({c.B, c.T, c.H, c.D}, 104, dc.dtype);
      // Poison the outputs: every element must be written.
      Tensor o = Tensor::full(q.shape(), std::nan(""), dc.dtype, Device::cuda());
      Tensor lse = Tensor::full({c.B, c.H, c.T}, std::nan(""), DType::F32, Device::cuda());
      void* s = cuda::stream_of(q);
      cuda::flash_attention_forward(q, k, v, scale, c.window, o, lse, s);
      Tensor dq = Tensor::full(q.shape(), std::nan(""), dc.dtype, Device::cuda());
      Tensor dk = Tensor::full(k.shape(), std::nan(""), dc.dtype, Device::cuda());
      Tensor dv = Tensor::full(v.shape(), std::nan(""), dc.dtype, Device::cuda());
      cuda::flash_attention_backward(dout, q, k, v, o, lse, scale, c.window, dq, dk, dv, s);
      AttnRef r = naive_attention(c, f64(q).to_vector(), f64(k).to_vector(), f64(v).to_vector(),
                                  f64(dout).to_vector(), scale);
      const std::string what = str_cat("B", c.B, " T", c.T, " H", c.H, "/", c.Hkv, " D", c.D, " w",
                                       c.window, " ", dtype_name(dc.dtype), " (", dc.why, ")");
      expect_close(o, cpu64(r.o, q.shape()), dc.tol, what + " o");
      expect_close(lse, cpu64(r.lse, {c.B, c.H, c.T}), 1e-5, what + " lse");
      // Every forward kernel variant against the same oracle (f32 takes the reference kernel
      // whatever the variant; bf16 runs each tensor-core variant).
      for (int var = 0; var < cuda::flash_attention_forward_variant_count(); ++var) {
        Tensor o2 = Tensor::full(q.shape(), std::nan(""), dc.dtype, Device::cuda());
        Tensor lse2 = Tensor::full({c.B, c.H, c.T}, std::nan(""), DType::F32, Device::cuda());
        cuda::flash_attention_forward_variant(q, k, v, scale, c.window, o2, lse2, var, s);
        expect_close(o2, cpu64(r.o, q.shape()), dc.tol, str_cat(what, " variant ", var, " o"));
        expect_close(lse2, cpu64(r.lse, {c.B, c.H, c.T}), 1e-5, str_cat(what, " variant ", var, " lse"));
      }
      // Gradients in bf16 also round P and dS = P (dP - delta) to bf16 before their GEMMs, and
      // dS is a difference (cancellation): twice the forward's allowance.
      const double gtol = dc.dtype == DType::BF16 ? 2 * dc.tol : dc.tol;
      expect_close(dq, cpu64(r.dq, q.shape()), gtol, what + " dq");
      expect_close(dk, cpu64(r.dk, k.shape()), gtol, what + " dk");
      expect_close(dv, cpu64(r.dv, v.shape()), gtol, what + " dv");
    }
  }
}

TEST(GpuFlashAttention, TensorCoreForwardMatchesReferenceKernelAtLength1000) {
  LZ_REQUIRE_GPU();
  // Longer sequences than the f64 oracle can afford: the tensor-core path against the fp32
  // reference kernel on the same device (bf16 P rounding and bf16 o storage: 1e-2).
  for (int64_t window : {int64_t(0), int64_t(128)}) {
    const int64_t B = 2, T = 1000, H = 8, Hkv = 2, D = 128;
    Tensor q = gpu_rand({B, T, H, D}, 111, DType::BF16, -2, 2);
    Tensor k = gpu_rand({B, T, Hkv, D}, 112, DType::BF16, -2, 2);
    Tensor v = gpu_rand({B, T, Hkv, D}, 113, DType::BF16);
    Tensor o = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    Tensor o_ref = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    Tensor lse = Tensor::empty({B, H, T}, DType::F32, Device::cuda());
    Tensor lse_ref = Tensor::empty({B, H, T}, DType::F32, Device::cuda());
    void* s = cuda::stream_of(q);
    const double scale = 1.0 / std::sqrt(double(D));
    cuda::flash_attention_forward(q, k, v, scale, window, o, lse, s);
    cuda::flash_attention_forward_reference(q, k, v, scale, window, o_ref, lse_ref, s);
    expect_close(o, f64(o_ref), 1e-2, str_cat("T=1000 window ", window, " o"));
    expect_close(lse, f64(lse_ref), 1e-5, str_cat("T=1000 window ", window, " lse"));
    // Every forward variant computes the same function.
    for (int var = 0; var < cuda::flash_attention_forward_variant_count(); ++var) {
      Tensor o2 = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
      Tensor lse2 = Tensor::empty({B, H, T}, DType::F32, Device::cuda());
      cuda::flash_attention_forward_variant(q, k, v, scale, window, o2, lse2, var, s);
      const std::string tag = str_cat("variant ", var, " window ", window);
      expect_close(o2, f64(o_ref), 1e-2, tag + " o");
      expect_close(lse2, f64(lse_ref), 1e-5, tag + " lse");
    }
    // Backward: tensor-core kernels vs the fp32 reference kernels, same inputs and lse.
    Tensor dout = gpu_rand(q.shape(), 114, DType::BF16);
    auto grads = [&](bool reference) {
      std::vector<Tensor> g = {Tensor::empty(q.shape(), DType::BF16, Device::cuda()),
                               Tensor::empty(k.shape(), DType::BF16, Device::cuda()),
                               Tensor::empty(v.shape(), DType::BF16, Device::cuda())};
      if (reference)
        cuda::flash_attention_backward_reference(dout, q, k, v, o_ref, lse_ref, scale, window,
                                                 g[0], g[1], g[2], s);
      else
        cuda::flash_attention_backward(dout, q, k, v, o_ref, lse_ref, scale, window, g[0], g[1],
                                       g[2], s);
      return g;
    };
    auto tc = grads(false), ref = grads(true);
    const char* names[] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i)
      expect_close(tc[i], f64(ref[i]), 2e-2,
                   str_cat("T=1000 window ", window, " ", names[i], " (bf16 P, dS: 2e-2)"));
    // Deterministic: a second run gives the same bits.
    auto tc2 = grads(false);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(max_abs_diff(f64(tc2[i]), f64(tc[i])), 0.0) << names[i] << " not reproducible";
  }
}

// Keys whose norm grows along the sequence make every row's max climb tile after tile, so the
// rescale branches of the variants (exact: on any new max; lazy: only past 2^8) both run, and
// the lazy variants' P reaches 256 before a rescale. Every variant against the fp32 reference
// kernel on the same bf16 inputs, at awkward lengths, GQA 4 and 2, both head-dim kernels.
TEST(GpuFlashAttention, ForwardVariantsMatchReferenceWhenScoresGrowAlongTheSequence) {
  LZ_REQUIRE_GPU();
  struct Case {
    int64_t B, T, H, Hkv, D, window;
  };
  for (const Case& c : {Case{1, 700, 4, 1, 64, 0}, Case{2, 333, 4, 2, 128, 200}, Case{1, 129, 2, 1, 128, 0}}) {
    std::vector<double> kv = rand({c.B, c.T, c.Hkv, c.D}, 121, DType::F64, -2, 2).to_vector();
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < c.T; ++t)
        for (int64_t i = 0; i < c.Hkv * c.D; ++i) kv[(b * c.T + t) * c.Hkv * c.D + i] *= 1.0 + t / 64.0;
    Tensor q = gpu_rand({c.B, c.T, c.H, c.D}, 122, DType::BF16, -2, 2);
    Tensor k = Tensor::from_vector(kv, {c.B, c.T, c.Hkv, c.D}, DType::F64).to(Device::cuda(), DType::BF16);
    Tensor v = gpu_rand({c.B, c.T, c.Hkv, c.D}, 123, DType::BF16);
    const double scale = 1.0 / std::sqrt(double(c.D));
    void* s = cuda::stream_of(q);
    Tensor o_ref = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    Tensor lse_ref = Tensor::empty({c.B, c.H, c.T}, DType::F32, Device::cuda());
    cuda::flash_attention_forward_reference(q, k, v, scale, c.window, o_ref, lse_ref, s);
    for (int var = 0; var < cuda::flash_attention_forward_variant_count(); ++var) {
      Tensor o = Tensor::full(q.shape(), std::nan(""), DType::BF16, Device::cuda());
      Tensor lse = Tensor::full({c.B, c.H, c.T}, std::nan(""), DType::F32, Device::cuda());
      cuda::flash_attention_forward_variant(q, k, v, scale, c.window, o, lse, var, s);
      const std::string what = str_cat("T", c.T, " H", c.H, "/", c.Hkv, " D", c.D, " w", c.window,
                                        " variant ", var);
      // bf16 P (2^-9 per term) and bf16 o storage against an fp32 kernel's bf16 o: 1e-2.
      expect_close(o, f64(o_ref), 1e-2, what + " o");
      // lse is fp32 math in both (ex2.approx, about 2 ulp per term): 1e-5.
      expect_close(lse, f64(lse_ref), 1e-5, what + " lse");
      // Deterministic: a second run gives the same bits.
      Tensor o2 = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
      Tensor lse2 = Tensor::empty({c.B, c.H, c.T}, DType::F32, Device::cuda());
      cuda::flash_attention_forward_variant(q, k, v, scale, c.window, o2, lse2, var, s);
      EXPECT_EQ(max_abs_diff(f64(o2), f64(o)), 0.0) << what << " o not reproducible";
    }
  }
}

// flash_attention_forward takes its variant from LIZARD_FA_FWD_VARIANT, read at every call;
// a value that names no variant is an input error naming the variable.
TEST(GpuFlashAttention, ForwardVariantComesFromTheEnvironment) {
  LZ_REQUIRE_GPU();
  struct EnvGuard {  // restores the variable whatever the test does
    std::string old;
    bool had;
    EnvGuard() {
      const char* e = std::getenv("LIZARD_FA_FWD_VARIANT");
      had = e != nullptr;
      if (had) old = e;
    }
    ~EnvGuard() {
      if (had)
        setenv("LIZARD_FA_FWD_VARIANT", old.c_str(), 1);
      else
        unsetenv("LIZARD_FA_FWD_VARIANT");
    }
  } guard;
  Tensor q = gpu_rand({1, 100, 4, 64}, 131, DType::BF16, -2, 2);
  Tensor k = gpu_rand({1, 100, 2, 64}, 132, DType::BF16, -2, 2);
  Tensor v = gpu_rand({1, 100, 2, 64}, 133, DType::BF16);
  void* s = cuda::stream_of(q);
  auto run = [&](int variant) {
    Tensor o = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
    Tensor lse = Tensor::empty({1, 4, 100}, DType::F32, Device::cuda());
    if (variant < 0)
      cuda::flash_attention_forward(q, k, v, 0.125, 0, o, lse, s);
    else
      cuda::flash_attention_forward_variant(q, k, v, 0.125, 0, o, lse, variant, s);
    return f64(o);
  };
  // The variable picks the kernel: the same bits as asking for that variant by number (the
  // bad values below show that it is read at all).
  for (int var : {0, cuda::flash_attention_forward_variant_count() - 1}) {
    setenv("LIZARD_FA_FWD_VARIANT", std::to_string(var).c_str(), 1);
    EXPECT_EQ(max_abs_diff(run(-1), run(var)), 0.0) << "LIZARD_FA_FWD_VARIANT=" << var;
  }
  for (const char* bad : {"99", "-1", "two", "1x"}) {
    setenv("LIZARD_FA_FWD_VARIANT", bad, 1);
    try {
      run(-1);
      ADD_FAILURE() << "LIZARD_FA_FWD_VARIANT=" << bad << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("LIZARD_FA_FWD_VARIANT"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(run(cuda::flash_attention_forward_variant_count()), Error);
}

TEST(GpuFlashAttention, RejectsBadShapes) {
  LZ_REQUIRE_GPU();
  Tensor q = gpu_rand({1, 4, 3, 64}, 1, DType::BF16), k = gpu_rand({1, 4, 2, 64}, 2, DType::BF16);
  Tensor o = Tensor::empty(q.shape(), DType::BF16, Device::cuda());
  Tensor lse = Tensor::empty({1, 3, 4}, DType::F32, Device::cuda());
  EXPECT_THROW(cuda::flash_attention_forward(q, k, k, 0.125, 0, o, lse, cuda::stream_of(q)), Error);
}

#endif  // LIZARD_WITH_CUDA
