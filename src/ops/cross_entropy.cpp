#include "lizard/ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/cross_entropy.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/reduce.h"

namespace lizard::ops {

namespace {

/// Targets as int64 on the host, checked against V (negative = ignored).
std::vector<int64_t> checked_targets(const Tensor& targets, int64_t N, int64_t V) {
  LZ_CHECK(targets.dim() == 1 && targets.size(0) == N &&
               (targets.dtype() == DType::I32 || targets.dtype() == DType::I64),
           "cross_entropy: targets must be i32/i64 [", N, "], got ", targets.desc());
  const Tensor h = targets.to(Device::cpu(), DType::I64).contiguous();
  const int64_t* p = h.data<int64_t>();
  std::vector<int64_t> t(p, p + N);
  for (int64_t n = 0; n < N; ++n)
    LZ_INPUT_CHECK(t[n] < V, "cross_entropy: target ", t[n], " of row ", n,
                   " is outside the vocabulary [0, ", V, ")");
  return t;
}

}  // namespace

CrossEntropyOut cross_entropy(const Tensor& logits, const Tensor& targets,
                              const Tensor& host_targets) {
  LZ_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "cross_entropy: logits must be [N, V], got ",
           logits.desc());
  cpu::check_same_device("cross_entropy", {&logits, &targets});
  const int64_t N = logits.size(0), V = logits.size(1);
  LZ_CHECK(!host_targets.defined() ||
               (host_targets.device().is_cpu() && host_targets.numel() == targets.numel()),
           "cross_entropy: host_targets must be a CPU copy of targets ", targets.desc(), ", got ",
           host_targets.desc());
  const std::vector<int64_t> t =
      checked_targets(host_targets.defined() ? host_targets : targets, N, V);
  CrossEntropyOut r;
  r.count = std::count_if(t.begin(), t.end(), [](int64_t v) { return v >= 0; });
  if (logits.is_cuda()) {
    Tensor rows = Tensor::empty({N}, DType::F32, logits.device());
    r.lse = Tensor::empty({N}, DType::F32, logits.device());
    LZ_CUDA_ONLY(cuda::cross_entropy_forward(logits.contiguous(), targets.to(DType::I32).contiguous(),
                                             rows, r.lse, cuda::stream_of(rows)));
    // Ignored rows are 0, so the sum over all rows is the sum over counted rows.
    r.loss = ops::sum(rows);
    if (r.count > 0) r.loss = ops::affine(r.loss, 1.0 / static_cast<double>(r.count));
    return r;
  }
  const DType acc_t = logits.dtype() == DType::F64 ? DType::F64 : DType::F32;
  r.lse = Tensor::empty({N}, acc_t);
  double total = 0;
  cpu::visit_float(logits.dtype(), "cross_entropy", [&](auto z) {
    using T = decltype(z);
    const Tensor lc = logits.contiguous();
    const T* pl = lc.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T* row = pl + n * V;
      const double m = *std::max_element(row, row + V);
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(row[v] - m);
      const double lse = m + std::log(s);
      if (acc_t == DType::F64)
        r.lse.data<double>()[n] = lse;
      else
        r.lse.data<float>()[n] = static_cast<float>(lse);
      if (t[n] >= 0) total += lse - row[t[n]];
    }
  });
  r.loss = Tensor::full({}, r.count > 0 ? total / static_cast<double>(r.count) : 0.0, acc_t);
  return r;
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              double scale) {
  LZ_CHECK(logits.dim() == 2, "cross_entropy_backward: logits must be [N, V], got ",
           logits.desc());
  const int64_t N = logits.size(0), V = logits.size(1);
  LZ_CHECK(lse.numel() == N, "cross_entropy_backward: lse ", lse.desc(), " for ", N, " rows");
  Tensor d = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  if (logits.is_cuda()) {
    LZ_CUDA_ONLY(cuda::cross_entropy_backward(logits.contiguous(),
                                              targets.to(DType::I32).contiguous(), lse,
                                              static_cast<float>(scale), d, cuda::stream_of(d)));
    return d;
  }
  const std::vector<int64_t> t = checked_targets(targets, N, V);
  const Tensor l64 = lse.to(DType::F64).contiguous();
  const double* plse = l64.data<double>();
  cpu::visit_float(logits.dtype(), "cross_entropy_backward", [&](auto z) {
    using T = decltype(z);
    const Tensor lc = logits.contiguous();
    const T* pl = lc.data<T>();
    T* pd = d.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      T* dr = pd + n * V;
      if (t[n] < 0) {
        std::fill(dr, dr + V, T(0));
        continue;
      }
      const T* row = pl + n * V;
      for (int64_t v = 0; v < V; ++v) dr[v] = static_cast<T>(scale * std::exp(row[v] - plse[n]));
      dr[t[n]] -= static_cast<T>(scale);
    }
  });
  return d;
}

}  // namespace lizard::ops
