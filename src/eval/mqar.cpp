#include "lizard/eval/mqar.h"

#include <algorithm>

#include "lizard/core/error.h"
#include "lizard/eval/draws.h"

namespace lizard::eval {

namespace {

// Keys for the queries at `query_pos` (ascending), each from `key_pos` with its distance in
// [lo, hi], each key at most once. Random choice among the eligible keys first; if that paints
// itself into a corner, the earliest-eligible-key greedy, which is optimal here because every
// query's eligible interval moves right with its position. Returns pair indices or {} if none.
std::vector<int64_t> assign_keys(Draws& d, const std::vector<int64_t>& key_pos,
                                 const std::vector<int64_t>& query_pos, int64_t lo, int64_t hi,
                                 bool random, bool replace) {
  std::vector<bool> used(key_pos.size(), false);
  std::vector<int64_t> out;
  for (int64_t q : query_pos) {
    std::vector<int64_t> eligible;
    for (size_t i = 0; i < key_pos.size(); ++i) {
      const int64_t dist = q - key_pos[i];
      if ((replace || !used[i]) && dist >= lo && dist <= hi) eligible.push_back(static_cast<int64_t>(i));
    }
    if (eligible.empty()) return {};
    const int64_t pick =
        random ? eligible[static_cast<size_t>(d.below(static_cast<int64_t>(eligible.size())))]
               : eligible.front();
    used[static_cast<size_t>(pick)] = true;
    out.push_back(pick);
  }
  return out;
}

}  // namespace

MqarSample mqar_sample(const SyntheticVocab& vocab, const MqarSpec& spec, uint64_t seed,
                       uint64_t index) {
  LZ_INPUT_CHECK(spec.num_pairs >= 1, "mqar: num_pairs must be >= 1, got ", spec.num_pairs);
  LZ_INPUT_CHECK(spec.min_pairs >= 0 && spec.min_pairs <= spec.num_pairs, "mqar: min_pairs ",
                 spec.min_pairs, " must be in [0, num_pairs = ", spec.num_pairs, "]");
  LZ_INPUT_CHECK(spec.num_pairs <= vocab.num_keys(), "mqar: num_pairs ", spec.num_pairs, " exceeds the ",
                 vocab.num_keys(), " keys of the vocabulary");
  Draws d(seed, index);
  const int64_t N = spec.min_pairs > 0 ? spec.min_pairs + d.below(spec.num_pairs - spec.min_pairs + 1)
                                       : spec.num_pairs;
  const int64_t Q = spec.num_queries > 0 ? spec.num_queries : N;
  LZ_INPUT_CHECK(spec.replace_queries || Q <= N, "mqar: num_queries ", Q, " exceeds the ", N,
                 " pairs (each key is queried at most once unless replace_queries)");
  const int64_t region = spec.seq_len - 1 - 2 * N;
  LZ_INPUT_CHECK(region >= 2 * Q, "mqar: seq_len ", spec.seq_len, " is too short for ", N,
                 " pairs and ", Q, " queries (needs at least ", 1 + 2 * N + 2 * Q, ")");
  const int64_t lo = spec.min_distance;
  const int64_t hi = spec.max_distance > 0 ? spec.max_distance : spec.seq_len;
  LZ_INPUT_CHECK(lo >= 1 && lo <= hi, "mqar: need 1 <= min_distance <= max_distance, got ", lo,
                 " and ", spec.max_distance);

  // N distinct keys: a partial Fisher-Yates shuffle of all key indices.
  std::vector<int64_t> perm(static_cast<size_t>(vocab.num_keys()));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t j = i + d.below(vocab.num_keys() - i);
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  std::vector<int32_t> keys, values;
  std::vector<int64_t> key_pos;
  for (int64_t i = 0; i < N; ++i) {
    keys.push_back(vocab.key(perm[static_cast<size_t>(i)]));
    values.push_back(vocab.value(d.below(vocab.num_values())));
    key_pos.push_back(1 + 2 * i);
  }

  // Queries go where some pair can be at an allowed distance: from 1 + min_distance (the
  // first key is at 1) to (2N - 1) + max_distance (the last key), clipped to the region. The
  // span's free tokens are spread over the Q + 1 gaps around the queries; the rest is filler.
  const int64_t span_begin = std::max(1 + 2 * N, 1 + lo);
  const int64_t span_end = std::min(spec.seq_len, 2 * N - 1 + hi + 2);  // exclusive, answers included
  LZ_INPUT_CHECK(span_end - span_begin >= 2 * Q, "mqar: only ", std::max<int64_t>(span_end - span_begin, 0),
                 " positions of seq_len ", spec.seq_len, " allow distances in [", lo, ", ", hi,
                 "], too few for ", Q, " queries");
  std::vector<int64_t> gaps(static_cast<size_t>(Q + 1), 0);
  for (int64_t f = 0; f < span_end - span_begin - 2 * Q; ++f) ++gaps[static_cast<size_t>(d.below(Q + 1))];
  std::vector<int64_t> query_pos;
  int64_t p = span_begin;
  for (int64_t q = 0; q < Q; ++q) {
    p += gaps[static_cast<size_t>(q)];
    query_pos.push_back(p);
    p += 2;
  }

  std::vector<int64_t> chosen = assign_keys(d, key_pos, query_pos, lo, hi, true, spec.replace_queries);
  if (chosen.empty()) chosen = assign_keys(d, key_pos, query_pos, lo, hi, false, spec.replace_queries);
  LZ_INPUT_CHECK(!chosen.empty(), "mqar: cannot place ", Q, " queries with distances in [", lo, ", ",
                 hi, "] after ", N, " pairs in seq_len ", spec.seq_len,
                 " (lower num_queries or widen min_distance/max_distance)");

  MqarSample s;
  s.num_pairs = N;
  std::vector<int32_t>& t = s.doc.tokens;
  // A filler: "-", or (random_filler) a random word below the keys that is not a special
  // token: digits, punctuation, grammar and passkey words.
  const int32_t lo_id = SyntheticVocab::eos() + 1, n_words = vocab.key(0) - lo_id;
  LZ_CHECK(!spec.random_filler || n_words > 0, "mqar: the vocabulary has no filler words below its keys");
  const int32_t dash = vocab.id("-");
  auto filler = [&]() { return spec.random_filler ? lo_id + static_cast<int32_t>(d.below(n_words)) : dash; };
  t.assign(static_cast<size_t>(spec.seq_len), dash);
  if (spec.random_filler)
    for (int32_t& tok : t) tok = filler();
  s.doc.loss_mask.assign(t.size(), 0);
  t[0] = SyntheticVocab::bos();
  for (int64_t i = 0; i < N; ++i) {
    t[static_cast<size_t>(key_pos[static_cast<size_t>(i)])] = keys[static_cast<size_t>(i)];
    t[static_cast<size_t>(key_pos[static_cast<size_t>(i)] + 1)] = values[static_cast<size_t>(i)];
  }
  for (int64_t q = 0; q < Q; ++q) {
    const size_t pair = static_cast<size_t>(chosen[static_cast<size_t>(q)]);
    MqarQuery mq;
    mq.key_pos = key_pos[pair];
    mq.query_pos = query_pos[static_cast<size_t>(q)];
    mq.key = keys[pair];
    mq.value = values[pair];
    t[static_cast<size_t>(mq.query_pos)] = mq.key;
    t[static_cast<size_t>(mq.query_pos + 1)] = mq.value;
    s.doc.loss_mask[static_cast<size_t>(mq.query_pos + 1)] = 1;
    s.queries.push_back(mq);
  }
  if (spec.hide_answers) {
    s.doc.inputs = t;
    for (const MqarQuery& q : s.queries) s.doc.inputs[static_cast<size_t>(q.query_pos + 1)] = filler();
  }
  return s;
}

std::vector<MqarSample> mqar_samples(const SyntheticVocab& vocab, const MqarSpec& spec, int64_t n,
                                     uint64_t seed) {
  std::vector<MqarSample> out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out.push_back(mqar_sample(vocab, spec, seed, static_cast<uint64_t>(i)));
  return out;
}

}  // namespace lizard::eval
