// Random token datasets: range, uniformity (chi-square), determinism, and the HDF5 round trip
// that `lizard make-demo-data --random-vocab` relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "lizard/core/error.h"
#include "lizard/eval/random_tokens.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::eval {
namespace {

TEST(RandomTokens, CoverTheWholeVocabularyUniformly) {
  // Llama-3's vocabulary: a generator truncated to 16 bits (or a float draw scaled with too
  // few mantissa bits) would never reach the top ids; the max over 200k draws misses the top
  // 0.1% of the range with probability (1 - 1e-3)^200000 ~ e^-200.
  RandomTokensSpec s{128256, 100, 2000, 5};
  const std::vector<int32_t> t = random_tokens(s);
  ASSERT_EQ(t.size(), size_t{200000});
  const auto [lo, hi] = std::minmax_element(t.begin(), t.end());
  EXPECT_GE(*lo, 0);
  EXPECT_LT(*hi, 128256);
  EXPECT_GT(*hi, 128256 - 129);
  EXPECT_LT(*lo, 129);
  // The mean of n uniform draws over [0, V) is (V - 1) / 2 with sd V / sqrt(12 n): 5 sd.
  double mean = 0;
  for (int32_t v : t) mean += v;
  mean /= static_cast<double>(t.size());
  const double sd = 128256.0 / std::sqrt(12.0 * 200000.0);
  EXPECT_NEAR(mean, (128256.0 - 1.0) / 2.0, 5 * sd);

  // An awkward small vocabulary: chi-square over 7 bins (6 degrees of freedom) at n = 70000;
  // chance exceeds 40 with p ~ 3e-7. An off-by-one range (ids in [0, 6)) leaves a bin empty
  // and gives chi2 ~ 11700; a 5% bias on one bin gives ~ 25 + noise, near the bound.
  RandomTokensSpec small{7, 10, 7000, 11};
  std::vector<double> counts(7, 0.0);
  for (int32_t v : random_tokens(small)) {
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    counts[static_cast<size_t>(v)] += 1;
  }
  double chi2 = 0;
  for (double c : counts) chi2 += (c - 10000.0) * (c - 10000.0) / 10000.0;
  EXPECT_LT(chi2, 40.0);
}

TEST(RandomTokens, DeterministicBySeed) {
  RandomTokensSpec a{128256, 3, 517, 1};
  RandomTokensSpec b = a;
  b.seed = 2;
  const auto ta = random_tokens(a), tb = random_tokens(b);
  EXPECT_EQ(ta, random_tokens(a));
  // Two seeds agree on a position with probability 1/V: at most a few of 1551.
  int64_t same = 0;
  for (size_t i = 0; i < ta.size(); ++i) same += ta[i] == tb[i];
  EXPECT_LE(same, 3);
  // A longer file starts with the same documents (a pure function of the position).
  RandomTokensSpec longer = a;
  longer.num_docs = 5;
  const auto tl = random_tokens(longer);
  EXPECT_TRUE(std::equal(ta.begin(), ta.end(), tl.begin()));
}

TEST(RandomTokens, RejectsBadSpecs) {
  EXPECT_THROW(random_tokens({0, 1, 1, 0}), InputError);
  EXPECT_THROW(random_tokens({int64_t{1} << 31, 1, 1, 0}), InputError);
  EXPECT_THROW(random_tokens({10, 0, 1, 0}), InputError);
  EXPECT_THROW(random_tokens({10, 1, 0, 0}), InputError);
}

TEST(RandomTokens, WritesATokenDatasetTheLoaderAccepts) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("lizard_random_tokens_" + std::to_string(getpid()) + ".h5"))
                               .string();
  RandomTokensSpec s{128256, 4, 33, 9};
  write_random_token_dataset(path, s);
  const io::TokenDataset ds = io::TokenDataset::open(path);
  EXPECT_EQ(ds.meta().vocab_size, 128256);
  EXPECT_EQ(ds.meta().tokenizer_hash, "random-uniform");
  ASSERT_EQ(ds.num_docs(), 4);
  EXPECT_FALSE(ds.has_mask());
  const std::vector<int32_t> want = random_tokens(s);
  for (int64_t d = 0; d < 4; ++d) {
    ASSERT_EQ(ds.doc_len(d), 33);
    for (int64_t t = 0; t < 33; ++t)
      EXPECT_EQ(ds.token(ds.doc_begin(d) + t), want[static_cast<size_t>(d * 33 + t)]);
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace lizard::eval
