// Shared test helpers: random tensors, comparisons and finite-difference gradient checks.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "lizard/autograd/functions.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/core/tensor.h"

namespace lizard::test {

/// Sets environment variables for its scope (a null value unsets one) and restores their
/// previous values, last set first, when it ends: kernel switches (LIZARD_*_KERNEL) and
/// communicator options read per call.
class ScopedEnv {
 public:
  ScopedEnv() = default;
  ScopedEnv(const char* name, const char* value) { set(name, value); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::string(old) : std::string(), old != nullptr});
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->had) setenv(it->name.c_str(), it->value.c_str(), 1);
      else unsetenv(it->name.c_str());
    }
  }

 private:
  struct Saved {
    std::string name, value;
    bool had;
  };
  std::vector<Saved> saved_;
};

/// Skips the current test with a visible message when no GPU is present.
#define LZ_REQUIRE_GPU()                                                          \
  do {                                                                            \
    if (!::lizard::cuda_available()) GTEST_SKIP() << "no GPU visible: skipped (needs CUDA)"; \
  } while (0)

/// Uniform [-1, 1) f64 tensor (never zeros) from a seed.
inline Tensor rand(const Shape& s, uint64_t seed, DType dt = DType::F64, double lo = -1.0,
                   double hi = 1.0) {
  return Tensor::uniform(s, lo, hi, seed, 0, DType::F32).to(dt);
}

/// A trainable f32 leaf of uniform [-1, 1) values (seed `seed`) named `name` (the name shows
/// in the data-parallel layer's messages and ZeRO-1 plans).
inline autograd::Var named_leaf(const Shape& s, uint64_t seed, const std::string& name) {
  autograd::Var v(rand(s, seed, DType::F32), true);
  v.set_name(name);
  return v;
}

/// max |a - b|.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

/// ||a - b|| / max(||b||, tiny).
inline double rel_err(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    num += (va[i] - vb[i]) * (va[i] - vb[i]);
    den += vb[i] * vb[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// f64 reference of the RMSNorm input gradient plus a running sum: dx[n] = rstd (w dy - x rstd^2
/// mean(w dy x)) + acc[n], from the values the op sees (any dtype or device, read as f64; rstd
/// the op's own). Returns a CPU f64 tensor of x's shape.
inline Tensor rmsnorm_dx_plus_acc(const Tensor& dy, const Tensor& x, const Tensor& w,
                                  const Tensor& rstd, const Tensor& acc) {
  auto host = [](const Tensor& t) { return t.to(Device::cpu(), DType::F64).to_vector(); };
  const int64_t D = x.size(-1), N = x.numel() / D;
  auto G = host(dy), X = host(x), W = host(w), R = host(rstd), A = host(acc);
  std::vector<double> out(X.size());
  for (int64_t n = 0; n < N; ++n) {
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += W[d] * G[n * D + d] * X[n * D + d];
    for (int64_t d = 0; d < D; ++d)
      out[n * D + d] = R[n] * (W[d] * G[n * D + d] - X[n * D + d] * R[n] * R[n] * dot / D) +
                       A[n * D + d];
  }
  return Tensor::from_vector(out, x.shape(), DType::F64);
}

/// Checks autograd gradients of the scalar sum(f(inputs) * w) against central differences
/// in f64 (w is a fixed random weighting so every output element matters). `tol` is the
/// allowed max |analytic - numeric| / (1 + |numeric|).
inline void check_gradients(const std::function<autograd::Var(const std::vector<autograd::Var>&)>& f,
                            std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-6,
                            std::vector<bool> wrt = {}) {
  using autograd::Var;
  if (wrt.empty()) wrt.assign(inputs.size(), true);
  std::vector<Var> vars;
  for (size_t i = 0; i < inputs.size(); ++i) vars.emplace_back(inputs[i], bool(wrt[i]));
  Var out = f(vars);
  Tensor w = rand(out.shape(), 777, out.dtype());
  auto loss_of = [&](const std::vector<Var>& vs) {
    autograd::NoGradGuard ng;
    Var o = f(vs);
    auto vo = o.data().to_vector(), vw = w.to_vector();
    double s = 0;
    for (size_t i = 0; i < vo.size(); ++i) s += vo[i] * vw[i];
    return s;
  };
  out.backward(w);
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!wrt[k]) continue;
    ASSERT_TRUE(vars[k].grad().defined()) << "input " << k << " got no gradient";
    auto g = vars[k].grad().to_vector();
    Tensor base = inputs[k].contiguous();
    for (int64_t i = 0; i < base.numel(); ++i) {
      auto perturbed = [&](double delta) {
        Tensor t = base.clone();
        auto v = t.to_vector();
        v[i] += delta;
        Tensor p = Tensor::from_vector(v, t.shape(), t.dtype());
        std::vector<Var> vs;
        for (size_t j = 0; j < inputs.size(); ++j) vs.emplace_back(j == k ? p : inputs[j], false);
        return loss_of(vs);
      };
      const double num = (perturbed(eps) - perturbed(-eps)) / (2 * eps);
      EXPECT_LE(std::abs(g[i] - num) / (1 + std::abs(num)), tol)
          << "input " << k << " element " << i << ": analytic " << g[i] << " numeric " << num;
    }
  }
}

}  // namespace lizard::test
