// ops::gather_rows / ops::scatter_add_rows (the row exchange of an embedding gradient) against
// loops written here, on the CPU and, where a GPU is visible, the CUDA kernels against the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "lizard/ops/sparse_rows.h"
#include "test_util.h"

using namespace lizard;
using lizard::test::rand;

namespace {

// Unique ids in no particular order, the last row of the table included.
std::vector<int32_t> unique_ids(int64_t V) {
  std::vector<int32_t> ids;
  for (int64_t v = V - 1; v >= 0; v -= 3) ids.push_back(static_cast<int32_t>(v));
  // 1 out of order too, unless the stride already took it ((V - 2) % 3 == 0, e.g. V = 1001):
  // scatter_add_rows requires unique ids, and a repeated one races on the GPU.
  if ((V - 2) % 3 != 0) ids.push_back(1);
  return ids;
}

// dst[ids[i]] += rows[i] in f64 on the values of the tensors (an independent loop).
std::vector<double> scatter_add_f64(const Tensor& dst, const std::vector<int32_t>& ids,
                                    const Tensor& rows, int64_t D) {
  std::vector<double> out = dst.to_vector();
  const std::vector<double> r = rows.to_vector();
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t d = 0; d < D; ++d) out[ids[i] * D + d] += r[i * D + d];
  return out;
}

}  // namespace

TEST(SparseRows, GatherCopiesTheNamedRowsExactly) {
  const int64_t V = 17, D = 5;
  const Tensor src = rand({V, D}, 1, DType::F32);
  const std::vector<int32_t> ids = unique_ids(V);
  const auto n = static_cast<int64_t>(ids.size());
  Tensor out = Tensor::full({n, D}, 9, DType::F32);
  ops::gather_rows(src, Tensor::from_data(ids, {n}), out);
  const std::vector<double> s = src.to_vector(), o = out.to_vector();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(o[i * D + d], s[ids[i] * D + d]) << i << "," << d;
}

TEST(SparseRows, ScatterAddAddsEachRowOnceAndLeavesTheOthers) {
  const int64_t V = 19, D = 6;
  Tensor dst = rand({V, D}, 2, DType::F32);
  const std::vector<int32_t> ids = unique_ids(V);
  const auto n = static_cast<int64_t>(ids.size());
  const Tensor rows = rand({n, D}, 3, DType::F32);
  const std::vector<double> want = scatter_add_f64(dst, ids, rows, D);
  const std::vector<double> before = dst.to_vector();
  ops::scatter_add_rows(dst, Tensor::from_data(ids, {n}), rows);
  const std::vector<double> got = dst.to_vector();
  for (int64_t v = 0; v < V; ++v) {
    const bool hit = std::find(ids.begin(), ids.end(), v) != ids.end();
    for (int64_t d = 0; d < D; ++d) {
      const size_t k = static_cast<size_t>(v * D + d);
      if (hit) {
        // One f32 rounding of a sum of two values in [-1, 1): at most 2^-24 x 2 = 1.2e-7.
        EXPECT_NEAR(got[k], want[k], 1.2e-7) << "row " << v;
      } else {
        EXPECT_EQ(got[k], before[k]) << "row " << v << " was not named";
      }
    }
  }
}

TEST(SparseRows, AnIdOutsideTheTableIsAnErrorNamingIt) {
  Tensor dst = Tensor::zeros({4, 2});
  const Tensor ids = Tensor::from_data(std::vector<int32_t>{1, 4}, {2});
  try {
    ops::scatter_add_rows(dst, ids, Tensor::zeros({2, 2}));
    FAIL() << "no error for row 4 of a 4-row table";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("row id 4 at position 1"), std::string::npos) << e.what();
  }
  Tensor out = Tensor::zeros({2, 2});
  EXPECT_THROW(ops::gather_rows(dst, ids, out), InputError);
  // Rows of another width are a shape error.
  EXPECT_THROW(ops::scatter_add_rows(dst, ids, Tensor::zeros({2, 3})), Error);
}

TEST(SparseRows, CudaKernelsMatchTheCpu) {
  LZ_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  // D = 300: more columns than one block's 256 threads; V, n odd.
  const int64_t V = 1001, D = 300;
  const std::vector<int32_t> ids = unique_ids(V);
  const auto n = static_cast<int64_t>(ids.size());
  const Tensor ids_cpu = Tensor::from_data(ids, {n});
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor src = rand({V, D}, 4, DType::F32).to(dt);  // values representable in dt
    Tensor out = Tensor::empty({n, D}, dt, gpu);
    ops::gather_rows(src.to(gpu), ids_cpu.to(gpu), out);
    Tensor out_cpu = Tensor::empty({n, D}, DType::F32);
    ops::gather_rows(src.to(DType::F32), ids_cpu, out_cpu);
    // A gather is a copy: exact.
    EXPECT_EQ(test::max_abs_diff(out.to(Device::cpu()).to(DType::F32), out_cpu), 0.0) << dtype_name(dt);

    const Tensor rows = rand({n, D}, 5, DType::F32).to(dt);
    Tensor dst = src.to(gpu);
    ops::scatter_add_rows(dst, ids_cpu.to(gpu), rows.to(gpu));
    // The reference: the same f32 sums on the CPU, rounded once to dt. f32: the same
    // operation, bitwise. bf16: the host's and the kernel's rounding of the f32 sum may differ
    // by one bf16 step at a tie: 2^-8 of |value| <= 2.
    Tensor ref = src.to(DType::F32);
    ops::scatter_add_rows(ref, ids_cpu, rows.to(DType::F32));
    const double tol = dt == DType::F32 ? 0.0 : 2.0 / 256;
    EXPECT_LE(test::max_abs_diff(dst.to(Device::cpu()).to(DType::F32), ref.to(dt).to(DType::F32)), tol)
        << dtype_name(dt);
  }
}
