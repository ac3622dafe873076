// Batched GEMM through cuBLASLt, fp32 accumulation (bf16/f16 operands in, f32 exactly f32).
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [r, c] matrix is the
// column-major [c, r] matrix with the same bytes. So C = op(A) op(B) (row-major) is computed
// as C^T = op(B)^T op(A)^T in column-major terms: the first cuBLASLt operand is B's storage,
// the second A's, and the output is C's storage read column-major as [N, M] (ld N).
//
// Accumulation (matmul_add): D = alpha op(A) op(B) + beta C with beta = 1 and C a separate,
// read-only input (or D itself for in place): the sum is formed in the fp32 epilogue and
// rounded once, so a residual add or a gradient sum costs no extra kernel and no extra
// rounding. C has D's layout (same shape and strides), so one layout serves both.
//
// Leading dimensions: every matrix is row-major with unit inner stride, but its rows may lie
// further apart than their length (a column block of a wider matrix), read or written in
// place through the layout's ld.
//
// Batches: the largest innermost run of batch dims that every operand can walk with one stride
// (stride-0 broadcast included) becomes cuBLASLt's strided batch; outer dims that cannot be
// collapsed loop on the host. Descriptors and the chosen algorithm are cached per problem in
// the device Context (no global state), so steady-state training does no heuristic queries.
#include <cublasLt.h>

#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "kernel_util.cuh"
#include "lizard/cuda/gemm.h"

namespace lizard::cuda {
namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(str_cat("cuBLASLt error in ", what, ": status ", static_cast<int>(s)));
}

// Everything that determines the descriptors and the algorithm choice.
struct PlanKey {
  int64_t v[17];
  bool operator==(const PlanKey& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
  }
};

struct PlanCache {
  std::mutex mu;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;
};

// Largest power of two (<= 256) dividing every value: cuBLASLt picks vectorised kernels by
// the alignment it is promised, so we promise exactly what holds.
uint32_t alignment_of(std::initializer_list<int64_t> values) {
  uint32_t a = 256;
  for (int64_t v : values)
    while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: throw Error(str_cat("cuda::gemm_batched: unsupported dtype ", dtype_name(t)));
  }
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld,
                                   int64_t count, int64_t stride) {
  cublasLtMatrixLayout_t l;
  check_lt(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld), "MatrixLayoutCreate");
  if (count > 1) {
    int32_t c = static_cast<int32_t>(count);
    check_lt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &c, sizeof(c)),
             "layout batch count");
    check_lt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                              &stride, sizeof(stride)),
             "layout batch stride");
  }
  return l;
}

}  // namespace

void gemm_batched(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb,
                  const Shape& batch, Context& ctx, float alpha, const Tensor* c) {
  const char* op = "cuda::gemm_batched";
  require_cuda(a, op, "a");
  require_cuda(b, op, "b");
  require_cuda(out, op, "out");
  if (c) {
    require_cuda(*c, op, "c");
    // C is read through out's layout: the strides of every dim that has more than one index
    // must agree (a size-1 dim's stride is never used).
    bool same_layout = c->shape() == out.shape() && c->dtype() == out.dtype();
    for (int64_t d = 0; same_layout && d < out.dim(); ++d)
      same_layout = out.size(d) <= 1 || c->strides()[d] == out.strides()[d];
    LZ_CHECK(same_layout, op, ": c ", c->desc(), " must have out's shape, dtype and strides ",
             out.desc());
  }
  LZ_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), op, ": dtypes of ", a.desc(),
           ", ", b.desc(), ", ", out.desc(), " differ");
  const int64_t nb = static_cast<int64_t>(batch.size());
  LZ_CHECK(a.dim() == nb + 2 && b.dim() == nb + 2 && out.dim() == nb + 2, op,
           ": operands must be expanded to the batch ", shape_str(batch), ": ", a.desc(), ", ",
           b.desc(), ", ", out.desc());
  const int64_t M = out.size(-2), N = out.size(-1);
  LZ_CHECK(a.strides()[nb + 1] == 1 && b.strides()[nb + 1] == 1 &&
               (N <= 1 || out.strides()[nb + 1] == 1),
           op, ": matrices must be row-major with unit inner stride: ", a.desc(), ", ", b.desc(),
           ", ", out.desc());
  const int64_t ldc = M > 1 ? out.strides()[nb] : N;
  LZ_CHECK(ldc >= N, op, ": rows of out ", out.desc(), " overlap (row stride ", ldc, ")");
  const int64_t K = ta ? a.size(-2) : a.size(-1);
  const int64_t lda = std::max<int64_t>(a.size(-1), a.size(-2) > 1 ? a.strides()[nb] : 1);
  const int64_t ldb = std::max<int64_t>(b.size(-1), b.size(-2) > 1 ? b.strides()[nb] : 1);
  if (out.numel() == 0) return;

  // Collapse the innermost batch dims that all three operands walk with one stride.
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < nb; ++d)
    if (batch[d] != 1) dims.push_back(d);
  const int64_t nd = static_cast<int64_t>(dims.size());
  int64_t first_inner = nd;  // dims[first_inner..] form the strided batch
  int64_t count = 1, sa = 0, sb = 0, sc = 0;
  if (nd > 0) {
    const int64_t last = dims[nd - 1];
    sa = a.strides()[last];
    sb = b.strides()[last];
    sc = out.strides()[last];
    count = batch[last];
    first_inner = nd - 1;
    while (first_inner > 0) {
      const int64_t d = dims[first_inner - 1];
      if (a.strides()[d] != sa * count || b.strides()[d] != sb * count ||
          out.strides()[d] != sc * count)
        break;
      count *= batch[d];
      --first_inner;
    }
  }
  int64_t outer = 1;
  for (int64_t i = 0; i < first_inner; ++i) outer *= batch[dims[i]];
  // A batch of row-major a's against one shared b (a linear layer on [B, T, D]) is one GEMM
  // with count * M rows: fold it, which is also what cuBLASLt runs fastest.
  int64_t Mf = M;
  const bool fold = outer == 1 && count > 1 && sb == 0 && !ta && sa == M * lda && sc == M * ldc;
  if (fold) {
    Mf = M * count;
    count = 1;
    sa = sb = sc = 0;
  }
  LZ_CHECK(count < (int64_t(1) << 31), op, ": batch of ", count, " matrices is too large");

  const int64_t es = static_cast<int64_t>(dtype_size(out.dtype()));
  // Alignment over every pointer the host loop will pass (outer strides included).
  std::vector<int64_t> al_a{reinterpret_cast<int64_t>(a.raw()), lda * es, sa * es};
  std::vector<int64_t> al_b{reinterpret_cast<int64_t>(b.raw()), ldb * es, sb * es};
  // C and D share one layout: promise what holds for both pointers.
  std::vector<int64_t> al_c{reinterpret_cast<int64_t>(out.raw()), ldc * es, sc * es,
                            c ? reinterpret_cast<int64_t>(c->raw()) : 0};
  for (int64_t i = 0; i < first_inner; ++i) {
    al_a.push_back(a.strides()[dims[i]] * es);
    al_b.push_back(b.strides()[dims[i]] * es);
    al_c.push_back(out.strides()[dims[i]] * es);
  }
  auto align_list = [](const std::vector<int64_t>& v) {
    uint32_t a = 256;
    for (int64_t x : v) a = std::min(a, alignment_of({x}));
    return a;
  };
  const uint32_t align_a = align_list(al_a), align_b = align_list(al_b), align_c = align_list(al_c);

  if (!ctx.gemm_plans) ctx.gemm_plans = std::make_shared<PlanCache>();
  auto* cache = static_cast<PlanCache*>(ctx.gemm_plans.get());
  PlanKey key{{static_cast<int64_t>(out.dtype()), Mf, N, K, ta, tb, lda, ldb, ldc, count, sa, sb,
               sc, align_a, align_b, align_c, c ? 1 : 0}};
  Plan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(cache->mu);
    auto it = cache->plans.find(key);
    if (it != cache->plans.end()) plan = it->second.get();
  }
  auto lt = static_cast<cublasLtHandle_t>(ctx.blaslt);
  if (!plan) {
    auto p = std::make_unique<Plan>();
    const cudaDataType_t t = lt_type(out.dtype());
    check_lt(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    // First cuBLASLt operand is B's storage, second is A's (see the file comment).
    const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)),
             "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)),
             "TRANSB");
    p->la = make_layout(t, b.size(-1), b.size(-2), ldb, count, sb);
    p->lb = make_layout(t, a.size(-1), fold ? Mf : a.size(-2), lda, count, sa);
    p->lc = make_layout(t, N, Mf, ldc, count, sc);
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    const uint64_t ws = ctx.workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    // Operand "A" of cuBLASLt is our b, "B" is our a.
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, 4);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->la, p->lb, p->lc, p->lc,
                                                             pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    LZ_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0, op, ": cuBLASLt has no algorithm for [", Mf,
             ", ", K, "] @ [", K, ", ", N, "] x", count, " ", dtype_name(out.dtype()),
             " (status ", static_cast<int>(st), ")");
    p->algo = result.algo;
    // The map's plan: when two threads missed on one key, the first insert wins and the other's
    // plan is dropped here, so a pointer taken before the insert could dangle.
    std::lock_guard<std::mutex> lock(cache->mu);
    plan = cache->plans.try_emplace(key, std::move(p)).first->second.get();
  }

  const float beta = c ? 1.f : 0.f;
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  char* pd = static_cast<char*>(out.raw());
  // With beta = 0 cuBLASLt does not read C; pass D so the pointer is valid anyway.
  const char* pc = c ? static_cast<const char*>(c->raw()) : pd;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, oa = 0, ob = 0, oc = 0;
    for (int64_t i = first_inner - 1; i >= 0; --i) {
      const int64_t d = dims[i], idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * a.strides()[d];
      ob += idx * b.strides()[d];
      oc += idx * out.strides()[d];
    }
    check_lt(cublasLtMatmul(lt, plan->op, &alpha, pb + ob * es, plan->la, pa + oa * es, plan->lb,
                            &beta, pc + oc * es, plan->lc, pd + oc * es, plan->lc, &plan->algo,
                            ctx.workspace, ctx.workspace_bytes, as_stream(ctx.stream)),
             "cublasLtMatmul");
  }
}

}  // namespace lizard::cuda
