#include "lizard/eval/synthetic.h"

#include "lizard/core/rng.h"
#include "lizard/eval/draws.h"

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

}  // namespace lizard::eval
