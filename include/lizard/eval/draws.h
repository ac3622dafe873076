// A sequential view of one Philox stream (seed, offset) for host-side generators: the k-th
// draw is word k of the stream, so a generator's output depends only on (seed, offset) and
// the order of its draws, never on a platform's std:: distributions.
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/core/error.h"
#include "lizard/core/rng.h"

namespace lizard::eval {

class Draws {
 public:
  Draws(uint64_t seed, uint64_t offset) : seed_(seed), offset_(offset) {}
  /// The next 32-bit word.
  uint32_t u32() { return rng_u32(seed_, offset_, i_++); }
  /// Uniform in [0, 1) with 53 random bits (two words), so top-p thresholds near 1 are exact.
  double uniform() {
    const uint64_t hi = u32() >> 5, lo = u32() >> 6;  // 27 + 26 bits
    return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
  }
  /// Uniform integer in [0, n), n >= 1 (multiply-shift; bias below 2^-32 per draw).
  int64_t below(int64_t n) {
    LZ_CHECK(n >= 1, "Draws::below: n must be >= 1, got ", n);
    return static_cast<int64_t>((static_cast<uint64_t>(u32()) * static_cast<uint64_t>(n)) >> 32);
  }
  /// Index drawn from unnormalised non-negative weights (at least one positive).
  size_t pick(const std::vector<double>& weights) {
    double total = 0;
    for (double w : weights) total += w;
    LZ_CHECK(total > 0, "Draws::pick: all weights are zero");
    double u = uniform() * total;
    for (size_t i = 0; i < weights.size(); ++i) {
      if (u < weights[i]) return i;
      u -= weights[i];
    }
    for (size_t i = weights.size(); i-- > 0;)  // rounding left u at the end: the last positive one
      if (weights[i] > 0) return i;
    return 0;
  }
  /// Number of words consumed so far.
  uint64_t position() const { return i_; }

 private:
  uint64_t seed_, offset_;
  uint64_t i_ = 0;
};

}  // namespace lizard::eval
