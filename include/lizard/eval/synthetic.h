// The embedded demo's training corpus, built without downloads: grammar text for language
// modelling, MQAR sequences for recall and passkey prompts for long-context retrieval, all in
// one SyntheticVocab. The documents (tokens + loss mask) go straight into the HDF5 token
// dataset writer (io::TokenDatasetWriter::add(doc.tokens, &doc.loss_mask)).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/eval/grammar.h"
#include "lizard/eval/mqar.h"
#include "lizard/eval/passkey.h"
#include "lizard/eval/synthetic_vocab.h"

namespace lizard::eval {

struct DemoDataSpec {
  int64_t grammar_docs = 2000;
  GrammarSpec grammar;
  int64_t mqar_docs = 2000;
  MqarSpec mqar;
  /// Passkey prompts at `passkey.length`, each at a depth uniform in [0, 1].
  int64_t passkey_docs = 0;
  PasskeySpec passkey;
  uint64_t seed = 0;
};

/// Grammar documents, then MQAR, then passkey (the data loader shuffles). Each task draws from
/// its own stream derived from `seed`, so changing one count leaves the other tasks' documents
/// unchanged. MQAR and passkey masks mark only their answers; grammar masks every token but <bos>.
std::vector<TokenDocument> demo_documents(const SyntheticVocab& vocab, const DemoDataSpec& spec);

/// A stable identifier of the vocabulary: FNV-1a 64 of its words joined by newlines, as 16 hex
/// digits. Stored as the dataset's tokenizer_hash, so a model never reads tokens of another
/// vocabulary by mistake.
std::string vocab_hash(const SyntheticVocab& vocab);

/// Writes `docs` as an HDF5 token dataset (DESIGN.md section 5: tokens, offsets, loss_mask,
/// vocab_size = vocab.size(), tokenizer_hash = vocab_hash) through io::TokenDatasetWriter
/// (temporary file renamed into place). Empty documents are an InputError naming their index.
void write_token_dataset(const std::string& path, const SyntheticVocab& vocab,
                         const std::vector<TokenDocument>& docs);

/// The seed of task `task` (0 grammar, 1 MQAR, 2 passkey, others free) derived from `seed`.
uint64_t task_seed(uint64_t seed, uint64_t task);

}  // namespace lizard::eval
