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
// rounding. C has D's layout (contiguous, same shape), so one layout serves both.
//
// Batches: the largest innermost run of batch dims that every operand can walk with one stride
// (stride-0 broadcast included) becomes cuBLASLt's strided batch; outer dims that cannot be
// collapsed loop on the host. Descriptors and the chosen algorithm are cached per problem in
// the device Context (no global state), so steady-state training does no heuristic queries.
//
// Algorithm choice (opt-in tuning, LIZARD_GEMM_TUNE=1): by default a plan takes cuBLASLt's
// first heuristic result (bit-for-bit repeatable across runs). With LIZARD_GEMM_TUNE=1 (also
// on/true/yes) a plan-cache miss of a GEMM of at least kGemmTuneMinFlops asks for up to
// kGemmTuneCandidates heuristic results and times each on the call's real operands (CUDA events
// on the context's stream: one warm-up run, then 1-5 timed runs, fewer for bigger GEMMs), and
// keeps the fastest (a later heuristic rank must beat the best so far by more than 1%). Measured
// on an H200 (2026-11-28, docs/benchmarks/step.md): single GEMMs of the 8B step from 10% faster
// to 12% slower than the heuristic's choice (a handful of timed runs picks by noise), and the
// whole finetune step within noise (+1%), so it stays off by default. Once per distinct problem
// per process; within a process the choice is then fixed, across processes it can change.
// - The caller's data is never disturbed: a, b and c are only read. The timing runs write their
//   D to `out` when out overlaps none of a, b, c (the real call overwrites all of it next, and
//   no extra memory is needed: the LM head's output alone is 0.5 GB), else (in place, D aliasing
//   C) to a scratch buffer from the caching allocator. The real call is unchanged but for the
//   algorithm, so results differ from the untuned ones only by the summation order (split-K).
// - Candidates come with the workspace limit (the context's workspace) and the alignment the
//   operands guarantee; one that fails to launch is skipped. For bf16/f16 outputs a candidate
//   that splits K must reduce its partial sums in fp32 (the reduction-scheme mask): in-place or
//   output-type reduction would round each partial to bf16.
// - No timing while the stream is capturing a CUDA graph (synchronising is illegal there), when
//   the scratch buffer cannot be allocated, or for GemmAlgo::Heuristic: then the first result.
#include <cublasLt.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
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
  GemmPlanStats stats;
};

// LIZARD_GEMM_TUNE=1 (or on / true / yes) turns tuning on for GemmAlgo::Default.
bool tuning_on_by_env() {
  const char* v = std::getenv("LIZARD_GEMM_TUNE");
  if (!v) return false;
  std::string s(v);
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s == "1" || s == "on" || s == "true" || s == "yes";
}

// True when the bytes a view can reach overlap [lo, hi). Views with a negative stride count as
// overlapping (conservative: the tuner then writes to scratch).
bool overlaps(const Tensor& t, uintptr_t lo, uintptr_t hi) {
  const auto base = reinterpret_cast<uintptr_t>(t.raw());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.strides()[d] < 0) return true;
    last += (t.size(d) - 1) * t.strides()[d];
  }
  const uintptr_t end = base + static_cast<uintptr_t>(last + 1) * dtype_size(t.dtype());
  return base < hi && lo < end;
}

// One cublasLtMatmul of a plan (the host loop's first call) with its D pointer chosen by the
// caller: the tuner's timing runs.
struct Launch {
  cublasLtHandle_t lt;
  const Plan* plan;
  const float* alpha;
  const float* beta;
  const void* first;   // cuBLASLt's A: our b
  const void* second;  // cuBLASLt's B: our a
  const void* c;
  void* d;
  void* workspace;
  size_t workspace_bytes;
  cudaStream_t stream;
  cublasStatus_t operator()(const cublasLtMatmulAlgo_t& algo) const {
    return cublasLtMatmul(lt, plan->op, alpha, first, plan->la, second, plan->lb, beta, c,
                          plan->lc, d, plan->lc, &algo, workspace, workspace_bytes, stream);
  }
};

// Index into `cands` of the fastest candidate, timed with `run` (one warm-up, then `reps` runs
// between two events per candidate; one host sync for all of them). The earlier heuristic rank
// wins ties within 1% (timing noise is about that). A candidate that fails to launch is
// skipped; 0 when none could be timed. `timed` counts the candidates that were.
size_t fastest_candidate(const std::vector<cublasLtMatmulHeuristicResult_t>& cands,
                         const Launch& run, int reps, int64_t& timed) {
  const size_t n = cands.size();
  std::vector<cudaEvent_t> ev(2 * n, nullptr);
  struct Destroy {
    std::vector<cudaEvent_t>& e;
    ~Destroy() {
      for (cudaEvent_t x : e)
        if (x) cudaEventDestroy(x);
    }
  } destroy{ev};
  std::vector<bool> ok(n, false);
  cudaEvent_t last = nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (cudaEventCreate(&ev[2 * i]) != cudaSuccess || cudaEventCreate(&ev[2 * i + 1]) != cudaSuccess) {
      cudaGetLastError();
      break;
    }
    // The warm-up loads the candidate's kernel (lazy module loading happens on first launch,
    // on the host, so it must not fall between the events) and weeds out failing candidates.
    if (run(cands[i].algo) != CUBLAS_STATUS_SUCCESS) {
      cudaGetLastError();
      continue;
    }
    cudaEventRecord(ev[2 * i], run.stream);
    bool good = true;
    for (int r = 0; r < reps && good; ++r) good = run(cands[i].algo) == CUBLAS_STATUS_SUCCESS;
    cudaEventRecord(ev[2 * i + 1], run.stream);
    if (!good) {
      cudaGetLastError();
      continue;
    }
    ok[i] = true;
    last = ev[2 * i + 1];
  }
  if (!last || cudaEventSynchronize(last) != cudaSuccess) return 0;
  size_t best = n;
  float best_ms = 0;
  for (size_t i = 0; i < n; ++i) {
    float ms = 0;
    if (!ok[i] || cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]) != cudaSuccess) continue;
    ++timed;
    if (best == n || ms < 0.99f * best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  return best == n ? 0 : best;
}

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

GemmPlanStats gemm_plan_stats(Context& ctx) {
  if (!ctx.gemm_plans) return {};
  auto* cache = static_cast<PlanCache*>(ctx.gemm_plans.get());
  std::lock_guard<std::mutex> lock(cache->mu);
  return cache->stats;
}

void gemm_batched(const Tensor& a, const Tensor& b, Tensor& out, bool ta, bool tb,
                  const Shape& batch, Context& ctx, float alpha, const Tensor* c, GemmAlgo algo) {
  const char* op = "cuda::gemm_batched";
  require_cuda(a, op, "a");
  require_cuda(b, op, "b");
  require_contiguous(out, op, "out");
  if (c) {
    require_cuda(*c, op, "c");
    require_contiguous(*c, op, "c");
    LZ_CHECK(c->shape() == out.shape() && c->dtype() == out.dtype(), op, ": c ", c->desc(),
             " must have out's shape and dtype ", out.desc());
  }
  LZ_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), op, ": dtypes of ", a.desc(),
           ", ", b.desc(), ", ", out.desc(), " differ");
  const int64_t nb = static_cast<int64_t>(batch.size());
  LZ_CHECK(a.dim() == nb + 2 && b.dim() == nb + 2 && out.dim() == nb + 2, op,
           ": operands must be expanded to the batch ", shape_str(batch), ": ", a.desc(), ", ",
           b.desc(), ", ", out.desc());
  LZ_CHECK(a.strides()[nb + 1] == 1 && b.strides()[nb + 1] == 1, op,
           ": matrices must be row-major with unit inner stride: ", a.desc(), ", ", b.desc());
  const int64_t M = out.size(-2), N = out.size(-1);
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
  const bool fold = outer == 1 && count > 1 && sb == 0 && !ta && sa == M * lda && sc == M * N;
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
  for (int64_t i = 0; i < first_inner; ++i) {
    al_a.push_back(a.strides()[dims[i]] * es);
    al_b.push_back(b.strides()[dims[i]] * es);
  }
  auto align_list = [](const std::vector<int64_t>& v) {
    uint32_t a = 256;
    for (int64_t x : v) a = std::min(a, alignment_of({x}));
    return a;
  };
  const uint32_t align_a = align_list(al_a), align_b = align_list(al_b);
  // C and D share one layout: promise what holds for both pointers.
  const uint32_t align_c = alignment_of({reinterpret_cast<int64_t>(out.raw()), N * es,
                                         c ? reinterpret_cast<int64_t>(c->raw()) : 0});

  if (!ctx.gemm_plans) ctx.gemm_plans = std::make_shared<PlanCache>();
  auto* cache = static_cast<PlanCache*>(ctx.gemm_plans.get());
  PlanKey key{{static_cast<int64_t>(out.dtype()), Mf, N, K, ta, tb, lda, ldb, count, sa, sb, sc,
               align_a, align_b, align_c, c ? 1 : 0, static_cast<int64_t>(algo)}};
  Plan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(cache->mu);
    auto it = cache->plans.find(key);
    if (it != cache->plans.end()) plan = it->second.get();
  }
  auto lt = static_cast<cublasLtHandle_t>(ctx.blaslt);
  const float beta = c ? 1.f : 0.f;
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  char* pd = static_cast<char*>(out.raw());
  // With beta = 0 cuBLASLt does not read C; pass D so the pointer is valid anyway.
  const char* pc = c ? static_cast<const char*>(c->raw()) : pd;
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
    p->lc = make_layout(t, N, Mf, N, count, sc);
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    const uint64_t ws = ctx.workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    // Operand "A" of cuBLASLt is our b, "B" is our a.
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, 4);
    // FLOPs of one cuBLASLt call (the host loop makes `outer` of them).
    const double flops = 2.0 * static_cast<double>(Mf) * N * K * count;
    const bool tune = (algo == GemmAlgo::Tuned || (algo == GemmAlgo::Default && tuning_on_by_env())) &&
                      flops >= kGemmTuneMinFlops;
    if (tune && out.dtype() != DType::F32) {
      // Split-K candidates must sum their partial products in fp32: the in-place and
      // output-type schemes keep partials in bf16/f16, adding roundings the one-rounding
      // contract (and the tests' tolerances) do not allow. (f32 outputs: every scheme is fp32.)
      const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                           &schemes, sizeof(schemes));
    }
    std::vector<cublasLtMatmulHeuristicResult_t> results(tune ? kGemmTuneCandidates : 1);
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
        lt, p->op, p->la, p->lb, p->lc, p->lc, pref, static_cast<int>(results.size()),
        results.data(), &found);
    cublasLtMatmulPreferenceDestroy(pref);
    results.resize(st == CUBLAS_STATUS_SUCCESS ? static_cast<size_t>(std::max(found, 0)) : 0);
    results.erase(std::remove_if(results.begin(), results.end(),
                                 [](const cublasLtMatmulHeuristicResult_t& r) {
                                   return r.state != CUBLAS_STATUS_SUCCESS;
                                 }),
                  results.end());
    LZ_CHECK(!results.empty(), op, ": cuBLASLt has no algorithm for [", Mf, ", ", K, "] @ [", K,
             ", ", N, "] x", count, " ", dtype_name(out.dtype()), " (status ",
             static_cast<int>(st), ")");
    p->algo = results[0].algo;
    int64_t timed = 0;
    double tune_ms = 0;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    const cudaStream_t stream = as_stream(ctx.stream);
    if (results.size() > 1 && cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
        capture == cudaStreamCaptureStatusNone && cudaStreamSynchronize(stream) == cudaSuccess) {
      const auto t0 = std::chrono::steady_clock::now();
      // D of the timing runs: out itself when no input shares its bytes (the real call
      // overwrites all of it), else scratch. The first host-loop call writes
      // [pd, pd + ((count - 1) sc + Mf N) es).
      const int64_t d_elems = (count - 1) * sc + Mf * N;
      const auto lo = reinterpret_cast<uintptr_t>(pd);
      const uintptr_t hi = lo + static_cast<uintptr_t>(d_elems * es);
      const bool out_is_free = !overlaps(a, lo, hi) && !overlaps(b, lo, hi) &&
                               !(c && overlaps(*c, lo, hi));
      struct Scratch {
        void* ptr = nullptr;
        int device = 0;
        ~Scratch() {
          if (ptr) device_free(ptr, device);
        }
      } scratch;
      scratch.device = ctx.device;
      if (!out_is_free) {
        try {
          scratch.ptr = device_malloc(static_cast<size_t>(d_elems * es), ctx.device);
        } catch (const OutOfMemoryError&) {
          scratch.ptr = nullptr;  // no room to time: keep the first heuristic
        }
      }
      void* d_timing = out_is_free ? static_cast<void*>(pd) : scratch.ptr;
      if (d_timing) {
        // About 0.5 ms of timed work per candidate at a typical rate (bf16 tensor cores about
        // 400 TFLOP/s, f32 about 50), 1 to 5 runs: big GEMMs time stably in one run, small ones
        // need a few to rise above the event resolution and launch jitter.
        const double rate = out.dtype() == DType::F32 ? 5e13 : 4e14;
        const int reps = static_cast<int>(std::clamp(0.5e-3 / (flops / rate), 1.0, 5.0));
        const Launch run{lt, p.get(), &alpha, &beta, pb, pa, c ? static_cast<const void*>(pc) : d_timing,
                         d_timing, ctx.workspace, ctx.workspace_bytes, stream};
        p->algo = results[fastest_candidate(results, run, reps, timed)].algo;
      }
      tune_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    // The map's plan: when two threads missed on one key, the first insert wins and the other's
    // plan is dropped here, so a pointer taken before the insert could dangle.
    std::lock_guard<std::mutex> lock(cache->mu);
    ++cache->stats.plans;
    if (timed >= 2) ++cache->stats.tuned;
    cache->stats.candidates_timed += timed;
    cache->stats.tune_ms += tune_ms;
    plan = cache->plans.try_emplace(key, std::move(p)).first->second.get();
  }

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
