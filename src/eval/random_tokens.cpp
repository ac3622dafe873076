// Uniformly random token datasets (see include/lizard/eval/random_tokens.h).
#include "lizard/eval/random_tokens.h"

#include "lizard/core/error.h"
#include "lizard/core/rng.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::eval {

namespace {

void check_spec(const RandomTokensSpec& s) {
  LZ_INPUT_CHECK(s.vocab_size >= 1 && s.vocab_size < (int64_t{1} << 31),
                 "random tokens: vocab_size must be in [1, 2^31), got ", s.vocab_size);
  LZ_INPUT_CHECK(s.num_docs >= 1, "random tokens: num_docs must be >= 1, got ", s.num_docs);
  LZ_INPUT_CHECK(s.doc_len >= 1, "random tokens: doc_len must be >= 1, got ", s.doc_len);
}

}  // namespace

std::vector<int32_t> random_tokens(const RandomTokensSpec& spec) {
  check_spec(spec);
  const int64_t n = spec.num_docs * spec.doc_len;
  std::vector<int32_t> out(static_cast<size_t>(n));
  const uint64_t v = static_cast<uint64_t>(spec.vocab_size);
  for (int64_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] =
        static_cast<int32_t>(rng_u32(spec.seed, 0, static_cast<uint64_t>(i)) % v);
  return out;
}

void write_random_token_dataset(const std::string& path, const RandomTokensSpec& spec) {
  const std::vector<int32_t> all = random_tokens(spec);
  io::TokenDatasetMeta meta;
  meta.tokenizer_hash = "random-uniform";
  meta.vocab_size = spec.vocab_size;
  io::TokenDatasetWriter w(path, meta);
  for (int64_t d = 0; d < spec.num_docs; ++d) {
    const auto begin = all.begin() + d * spec.doc_len;
    w.add(std::vector<int32_t>(begin, begin + spec.doc_len));
  }
  w.finish();
}

}  // namespace lizard::eval
