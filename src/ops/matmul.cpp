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

// True if the last two dims are row-major with unit inner stride, rows packed.
bool rows_contiguous(const Tensor& t) {
  const int64_t nd = t.dim();
  return t.strides()[nd - 1] == 1 && (t.shape()[nd - 2] <= 1 || t.strides()[nd - 2] == t.shape()[nd - 1]);
}

// rows_contiguous, or rows further apart than their length (a column block of a wider matrix:
// the GEMM's leading dimension), taken in place. `any_batch`: also for batched tensors; the
// operands of matmul take strided rows only when 2-D (a LoRA adapter's slice of a fused buffer),
// so batched callers keep the packed copies they always had.
bool rows_strided(const Tensor& t, bool any_batch) {
  const int64_t nd = t.dim();
  if (nd != 2 && !any_batch) return rows_contiguous(t);
  return t.strides()[nd - 1] == 1 &&
         (t.shape()[nd - 2] <= 1 || t.strides()[nd - 2] >= t.shape()[nd - 1]);
}

// Leading dimension (elements between row starts) of the last two dims of a rows_strided t.
int64_t leading_dim(const Tensor& t) {
  return t.size(-2) > 1 ? t.strides()[t.dim() - 2] : t.size(-1);
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
// C[M,N] = alpha op(A) op(B) + beta C, row-major, leading dims lda/ldb (beta is 0 or 1; with
// beta = 0 the old contents of C are never read).
template <class T>
void cpu_gemm(const T* A, const T* B, T* C, int64_t M, int64_t N, int64_t K, int64_t lda,
              int64_t ldb, int64_t ldc, bool ta, bool tb, T alpha, T beta) {
#ifdef LIZARD_WITH_BLAS
  const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  // Plain loops (builds without BLAS): accumulate in the element type, row of C at a time.
  for (int64_t m = 0; m < M; ++m) {
    T* c = C + m * ldc;
    if (beta == T(0))
      for (int64_t n = 0; n < N; ++n) c[n] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T a = alpha * (ta ? A[k * lda + m] : A[m * lda + k]);
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

// Operands checked, made row-contiguous and expanded to the broadcast batch.
struct Problem {
  Tensor a, b;
  Shape batch, out_shape;
  int64_t M = 0, N = 0, K = 0;
};

Problem prepare(const char* op, const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  cpu::check_same_device(op, {&a_in, &b_in});
  LZ_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, op, " needs 2+ dims: ", a_in.desc(), " @ ",
           b_in.desc());
  LZ_CHECK(a_in.dtype() == b_in.dtype(), op, " of ", a_in.desc(), " and ", b_in.desc());
  Problem p;
  p.M = ta ? a_in.size(-1) : a_in.size(-2);
  p.K = ta ? a_in.size(-2) : a_in.size(-1);
  const int64_t Kb = tb ? b_in.size(-1) : b_in.size(-2);
  p.N = tb ? b_in.size(-2) : b_in.size(-1);
  LZ_CHECK(p.K == Kb, op, " inner dims differ: ", a_in.desc(), (ta ? "^T" : ""), " @ ",
           b_in.desc(), (tb ? "^T" : ""));
  const Shape ab(a_in.shape().begin(), a_in.shape().end() - 2);
  const Shape bb(b_in.shape().begin(), b_in.shape().end() - 2);
  p.batch = broadcast_shape(ab, bb);
  p.out_shape = p.batch;
  p.out_shape.push_back(p.M);
  p.out_shape.push_back(p.N);
  Tensor a = rows_strided(a_in, false) ? a_in : a_in.contiguous();
  Tensor b = rows_strided(b_in, false) ? b_in : b_in.contiguous();
  Shape ea = p.batch, eb = p.batch;
  ea.push_back(a.size(-2));
  ea.push_back(a.size(-1));
  eb.push_back(b.size(-2));
  eb.push_back(b.size(-1));
  p.a = a.expand(ea);
  p.b = b.expand(eb);
  return p;
}

// out = alpha op(a) op(b) (+ c when c is set). out has the problem's output shape, row-major
// with unit inner stride (rows may be strided: matmul_out); c the same shape, dtype and
// strides, possibly out itself.
void run(const Problem& p, bool ta, bool tb, double alpha, const Tensor* c, Tensor& out) {
  g_gemm_count.fetch_add(1);
  if (out.numel() == 0) return;
  if (p.K == 0) {
    if (!c) out.fill_(0.0);
    else if (c->raw() != out.raw()) out.copy_(*c);
    return;
  }
  const Tensor &a = p.a, &b = p.b;
  if (a.is_cuda()) {
    LZ_CUDA_ONLY(cuda::gemm_batched(a, b, out, ta, tb, p.batch, cuda::context(a.device().index),
                                    static_cast<float>(alpha), c));
    return;
  }
  if (a.dtype() == DType::BF16 || a.dtype() == DType::F16) {
    // The CPU reference of the CUDA contract: fp32 products and sum, one rounding at the end.
    Problem q = p;
    q.a = a.to(DType::F32);
    q.b = b.to(DType::F32);
    Tensor cf = c ? c->to(DType::F32) : Tensor();
    Tensor of = Tensor::empty(out.shape(), DType::F32, out.device());
    g_gemm_count.fetch_sub(1);  // the inner call counts this GEMM
    run(q, ta, tb, alpha, c ? &cf : nullptr, of);
    out.copy_(of);
    return;
  }
  // beta = 1 reads C from out: bring c there first (BLAS has no separate C input).
  if (c && c->raw() != out.raw()) out.copy_(*c);
  const int64_t nbatch = shape_numel(p.batch), M = p.M, N = p.N, K = p.K;
  const int64_t lda = leading_dim(a), ldb = leading_dim(b), ldc = leading_dim(out);
  cpu::visit_float(a.dtype(), "matmul", [&](auto z) {
    using T = decltype(z);
    const T* pa = static_cast<const T*>(a.raw());
    const T* pb = static_cast<const T*>(b.raw());
    T* po = out.data<T>();
    for (int64_t i = 0; i < nbatch; ++i) {
      const T* A = pa + batch_offset(a, p.batch, i);
      const T* B = pb + batch_offset(b, p.batch, i);
      cpu_gemm(A, B, po + batch_offset(out, p.batch, i), M, N, K, lda, ldb, ldc, ta, tb,
               static_cast<T>(alpha), c ? T(1) : T(0));
    }
  });
}

void check_c(const char* op, const Problem& p, const Tensor& c) {
  LZ_CHECK(c.device() == p.a.device(), op, ": c ", c.desc(), " is on another device than a ",
           p.a.desc());
  LZ_CHECK(c.dtype() == p.a.dtype(), op, ": c ", c.desc(), " must have the operands' dtype ",
           dtype_name(p.a.dtype()));
  LZ_CHECK(c.shape() == p.out_shape, op, ": c ", c.desc(), " must have the product's shape ",
           shape_str(p.out_shape), " (no broadcast)");
}

}  // namespace

int64_t gemm_count() { return g_gemm_count.load(); }

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, double alpha) {
  Problem p = prepare("matmul", a, b, ta, tb);
  // The CPU backend of plain matmul stays f32/f64 (bf16 is a CUDA storage type); only the
  // fused matmul_add takes bf16 on CPU, as the reference of its CUDA rounding contract.
  if (!p.a.is_cuda()) cpu::visit_float(p.a.dtype(), "matmul", [](auto) {});
  Tensor out = Tensor::empty(p.out_shape, p.a.dtype(), p.a.device());
  run(p, ta, tb, alpha, nullptr, out);
  return out;
}

Tensor matmul_add(const Tensor& a, const Tensor& b, const Tensor& c_in, double alpha, bool ta,
                  bool tb) {
  Problem p = prepare("matmul_add", a, b, ta, tb);
  check_c("matmul_add", p, c_in);
  const Tensor c = c_in.is_contiguous() ? c_in : c_in.contiguous();
  Tensor out = Tensor::empty(p.out_shape, p.a.dtype(), p.a.device());
  run(p, ta, tb, alpha, &c, out);
  return out;
}

void matmul_add_(Tensor& c, const Tensor& a, const Tensor& b, double alpha, bool ta, bool tb) {
  Problem p = prepare("matmul_add_", a, b, ta, tb);
  check_c("matmul_add_", p, c);
  LZ_CHECK(c.is_contiguous(), "matmul_add_: c ", c.desc(), " must be contiguous (written in place)");
  // The GEMM would read a or b while writing c: form the sum out of place instead.
  const bool overlaps = c.storage() == p.a.storage() || c.storage() == p.b.storage();
  if (overlaps) {
    Tensor out = Tensor::empty(p.out_shape, p.a.dtype(), p.a.device());
    run(p, ta, tb, alpha, &c, out);
    c.copy_(out);
    return;
  }
  run(p, ta, tb, alpha, &c, c);
}

void matmul_out(Tensor& out, const Tensor& a, const Tensor& b, double alpha, bool ta, bool tb) {
  Problem p = prepare("matmul_out", a, b, ta, tb);
  check_c("matmul_out", p, out);
  LZ_CHECK(rows_strided(out, true), "matmul_out: out ", out.desc(),
           " must be row-major with unit inner stride (rows may be strided)");
  LZ_CHECK(out.storage() != p.a.storage() && out.storage() != p.b.storage(), "matmul_out: out ",
           out.desc(), " shares memory with an operand");
  run(p, ta, tb, alpha, nullptr, out);
}

}  // namespace lizard::ops
