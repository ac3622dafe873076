// Smoke test of the op benchmark harness (quick shapes): every row timed, finite, positive.
// With LIZARD_BENCH_FULL=1 it runs the full-size benchmark and prints its JSON (a way to get
// numbers before `lizard bench ops` is wired).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <iostream>

#include "lizard/cuda/bench.h"
#include "test_util.h"

using namespace lizard;

TEST(GpuBench, QuickRowsArePositive) {
  LZ_REQUIRE_GPU();
  const bool full = std::getenv("LIZARD_BENCH_FULL") != nullptr;
  auto rows = cuda::bench_ops(0, full ? 20 : 3, !full);
  ASSERT_GE(rows.size(), 15u);
  for (const auto& r : rows) {
    EXPECT_TRUE(std::isfinite(r.median_ms) && r.median_ms > 0) << r.op;
    EXPECT_GT(r.frac_of_peak, 0) << r.op;
  }
  std::cout << cuda::bench_rows_json(rows, 0) << std::endl;
}
