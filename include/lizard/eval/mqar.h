// Multi-query associative recall (MQAR; Arora et al., "Zoology", 2023), DESIGN.md section 6.
//
// Layout of one sequence of seq_len tokens (positions 0..seq_len-1):
//   0                    <bos>
//   1 .. 2N              N pairs "k v": distinct keys, values drawn with replacement
//   2N+1 .. seq_len-1    Q queries "k v" (each an earlier pair's key and its value), in random
//                        order, separated by runs of the filler token "-" (or, random_filler,
//                        random words that are neither keys nor values) of random lengths;
//                        queries are placed only where an allowed distance is possible
//                        (positions 1 + min_distance .. 2N - 1 + max_distance), filler elsewhere
// Only the value of each query is a target (loss mask 1); the model must recall it from the
// pair. With hide_answers the model reads a filler word there instead (doc.inputs). The distance of a query is query_pos - key_pos (query key to pair key): the pair is
// inside a window of w tokens ending at the query (t - w < s <= t) iff distance < w, so
// recall can be reported inside and beyond the Lizard window separately.
#pragma once
#include <cstdint>
#include <vector>

#include "lizard/eval/synthetic_vocab.h"

namespace lizard::eval {

struct MqarSpec {
  int64_t seq_len = 256;
  int64_t num_pairs = 16;     ///< N, <= the vocabulary's num_keys
  int64_t num_queries = 0;    ///< Q <= N (0: Q = N); each key is queried at most once
  int64_t min_distance = 1;   ///< every query's distance is in [min_distance, max_distance]
  int64_t max_distance = 0;   ///< 0: unbounded
  /// > 0: each sample draws its own pair count uniformly from [min_pairs, num_pairs] (a mixture
  /// of easy and hard sequences; Q = 0 then means one query per pair of that sample).
  int64_t min_pairs = 0;
  /// Query keys drawn with replacement (a key may be asked again; Q may exceed N). With each
  /// key asked once and the answers visible as inputs, a model can score 1/N + 1/(N-1) + ...
  /// by eliminating the values already asked (35% at N = 8) without binding any key to its
  /// value; drawing with replacement removes that shortcut.
  bool replace_queries = false;
  /// The filler between queries is random non-key, non-value words instead of "-".
  bool random_filler = false;
  /// The answers are labels only (Zoology's layout): the model reads a filler word where
  /// each query's value stands in `doc.tokens` (`doc.inputs` differs there), so no query can
  /// be answered from the answers of earlier ones. Torch runs of the demo teacher's shape
  /// (scripts/hf/mqar_torch_reference.py) learnt to bind keys to values only in this layout.
  bool hide_answers = false;
};

struct MqarQuery {
  int64_t key_pos = 0;    ///< position of the key in its pair
  int64_t query_pos = 0;  ///< position of the key in the query (the answer is at query_pos + 1)
  int32_t key = 0, value = 0;
  int64_t distance() const { return query_pos - key_pos; }
};

struct MqarSample {
  TokenDocument doc;               ///< exactly seq_len tokens
  std::vector<MqarQuery> queries;  ///< in position order
  int64_t num_pairs = 0;           ///< N of this sample (spec.num_pairs unless min_pairs > 0)
};

/// Sample `index` of stream `seed` (depends only on spec, seed, index and the vocabulary's
/// key/value counts). InputError naming the field when the spec cannot be met (too many pairs
/// or queries for seq_len, num_pairs > num_keys, or no key at an allowed distance for a query).
MqarSample mqar_sample(const SyntheticVocab& vocab, const MqarSpec& spec, uint64_t seed,
                       uint64_t index);

/// Samples index 0..n-1 of stream `seed`.
std::vector<MqarSample> mqar_samples(const SyntheticVocab& vocab, const MqarSpec& spec, int64_t n,
                                     uint64_t seed);

}  // namespace lizard::eval
