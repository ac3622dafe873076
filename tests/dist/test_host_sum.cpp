// sum_doubles_on_host: the host-side sum of a few doubles over ranks that DataParallel uses on
// GPUs (target counts, loss sums) instead of a round trip through NCCL. Checked against sums
// written out by hand over a fake communicator whose ranks hold different values.
#include <gtest/gtest.h>

#include <cstring>

#include "lizard/core/error.h"
#include "lizard/dist/data_parallel.h"
#include "dist/fake_pair.h"

namespace lizard::dist {
namespace {

// Three ranks; this process is rank `rank`, the others send fixed values (or a wrong size).
class FakeTrio : public test::FakePair {
 public:
  FakeTrio(int rank, std::vector<std::vector<double>> others)
      : test::FakePair(0), rank_(rank), others_(std::move(others)) {}
  int rank() const override { return rank_; }
  int world_size() const override { return 3; }
  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& m) override {
    std::vector<std::vector<uint8_t>> out;
    size_t k = 0;
    for (int r = 0; r < 3; ++r) {
      if (r == rank_) {
        out.push_back(m);
        continue;
      }
      const std::vector<double>& v = others_[k++];
      std::vector<uint8_t> b(v.size() * sizeof(double));
      std::memcpy(b.data(), v.data(), b.size());
      out.push_back(b);
    }
    return out;
  }

 private:
  int rank_;
  std::vector<std::vector<double>> others_;
};

TEST(HostSum, SumsEveryRanksValuesInRankOrder) {
  // 1e16 + 1 - 1e16 is 0 in doubles when summed left to right (1e16 + 1 rounds to 1e16),
  // 1 in another order: the rank-0-first order is what every rank must use, or the ranks'
  // loss and count would differ in the last bits and their branches could diverge.
  for (int rank = 0; rank < 3; ++rank) {
    std::vector<std::vector<double>> rows = {{1e16, 3.0}, {1.0, 4.5}, {-1e16, -0.25}};
    std::vector<double> mine = rows[static_cast<size_t>(rank)];
    rows.erase(rows.begin() + rank);
    FakeTrio comm(rank, rows);
    sum_doubles_on_host(comm, mine.data(), 2);
    EXPECT_EQ(mine[0], (1e16 + 1.0) + -1e16) << "rank " << rank;
    EXPECT_EQ(mine[0], 0.0) << "rank " << rank;
    EXPECT_EQ(mine[1], 3.0 + 4.5 - 0.25) << "rank " << rank;
  }
}

TEST(HostSum, RanksSendingAnotherCountIsAnError) {
  FakeTrio comm(1, {{1.0, 2.0}, {3.0}});
  std::vector<double> mine = {5.0, 6.0};
  EXPECT_THROW(sum_doubles_on_host(comm, mine.data(), 2), Error);
}

}  // namespace
}  // namespace lizard::dist
