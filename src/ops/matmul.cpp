#include "lizard/ops/matmul.h"

#ifdef LIZARD_WITH_BLAS
#include <cblas.h>
#endif

#include <atomic>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/gemm.h"
#include "lizard/ops/elementwise.h"

namespace lizard::ops {

namespace {
std::atomic<int64_t> g_gemm_count{0};

// True if the last two dims are row-major with unit inner stride.
bool rows_contiguous(const Tensor& t) {
  const int64_t nd = t.dim();
  return t.strides()[nd - 1] == 1 && (t.shape()[nd - 2] <= 1 || t.strides()[nd - 2] == t.shape()[nd - 1]);
}

// Offset (elements) of batch item `i` of t expanded to `batch` (row-major batch index).
int64_t batch_offset(const Tensor& t, const Shape& batch, int64_t i) {
  int64_t off = 0;
  for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
    int64_t idx = i % batch[d];
    i /= batch[d];
    off += idx * t.strides()[d];
  }
  return off;
}
// C[M,N] = op(A) op(B), row-major, leading dims lda/ldb.
template <class T>
void cpu_gemm(const T* A, const T* B, T* C, int64_t M, int64_t N, int64_t K, int64_t lda,
              int64_t ldb, bool ta, bool tb) {
#ifdef LIZARD_WITH_BLAS
  const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, 1.0, A, lda, B, ldb, 0.0, C, N);
#else
  // Plain loops (builds without BLAS): accumulate in the element type, row of C at a time.
  for (int64_t m = 0; m < M; ++m) {
    T* c = C + m * N;
    for (int64_t n = 0; n < N; ++n) c[n] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T a = ta ? A[k * lda + m] : A[m * lda + k];
      if (!tb) {
        const T* b = B + k * ldb;
        for (int64_t n = 0; n < N; ++n) c[n] += a * b[n];
      } else {
        for (int64_t n = 0; n < N; ++n) c[n] += a * B[n * ldb + k];
      }
    }
  }
#endif
}

}  // namespace

int64_t gemm_count() { return g_gemm_count.load(); }

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  cpu::check_same_device("matmul", {&a_in, &b_in});
  LZ_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul needs 2+ dims: ", a_in.desc(), " @ ",
           b_in.desc());
  LZ_CHECK(a_in.dtype() == b_in.dtype(), "matmul of ", a_in.desc(), " and ", b_in.desc());
  const int64_t M = ta ? a_in.size(-1) : a_in.size(-2);
  const int64_t K = ta ? a_in.size(-2) : a_in.size(-1);
  const int64_t Kb = tb ? b_in.size(-1) : b_in.size(-2);
  const int64_t N = tb ? b_in.size(-2) : b_in.size(-1);
  LZ_CHECK(K == Kb, "matmul inner dims differ: ", a_in.desc(), (ta ? "^T" : ""), " @ ",
           b_in.desc(), (tb ? "^T" : ""));
  const Shape ab(a_in.shape().begin(), a_in.shape().end() - 2);
  const Shape bb(b_in.shape().begin(), b_in.shape().end() - 2);
  const Shape batch = broadcast_shape(ab, bb);
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor a = rows_contiguous(a_in) ? a_in : a_in.contiguous();
  Tensor b = rows_contiguous(b_in) ? b_in : b_in.contiguous();
  Shape ea = batch, eb = batch;
  ea.push_back(a.size(-2));
  ea.push_back(a.size(-1));
  eb.push_back(b.size(-2));
  eb.push_back(b.size(-1));
  a = a.expand(ea);
  b = b.expand(eb);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  const int64_t nbatch = shape_numel(batch);
  g_gemm_count.fetch_add(1);
  if (out.numel() == 0) return out;
  if (K == 0) {
    out.fill_(0.0);
    return out;
  }
  if (a.is_cuda()) {
    LZ_CUDA_ONLY(cuda::gemm_batched(a, b, out, ta, tb, batch, cuda::context(a.device().index)));
    return out;
  }
  const int64_t lda = a.size(-1), ldb = b.size(-1);
  cpu::visit_float(a.dtype(), "matmul", [&](auto z) {
    using T = decltype(z);
    const T* pa = static_cast<const T*>(a.raw());
    const T* pb = static_cast<const T*>(b.raw());
    T* po = out.data<T>();
    for (int64_t i = 0; i < nbatch; ++i) {
      const T* A = pa + batch_offset(a, batch, i);
      const T* B = pb + batch_offset(b, batch, i);
      T* C = po + i * M * N;
      cpu_gemm(A, B, C, M, N, K, lda, ldb, ta, tb);
    }
  });
  return out;
}

}  // namespace lizard::ops
