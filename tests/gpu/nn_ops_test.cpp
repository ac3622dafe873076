// CUDA kernels of the model's fused ops (rmsnorm, rope, swiglu, softmax, cross-entropy,
// embedding, dropout, AdamW) against double-precision references written inline here from
// the formulas in each launcher's contract, on exactly the values the GPU saw.
#include <gtest/gtest.h>

#include <cmath>

#include "gpu_test_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/rng.h"
#include "lizard/cuda/adamw.h"
#include "lizard/cuda/cross_entropy.h"
#include "lizard/cuda/dropout.h"
#include "lizard/cuda/embedding.h"
#include "lizard/cuda/rmsnorm.h"
#include "lizard/cuda/rope.h"
#include "lizard/cuda/softmax.h"
#include "lizard/cuda/swiglu.h"

// The CUDA launchers exist only in CUDA builds; elsewhere this file compiles to nothing.
#ifdef LIZARD_WITH_CUDA

using namespace lizard;
using namespace lizard::test;

namespace {
Tensor empty_like_gpu(const Shape& s, DType dt) { return Tensor::empty(s, dt, Device::cuda()); }
Tensor cpu64(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s, DType::F64); }
void* st(const Tensor& t) { return cuda::stream_of(t); }
}  // namespace

TEST(GpuRmsNorm, ForwardBackwardMatchF64) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : {kF32, kBF16}) {
    // (D = 1 would make dx a pure cancellation, x^2 rstd^2 = 1 - eps/x^2: N = 1 with odd D.)
    for (auto [N, D] : {std::pair<int64_t, int64_t>{1, 5}, {7, 33}, {130, 4096}}) {
      Tensor x = gpu_rand({N, D}, 21, c.dtype), w = gpu_rand({D}, 22, c.dtype, 0.5, 1.5);
      Tensor dy = gpu_rand({N, D}, 23, c.dtype);
      const double eps = 1e-5;
      Tensor y = empty_like_gpu({N, D}, c.dtype), rstd = empty_like_gpu({N}, DType::F32);
      cuda::rmsnorm_forward(x, w, eps, y, rstd, st(x));
      Tensor dx = empty_like_gpu({N, D}, c.dtype), dw = empty_like_gpu({D}, DType::F32);
      cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw, st(x));
      auto X = f64(x).to_vector(), W = f64(w).to_vector(), G = f64(dy).to_vector();
      std::vector<double> Y(N * D), R(N), DX(N * D), DW(D, 0.0);
      for (int64_t n = 0; n < N; ++n) {
        double ss = 0, dot = 0;
        for (int64_t d = 0; d < D; ++d) ss += X[n * D + d] * X[n * D + d];
        R[n] = 1.0 / std::sqrt(ss / D + eps);
        for (int64_t d = 0; d < D; ++d) {
          Y[n * D + d] = X[n * D + d] * R[n] * W[d];
          dot += G[n * D + d] * W[d] * X[n * D + d];
          DW[d] += G[n * D + d] * X[n * D + d] * R[n];
        }
        for (int64_t d = 0; d < D; ++d)
          DX[n * D + d] = R[n] * (W[d] * G[n * D + d] - X[n * D + d] * R[n] * R[n] * dot / D);
      }
      const std::string what = str_cat("rmsnorm ", N, "x", D, " ", dtype_name(c.dtype), " (", c.why, ")");
      expect_close(y, cpu64(Y, {N, D}), c.tol, what + " y");
      expect_close(rstd, cpu64(R, {N}), 1e-5, what + " rstd (fp32 always)");
      // dx cancels (w*dy minus its projection): bf16 storage of dx plus fp32 sums, 2x tol.
      expect_close(dx, cpu64(DX, {N, D}), 2 * c.tol, what + " dx");
      expect_close(dw, cpu64(DW, {D}), 1e-5, what + " dw (f32 sum over N)");
    }
  }
}

// D 6 (one pair a thread for every dtype), 8 (f32 in 16-byte packs, bf16 one pair a thread),
// 32 (both in packs: rope_pack_kernel).
TEST(GpuRope, ForwardAndInverse) {
  LZ_REQUIRE_GPU();
  for (const int64_t D : {6, 8, 32}) {
    SCOPED_TRACE(str_cat("D ", D));
    const int64_t B = 2, T = 5, H = 3, half = D / 2;
    std::vector<double> cs(T * half), sn(T * half);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double ang = (t + 3) * std::pow(10000.0, -2.0 * i / D);
        cs[t * half + i] = std::cos(ang);
        sn[t * half + i] = std::sin(ang);
      }
    Tensor cos_t = cpu64(cs, {T, half}).to(Device::cuda(), DType::F32);
    Tensor sin_t = cpu64(sn, {T, half}).to(Device::cuda(), DType::F32);
    auto C = f64(cos_t).to_vector(), S = f64(sin_t).to_vector();
    for (const DtypeCase& c : {kF32, kBF16}) {
      Tensor x = gpu_rand({B, T, H, D}, 31, c.dtype);
      auto X = f64(x).to_vector();
      for (bool inv : {false, true}) {
        Tensor y = empty_like_gpu(x.shape(), c.dtype);
        cuda::rope_apply(x, cos_t, sin_t, inv, y, st(x));
        std::vector<double> Y(X.size());
        for (int64_t r = 0; r < B * T * H; ++r) {
          const int64_t t = (r / H) % T;
          for (int64_t i = 0; i < half; ++i) {
            const double cv = C[t * half + i], sv = (inv ? -1 : 1) * S[t * half + i];
            const double x1 = X[r * D + i], x2 = X[r * D + i + half];
            Y[r * D + i] = x1 * cv - x2 * sv;
            Y[r * D + i + half] = x2 * cv + x1 * sv;
          }
        }
        expect_close(y, cpu64(Y, x.shape()), c.tol, str_cat("rope inverse=", inv, " ", c.why));
      }
    }
  }
}

TEST(GpuSwiglu, ForwardBackward) {
  LZ_REQUIRE_GPU();
  // 3003 elements: whole 16-byte packs plus a tail; offset 1 (views one element into their
  // buffers) leaves every operand misaligned, which must take the scalar loop.
  for (const DtypeCase& c : {kF32, kBF16}) for (int64_t off : {0, 1}) {
    const Shape s{3, 1001};
    auto at = [&](Tensor t) { return t.slice(0, off, off + 3003).view(s); };
    auto buf = [&](uint64_t seed, double lo, double hi) { return at(gpu_rand({3004}, seed, c.dtype, lo, hi)); };
    Tensor g = buf(41, -6, 6), u = buf(42, -1, 1), dy = buf(43, -1, 1);
    Tensor y = buf(44, -1, 1), dg = buf(45, -1, 1), du = buf(46, -1, 1);
    cuda::swiglu_forward(g, u, y, st(g));
    cuda::swiglu_backward(dy, g, u, dg, du, st(g));
    auto G = f64(g).to_vector(), U = f64(u).to_vector(), DY = f64(dy).to_vector();
    std::vector<double> Y(G.size()), DG(G.size()), DU(G.size());
    for (size_t i = 0; i < G.size(); ++i) {
      const double sg = 1 / (1 + std::exp(-G[i]));
      Y[i] = G[i] * sg * U[i];
      DG[i] = DY[i] * U[i] * sg * (1 + G[i] * (1 - sg));
      DU[i] = DY[i] * G[i] * sg;
    }
    expect_close(y, cpu64(Y, s), c.tol, c.why);
    expect_close(dg, cpu64(DG, s), c.tol, c.why);
    expect_close(du, cpu64(DU, s), c.tol, c.why);
  }
}

// More rows than 65535 partial sums of 64 rows (a 512 x 8192-token micro-batch has 4M):
// the dw reduction must widen its parts instead of refusing.
TEST(GpuRmsNorm, WeightGradientOverMillionsOfRows) {
  LZ_REQUIRE_GPU();
  const int64_t N = 4200001, D = 3;
  Tensor x = gpu_rand({N, D}, 61, DType::F32), w = gpu_rand({D}, 62, DType::F32, 0.5, 1.5);
  Tensor dy = gpu_rand({N, D}, 63, DType::F32);
  Tensor y = empty_like_gpu({N, D}, DType::F32), rstd = empty_like_gpu({N}, DType::F32);
  cuda::rmsnorm_forward(x, w, 1e-5, y, rstd, st(x));
  Tensor dx = empty_like_gpu({N, D}, DType::F32), dw = empty_like_gpu({D}, DType::F32);
  cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw, st(x));
  auto X = f64(x).to_vector(), G = f64(dy).to_vector(), R = f64(rstd).to_vector();
  std::vector<double> DW(D, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) DW[d] += G[n * D + d] * X[n * D + d] * R[n];
  // f32 partial sums of >= 64 rows, then an f32 sum over ~65K partials: relative error of a
  // sum of 4.2M terms of random sign, far below 1e-4 with this blocking.
  expect_close(dw, cpu64(DW, {D}), 1e-4, "rmsnorm dw over 4.2M rows");
}

TEST(GpuSoftmax, ForwardBackwardBothKinds) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : {kF32, kBF16}) {
    // (C = 1 makes every output exactly 0 or 1 and dx exactly 0: nothing to measure.)
    for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 2}, {5, 7}, {3, 3001}}) {
      // Scores up to +-30: large enough that exp without the max shift would lose digits.
      Tensor x = gpu_rand({N, C}, 51, c.dtype, -30, 30), dy = gpu_rand({N, C}, 52, c.dtype);
      auto X = f64(x).to_vector(), DY = f64(dy).to_vector();
      for (bool lg : {false, true}) {
        Tensor y = empty_like_gpu({N, C}, c.dtype), dx = empty_like_gpu({N, C}, c.dtype);
        cuda::softmax_forward(x, lg, y, st(x));
        cuda::softmax_backward(dy, y, lg, dx, st(x));
        // Reference backward uses the GPU's stored y (the op's contract is in terms of y).
        auto YG = f64(y).to_vector();
        std::vector<double> Y(N * C), DX(N * C);
        for (int64_t n = 0; n < N; ++n) {
          double m = -1e300, s = 0, acc = 0;
          for (int64_t k = 0; k < C; ++k) m = std::max(m, X[n * C + k]);
          for (int64_t k = 0; k < C; ++k) s += std::exp(X[n * C + k] - m);
          for (int64_t k = 0; k < C; ++k)
            Y[n * C + k] = lg ? X[n * C + k] - m - std::log(s) : std::exp(X[n * C + k] - m) / s;
          for (int64_t k = 0; k < C; ++k) acc += lg ? DY[n * C + k] : DY[n * C + k] * YG[n * C + k];
          for (int64_t k = 0; k < C; ++k)
            DX[n * C + k] = lg ? DY[n * C + k] - std::exp(YG[n * C + k]) * acc
                               : YG[n * C + k] * (DY[n * C + k] - acc);
        }
        const std::string what = str_cat("softmax log=", lg, " ", N, "x", C, " ", c.why);
        expect_close(y, cpu64(Y, {N, C}), c.tol, what);
        expect_close(dx, cpu64(DX, {N, C}), 2 * c.tol, what + " dx (a difference: 2x)");
      }
    }
  }
}

TEST(GpuCrossEntropy, LlamaVocabWithIgnoredRows) {
  LZ_REQUIRE_GPU();
  for (const DtypeCase& c : {kF32, kBF16}) {
    for (int64_t V : {int64_t(1), int64_t(1001), int64_t(128256)}) {
      const int64_t N = 5;
      Tensor logits = gpu_rand({N, V}, 61, c.dtype, -8, 8);
      std::vector<int32_t> tv = {0, int32_t(V - 1), -100, int32_t(V / 2), int32_t(V / 3)};
      Tensor targets = Tensor::from_data(tv, {N}).to(Device::cuda());
      Tensor loss = empty_like_gpu({N}, DType::F32), lse = empty_like_gpu({N}, DType::F32);
      cuda::cross_entropy_forward(logits, targets, loss, lse, st(logits));
      const float scale = 0.25f;
      Tensor dl = empty_like_gpu({N, V}, c.dtype);
      cuda::cross_entropy_backward(logits, targets, lse, scale, dl, st(logits));
      auto L = f64(logits).to_vector();
      std::vector<double> LOSS(N), LSE(N), DL(N * V);
      for (int64_t n = 0; n < N; ++n) {
        double m = -1e300, s = 0;
        for (int64_t k = 0; k < V; ++k) m = std::max(m, L[n * V + k]);
        for (int64_t k = 0; k < V; ++k) s += std::exp(L[n * V + k] - m);
        LSE[n] = m + std::log(s);
        LOSS[n] = tv[n] < 0 ? 0 : LSE[n] - L[n * V + tv[n]];
        for (int64_t k = 0; k < V; ++k)
          DL[n * V + k] = tv[n] < 0 ? 0 : scale * (std::exp(L[n * V + k] - LSE[n]) - (k == tv[n] ? 1 : 0));
      }
      const std::string what = str_cat("CE V=", V, " ", dtype_name(c.dtype));
      // lse and loss are fp32 sums of up to 128K terms: relative 1e-5.
      expect_close(lse, cpu64(LSE, {N}), 1e-5, what + " lse");
      if (V > 1) expect_close(loss, cpu64(LOSS, {N}), 1e-5, what + " loss");
      EXPECT_EQ(loss.to_vector()[2], 0.0) << "ignored row must have zero loss";
      expect_close(dl, cpu64(DL, {N, V}), c.tol, what + " dlogits (" + c.why + ")");
      // In place (dlogits aliasing logits) gives the same result.
      Tensor alias = logits.clone();
      cuda::cross_entropy_backward(alias, targets, lse, scale, alias, st(alias));
      EXPECT_EQ(max_abs_diff(f64(alias), f64(dl)), 0.0) << what << " aliased";
    }
  }
}

TEST(GpuEmbedding, ForwardAndDeterministicBackward) {
  LZ_REQUIRE_GPU();
  const int64_t V = 50, D = 300, N = 777;  // D spans two column blocks; many repeated ids
  for (const DtypeCase& c : {kF32, kBF16}) {
    Tensor w = gpu_rand({V, D}, 71, c.dtype);
    std::vector<int32_t> ids(N);
    for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * 7 + n / 3) % (V - 3));  // ids V-3.. unused
    Tensor idt = Tensor::from_data(ids, {N}).to(Device::cuda());
    Tensor out = empty_like_gpu({N, D}, c.dtype);
    cuda::embedding_forward(w, idt, out, st(w));
    auto W = f64(w).to_vector();
    std::vector<double> O(N * D);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t d = 0; d < D; ++d) O[n * D + d] = W[ids[n] * D + d];
    EXPECT_EQ(max_abs_diff(f64(out), cpu64(O, {N, D})), 0.0) << "gather is exact";
    Tensor dy = gpu_rand({N, D}, 72, c.dtype);
    Tensor dw = Tensor::full({V, D}, 123.0, DType::F32, Device::cuda());  // poisoned: must be overwritten
    cuda::embedding_backward(dy, idt, dw, st(dy));
    auto DY = f64(dy).to_vector();
    std::vector<double> DW(V * D, 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t d = 0; d < D; ++d) DW[ids[n] * D + d] += DY[n * D + d];
    expect_close(dw, cpu64(DW, {V, D}), 1e-6, "embedding dw (f32 sums of ~16 rows)");
    Tensor dw2 = Tensor::empty({V, D}, DType::F32, Device::cuda());
    cuda::embedding_backward(dy, idt, dw2, st(dy));
    EXPECT_EQ(max_abs_diff(f64(dw2), f64(dw)), 0.0) << "backward must be bitwise reproducible";
  }
}

TEST(GpuDropout, MaskMatchesPhiloxAndScales) {
  LZ_REQUIRE_GPU();
  const int64_t n = 10007;
  const double p = 0.3;
  Tensor x = gpu_rand({n}, 81, DType::F32, 0.5, 1.5), y = empty_like_gpu({n}, DType::F32);
  cuda::dropout(x, p, 1234, 5, y, st(x));
  auto X = f64(x).to_vector(), Y = f64(y).to_vector();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = rng_uniform(1234, 5, i) >= p;
    kept += keep;
    EXPECT_NEAR(Y[i], keep ? X[i] / (1 - p) : 0.0, 1e-6) << i;
  }
  // 10007 Bernoulli(0.7) draws: standard deviation ~46; 5 sigma.
  EXPECT_NEAR(double(kept), 0.7 * n, 230.0);
}

TEST(GpuAdamW, StepMatchesF64AndSumSquaresIsDeterministic) {
  LZ_REQUIRE_GPU();
  const int64_t n = 1025;
  for (DType pdt : {DType::F32, DType::BF16}) {
    Tensor master = gpu_rand({n}, 91, DType::F32), m = gpu_rand({n}, 92, DType::F32, -0.1, 0.1);
    Tensor v = gpu_rand({n}, 93, DType::F32, 0.001, 0.01), g = gpu_rand({n}, 94, pdt);
    Tensor param = master.to(pdt);
    auto W = f64(master).to_vector(), M = f64(m).to_vector(), VV = f64(v).to_vector(), G = f64(g).to_vector();
    const double lr = 1e-3, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.1;
    const int64_t step = 3;
    cuda::AdamWHyper h;
    h.lr = lr;
    h.beta1 = b1;
    h.beta2 = b2;
    h.eps = eps;
    h.step = step;
    h.clip_scale = 0.7;
    cuda::adamw_step({{param, master, m, v, g, wd}}, h, st(master));
    for (int64_t i = 0; i < n; ++i) {
      const double gi = G[i] * double(0.7f);
      M[i] = b1 * M[i] + (1 - b1) * gi;
      VV[i] = b2 * VV[i] + (1 - b2) * gi * gi;
      W[i] -= lr * (M[i] / (1 - std::pow(b1, step)) / (std::sqrt(VV[i] / (1 - std::pow(b2, step))) + eps) + wd * W[i]);
    }
    expect_close(m, cpu64(M, {n}), 1e-6, "m");
    expect_close(v, cpu64(VV, {n}), 1e-6, "v");
    expect_close(master, cpu64(W, {n}), 1e-6, "master (fp32 state)");
    expect_close(param, cpu64(W, {n}), pdt == DType::F32 ? 1e-6 : 4e-3, "param cast");
  }
  // Sum of squares over several tensors, mixed dtypes, one of them large (many blocks).
  std::vector<Tensor> gs = {gpu_rand({3}, 95, DType::F32), gpu_rand({1 << 20}, 96, DType::BF16),
                            gpu_rand({4097}, 97, DType::F32)};
  Tensor out = empty_like_gpu({1}, DType::F32), out2 = empty_like_gpu({1}, DType::F32);
  cuda::sum_squares(gs, out, st(out));
  cuda::sum_squares(gs, out2, st(out));
  double ref = 0;
  for (auto& t : gs)
    for (double e : f64(t).to_vector()) ref += e * e;
  EXPECT_NEAR(out.item(), ref, 1e-5 * ref) << "fp32 accumulation of 1M positive terms";
  EXPECT_EQ(out.item(), out2.item()) << "sum_squares must be deterministic";
}

#endif  // LIZARD_WITH_CUDA
