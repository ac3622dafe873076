// Uniformly random token datasets: throughput runs at a real model's vocabulary (Llama-3's
// 128256) where no tokenizer or corpus is at hand. Every token is a target (no loss mask),
// so every position costs what a real one does; the loss starts near ln(vocab_size).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lizard::eval {

struct RandomTokensSpec {
  int64_t vocab_size = 0;  ///< tokens are drawn uniformly from [0, vocab_size)
  int64_t num_docs = 0;    ///< documents in the file
  int64_t doc_len = 0;     ///< tokens per document
  uint64_t seed = 0;
};

/// Tokens [num_docs x doc_len] in document order: token (d, t) is a pure function of
/// (seed, d x doc_len + t) (Philox stream, offset 0), uniform over [0, vocab_size) up to a
/// bias below vocab_size / 2^32 (a 32-bit word taken modulo the vocabulary).
/// InputError unless vocab_size is in [1, 2^31), num_docs >= 1 and doc_len >= 1.
std::vector<int32_t> random_tokens(const RandomTokensSpec& spec);

/// Writes random_tokens(spec) as an HDF5 token dataset (io::TokenDatasetWriter: written to a
/// temporary and renamed): num_docs documents of doc_len tokens, vocab_size in the metadata,
/// tokenizer hash "random-uniform". InputError as random_tokens().
void write_random_token_dataset(const std::string& path, const RandomTokensSpec& spec);

}  // namespace lizard::eval
