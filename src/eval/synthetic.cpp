#include "lizard/eval/synthetic.h"

#include <cstdio>

#include "lizard/core/error.h"
#include "lizard/core/rng.h"
#include "lizard/eval/draws.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::eval {

uint64_t task_seed(uint64_t seed, uint64_t task) {
  // Two Philox words of a reserved stream: unrelated seeds for neighbouring tasks.
  const uint64_t kSalt = 0x6c697a617264ull;  // "lizard"
  return (static_cast<uint64_t>(rng_u32(seed, kSalt + task, 0)) << 32) | rng_u32(seed, kSalt + task, 1);
}

std::vector<TokenDocument> demo_documents(const SyntheticVocab& vocab, const DemoDataSpec& spec) {
  std::vector<TokenDocument> docs = grammar_documents(vocab, spec.grammar_docs, task_seed(spec.seed, 0), spec.grammar);
  for (auto& s : mqar_samples(vocab, spec.mqar, spec.mqar_docs, task_seed(spec.seed, 1)))
    docs.push_back(std::move(s.doc));
  const uint64_t pk_seed = task_seed(spec.seed, 2);
  for (int64_t i = 0; i < spec.passkey_docs; ++i) {
    PasskeySpec p = spec.passkey;
    // The depth comes from the task's stream 2^63 + i, away from the samples' streams 0..n-1.
    p.depth = Draws(pk_seed, (1ull << 63) + static_cast<uint64_t>(i)).uniform();
    docs.push_back(passkey_sample(vocab, p, pk_seed, static_cast<uint64_t>(i)).doc);
  }
  return docs;
}

std::string vocab_hash(const SyntheticVocab& vocab) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::string& w : vocab.words()) {
    for (unsigned char c : w) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ static_cast<unsigned char>('\n')) * 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void write_token_dataset(const std::string& path, const SyntheticVocab& vocab,
                         const std::vector<TokenDocument>& docs) {
  io::TokenDatasetMeta meta;
  meta.tokenizer_hash = "synthetic-" + vocab_hash(vocab);
  meta.vocab_size = vocab.size();
  io::TokenDatasetWriter w(path, meta);
  for (size_t i = 0; i < docs.size(); ++i) {
    const TokenDocument& d = docs[i];
    LZ_INPUT_CHECK(!d.tokens.empty(), "synthetic dataset '", path, "': document ", i, " is empty");
    LZ_INPUT_CHECK(d.loss_mask.empty() || d.loss_mask.size() == d.tokens.size(), "synthetic dataset '",
                   path, "': document ", i, " has ", d.tokens.size(), " tokens but ",
                   d.loss_mask.size(), " mask entries");
    LZ_INPUT_CHECK(d.inputs.empty() || d.inputs.size() == d.tokens.size(), "synthetic dataset '", path,
                   "': document ", i, " has ", d.tokens.size(), " tokens but ", d.inputs.size(), " inputs");
    w.add(d.tokens, d.loss_mask.empty() ? nullptr : &d.loss_mask, d.inputs.empty() ? nullptr : &d.inputs);
  }
  w.finish();
}

}  // namespace lizard::eval
