// HDF5 token datasets (DESIGN.md section 5): datasets `tokens` (int32, all documents
// concatenated), `offsets` (int64, the start of each document), optional `loss_mask` (uint8,
// one per token: 1 = the token is a training target), optional `input_tokens` (int32, one per
// token: what the model reads at that position where it differs from `tokens`, the targets;
// e.g. an MQAR answer that is only a label), and root attributes `tokenizer_hash`,
// `vocab_size` and `schema_version`.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::io {

/// The schema version this build writes and reads.
constexpr int64_t kTokenSchemaVersion = 1;

struct TokenDatasetMeta {
  std::string tokenizer_hash;  ///< identifies the tokenizer (e.g. a hash of tokenizer.json)
  int64_t vocab_size = 0;      ///< every token is in [0, vocab_size)
};

/// Accumulates documents and writes the file on finish(): to `path.tmp`, then renamed, so a
/// crash never leaves a half-written dataset under the final name.
class TokenDatasetWriter {
 public:
  TokenDatasetWriter(std::string path, TokenDatasetMeta meta);
  /// Appends one non-empty document. `mask` (same length, 0/1) marks target tokens; once any
  /// document has a mask, documents without one count as all-ones. `inputs` (same length,
  /// ids in the vocabulary) is what the model reads where it differs from `tokens` (the
  /// targets); documents without it read their tokens.
  void add(const std::vector<int32_t>& tokens, const std::vector<uint8_t>* mask = nullptr,
           const std::vector<int32_t>* inputs = nullptr);
  int64_t num_docs() const { return static_cast<int64_t>(offsets_.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  /// Writes and renames into place. Call once.
  void finish();

 private:
  std::string path_;
  TokenDatasetMeta meta_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> offsets_;
  std::vector<uint8_t> mask_;  // empty until the first masked document
  std::vector<int32_t> inputs_;  // empty until the first document with inputs
  bool finished_ = false;
};

/// A token dataset loaded into memory (validated on open: schema version, offsets, token
/// range, mask length). Random access to any document.
class TokenDataset {
 public:
  /// InputError naming the file on a missing/corrupt file or a schema violation.
  static TokenDataset open(const std::string& path);

  const std::string& path() const { return path_; }
  const TokenDatasetMeta& meta() const { return meta_; }
  int64_t num_docs() const { return static_cast<int64_t>(offsets_.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  bool has_mask() const { return !mask_.empty(); }
  int64_t doc_begin(int64_t i) const { return offsets_[i]; }
  int64_t doc_end(int64_t i) const {
    return i + 1 < num_docs() ? offsets_[i + 1] : num_tokens();
  }
  int64_t doc_len(int64_t i) const { return doc_end(i) - doc_begin(i); }
  /// Token at absolute position p of the concatenation.
  int32_t token(int64_t p) const { return tokens_[p]; }
  /// Whether the token at p is a target (always true without a mask).
  bool is_target(int64_t p) const { return mask_.empty() || mask_[p] != 0; }
  bool has_inputs() const { return !inputs_.empty(); }
  /// What the model reads at p: `input_tokens` where the file has them, else the token.
  int32_t input(int64_t p) const { return inputs_.empty() ? tokens_[p] : inputs_[p]; }

 private:
  std::string path_;
  TokenDatasetMeta meta_;
  std::vector<int32_t> tokens_;
  std::vector<int64_t> offsets_;
  std::vector<uint8_t> mask_;
  std::vector<int32_t> inputs_;
};

}  // namespace lizard::io
