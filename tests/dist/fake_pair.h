// A fake two-rank Communicator for single-process tests of the dist layer: this process plays
// rank `rank` of two on the CPU and its peer holds the same tensors, so every answer is known
// (all-reduce sum = 2x, all-gather = this rank's message twice). It records what it is asked
// to do so tests can check the order and sizes of collectives.
#pragma once

#include <memory>
#include <vector>

#include "lizard/dist/communicator.h"
#include "lizard/ops/elementwise.h"

namespace lizard::test {

class FakePair : public dist::Communicator {
 public:
  /// Rank `rank` (0 or 1) of two; `local_size` ranks share this node (local rank = rank % it).
  explicit FakePair(int rank = 0, int local_size = 1) : rank_(rank), local_size_(local_size) {}
  int rank() const override { return rank_; }
  int world_size() const override { return 2; }
  int local_rank() const override { return rank_ % local_size_; }
  int local_size() const override { return local_size_; }
  Device device() const override { return Device::cpu(); }
  const char* backend() const override { return "fake-pair"; }
  /// Doubles t (the peer contributes the same values) and records t's numel in `reduced`.
  void all_reduce_sum(Tensor& t) override {
    reduced.push_back(t.numel());
    t.copy_(ops::affine(t, 2.0));
  }
  /// The synchronous all-reduce; the returned work is already complete.
  std::unique_ptr<dist::Work> all_reduce_sum_async(Tensor& t) override {
    all_reduce_sum(t);
    struct Done : dist::Work {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  /// Leaves t as it is (the peer holds the same) and records the root in `roots`.
  void broadcast(Tensor&, int root) override { roots.push_back(root); }
  /// out = [in, in] (the peer holds the same).
  std::unique_ptr<dist::Work> all_gather_async(const Tensor& in, Tensor& out) override {
    const int64_t n = in.numel();
    Tensor mine = in.contiguous().view({n});
    for (int r = 0; r < 2; ++r) out.view({2 * n}).slice(0, r * n, (r + 1) * n).copy_(mine);
    struct Done : dist::Work {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void barrier() override {}
  std::vector<std::vector<uint8_t>> all_gather_bytes(const std::vector<uint8_t>& m) override {
    return {m, m};
  }

  std::vector<int64_t> reduced;  ///< numel of each all-reduce, in order
  std::vector<int> roots;        ///< root of each broadcast, in order

 private:
  int rank_, local_size_;
};

}  // namespace lizard::test
