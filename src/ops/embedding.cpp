#include "lizard/ops/embedding.h"

#include <cstring>
#include <vector>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/embedding.h"

namespace lizard::ops {

namespace {

void check_ids_dtype(const Tensor& ids, const char* op) {
  LZ_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, op,
           ": ids must be i32 or i64, got ", ids.desc());
}

/// Ids as int64 on the host, each checked against [0, V). The check runs on the host for CUDA
/// too: a bad id would otherwise read out of bounds on the device, silently.
std::vector<int64_t> checked_ids(const Tensor& ids, int64_t vocab_size, const char* op) {
  check_ids_dtype(ids, op);
  Tensor h = ids.to(Device::cpu(), DType::I64).contiguous();
  const int64_t* p = h.data<int64_t>();
  std::vector<int64_t> out(p, p + h.numel());
  for (size_t n = 0; n < out.size(); ++n)
    LZ_INPUT_CHECK(out[n] >= 0 && out[n] < vocab_size, op, ": token id ", out[n],
                   " at position ", n, " is outside the vocabulary [0, ", vocab_size, ")");
  return out;
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  LZ_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", weight.desc());
  cpu::check_same_device("embedding", {&weight, &ids});
  const int64_t V = weight.size(0), D = weight.size(1);
  const std::vector<int64_t> idv = checked_ids(ids, V, "embedding");
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  const int64_t N = static_cast<int64_t>(idv.size());
  if (weight.is_cuda()) {
    Tensor ids32 = ids.to(DType::I32).contiguous().view({N});
    Tensor out2 = out.view({N, D});
    LZ_CUDA_ONLY(cuda::embedding_forward(weight.contiguous(), ids32, out2, cuda::stream_of(out)));
    return out;
  }
  cpu::visit_float(weight.dtype(), "embedding", [&](auto z) {
    using T = decltype(z);
    Tensor w = weight.contiguous();
    const T* pw = w.data<T>();
    T* po = out.data<T>();
    for (int64_t n = 0; n < N; ++n) std::memcpy(po + n * D, pw + idv[n] * D, sizeof(T) * D);
  });
  return out;
}

Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab_size) {
  cpu::check_same_device("embedding_backward", {&dy, &ids});
  LZ_CHECK(dy.dim() == ids.dim() + 1, "embedding_backward: dy ", dy.desc(), " for ids ",
           ids.desc());
  for (int64_t i = 0; i < ids.dim(); ++i)
    LZ_CHECK(dy.size(i) == ids.size(i), "embedding_backward: dy ", dy.desc(), " for ids ",
             ids.desc());
  const int64_t D = dy.size(-1), N = ids.numel();
  if (dy.is_cuda()) {
    check_ids_dtype(ids, "embedding_backward");
    Tensor dw = Tensor::empty({vocab_size, D}, DType::F32, dy.device());
    Tensor ids32 = ids.to(DType::I32).contiguous().view({N});
    LZ_CUDA_ONLY(cuda::embedding_backward(dy.contiguous().view({N, D}), ids32, dw,
                                          cuda::stream_of(dw)));
    return dw;
  }
  const std::vector<int64_t> idv = checked_ids(ids, vocab_size, "embedding_backward");
  Tensor dw = Tensor::zeros({vocab_size, D}, dy.dtype());
  cpu::visit_float(dy.dtype(), "embedding_backward", [&](auto z) {
    using T = decltype(z);
    Tensor g = dy.contiguous();
    const T* pg = g.data<T>();
    T* pw = dw.data<T>();
    // In order of n: the same sum, bit for bit, on every run.
    for (int64_t n = 0; n < N; ++n) {
      T* row = pw + idv[n] * D;
      const T* src = pg + n * D;
      for (int64_t d = 0; d < D; ++d) row[d] += src[d];
    }
  });
  return dw;
}

}  // namespace lizard::ops
