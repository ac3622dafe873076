// Row gather / unique-row scatter-add (see include/lizard/ops/sparse_rows.h).
#include "lizard/ops/sparse_rows.h"

#include <cstring>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/embedding.h"
#include "lizard/cuda/sparse_rows.h"

namespace lizard::ops {

namespace {

/// The checks both functions share: table [V, D], ids i32 [n], rows [n, D], contiguous, on
/// one device, one float dtype.
void check_rows(const char* op, const Tensor& table, const Tensor& ids, const Tensor& rows) {
  cpu::check_same_device(op, {&table, &ids, &rows});
  LZ_CHECK(table.dim() == 2, op, ": table must be [V, D], got ", table.desc());
  LZ_CHECK(ids.dtype() == DType::I32 && ids.dim() == 1, op, ": ids must be i32 [n], got ",
           ids.desc());
  LZ_CHECK(rows.dtype() == table.dtype() && rows.numel() == ids.numel() * table.size(1), op,
           ": rows ", rows.desc(), " must hold ", ids.numel(), " rows of ", table.desc());
  for (const Tensor* t : {&table, &ids, &rows})
    LZ_CHECK(t->is_contiguous(), op, ": ", t->desc(), " must be contiguous");
}

void check_id(const char* op, int64_t id, int64_t i, int64_t V) {
  LZ_INPUT_CHECK(id >= 0 && id < V, op, ": row id ", id, " at position ", i,
                 " is outside the table's rows [0, ", V, ")");
}

}  // namespace

void gather_rows(const Tensor& src, const Tensor& ids, Tensor& out) {
  const char* op = "gather_rows";
  check_rows(op, src, ids, out);
  const int64_t V = src.size(0), D = src.size(1), n = ids.numel();
  if (src.is_cuda()) {
    LZ_CUDA_ONLY(cuda::embedding_forward(src, ids, out, cuda::stream_of(out)));
    return;
  }
  cpu::visit_float(src.dtype(), op, [&](auto z) {
    using T = decltype(z);
    const T* ps = src.data<T>();
    const int32_t* pi = ids.data<int32_t>();
    T* po = out.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      check_id(op, pi[i], i, V);
      std::memcpy(po + i * D, ps + int64_t(pi[i]) * D, sizeof(T) * D);
    }
  });
}

void scatter_add_rows(Tensor& dst, const Tensor& ids, const Tensor& rows) {
  const char* op = "scatter_add_rows";
  check_rows(op, dst, ids, rows);
  const int64_t V = dst.size(0), D = dst.size(1), n = ids.numel();
  if (dst.is_cuda()) {
    LZ_CUDA_ONLY(cuda::scatter_add_rows(dst, ids, rows, cuda::stream_of(dst)));
    return;
  }
  cpu::visit_float(dst.dtype(), op, [&](auto z) {
    using T = decltype(z);
    T* pd = dst.data<T>();
    const int32_t* pi = ids.data<int32_t>();
    const T* pr = rows.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      check_id(op, pi[i], i, V);
      T* row = pd + int64_t(pi[i]) * D;
      const T* src = pr + i * D;
      for (int64_t d = 0; d < D; ++d) row[d] += src[d];
    }
  });
}

}  // namespace lizard::ops
