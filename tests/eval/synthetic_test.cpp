// Synthetic data: vocabulary, grammar (determinism, agreement), MQAR and passkey invariants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "lizard/core/error.h"
#include "lizard/eval/synthetic.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::eval {
namespace {

TEST(SyntheticVocab, IdsAreStableAndRoundTrip) {
  SyntheticVocab v({8, 12});
  EXPECT_EQ(v.word(SyntheticVocab::pad()), "<pad>");
  EXPECT_EQ(v.word(SyntheticVocab::bos()), "<bos>");
  EXPECT_EQ(v.word(SyntheticVocab::eos()), "<eos>");
  for (int d = 0; d < 10; ++d) EXPECT_EQ(v.word(v.digit(d)), std::to_string(d));
  EXPECT_EQ(v.word(v.key(7)), "k7");
  EXPECT_EQ(v.word(v.value(11)), "v11");
  EXPECT_TRUE(v.is_key(v.key(0)) && !v.is_key(v.value(0)));
  EXPECT_TRUE(v.is_value(v.value(11)) && !v.is_value(v.key(7)));
  std::set<std::string> distinct(v.words().begin(), v.words().end());
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), v.size());
  const std::string text = "the pass key is 4 2 . k3 v5 - alice sees many dogs";
  EXPECT_EQ(v.decode(v.encode(text)), text);
  EXPECT_THROW(v.encode("the zebra"), InputError);
  // Same spec, same ids (a dataset written today reads with tomorrow's build).
  SyntheticVocab w({8, 12});
  EXPECT_EQ(v.words(), w.words());
}

TEST(Grammar, DeterministicBySeedAndIndex) {
  SyntheticVocab v;
  auto a = grammar_documents(v, 20, 42);
  auto b = grammar_documents(v, 20, 42);
  auto c = grammar_documents(v, 20, 43);
  auto prefix = grammar_documents(v, 5, 42);
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    differ += a[i].tokens != c[i].tokens;
  }
  EXPECT_GE(differ, 18) << "another seed should give other documents";
  for (size_t i = 0; i < prefix.size(); ++i) EXPECT_EQ(prefix[i].tokens, a[i].tokens);
}

TEST(Grammar, DocumentShapeAndMask) {
  SyntheticVocab v;
  GrammarSpec spec{1, 3};
  for (const auto& d : grammar_documents(v, 50, 7, spec)) {
    ASSERT_GE(d.tokens.size(), 4u);
    EXPECT_EQ(d.tokens.front(), SyntheticVocab::bos());
    EXPECT_EQ(d.tokens.back(), SyntheticVocab::eos());
    EXPECT_EQ(d.tokens[d.tokens.size() - 2], v.id("."));
    const auto periods = std::count(d.tokens.begin(), d.tokens.end(), v.id("."));
    EXPECT_GE(periods, 1);
    EXPECT_LE(periods, 3);
    ASSERT_EQ(d.loss_mask.size(), d.tokens.size());
    EXPECT_EQ(d.loss_mask[0], 0);
    EXPECT_EQ(std::count(d.loss_mask.begin(), d.loss_mask.end(), 1),
              static_cast<std::ptrdiff_t>(d.tokens.size() - 1));
  }
}

// Every clause's head noun (its first noun or name) has the number of its first verb.
TEST(Grammar, SubjectsAgreeWithVerbs) {
  SyntheticVocab v;
  const GrammarLexicon& L = grammar_lexicon();
  auto in = [](const std::vector<std::string>& s, const std::string& w) {
    return std::find(s.begin(), s.end(), w) != s.end();
  };
  int64_t clauses = 0, plural = 0;
  for (const auto& d : grammar_documents(v, 300, 11)) {
    int subj = 0, verb = 0;  // 0 unseen, 1 singular, 2 plural
    for (size_t i = 1; i + 1 < d.tokens.size(); ++i) {
      const std::string& w = v.word(d.tokens[i]);
      if (w == "." || w == "," || w == "and" || w == "because") {
        ASSERT_NE(subj, 0) << v.decode(d.tokens);
        ASSERT_EQ(subj, verb) << "disagreement in: " << v.decode(d.tokens);
        ++clauses;
        plural += subj == 2;
        subj = verb = 0;
        continue;
      }
      if (subj == 0 && (in(L.noun_sg, w) || in(L.names, w))) subj = 1;
      if (subj == 0 && in(L.noun_pl, w)) subj = 2;
      if (verb == 0 && (in(L.verb_t_sg, w) || in(L.verb_i_sg, w))) verb = 1;
      if (verb == 0 && (in(L.verb_t_pl, w) || in(L.verb_i_pl, w))) verb = 2;
    }
  }
  EXPECT_GT(clauses, 1000);
  // Both numbers are common (the clause picks plural with p = 0.45).
  EXPECT_GT(plural, clauses / 4);
  EXPECT_LT(plural, 3 * clauses / 4);
}

void check_mqar(const SyntheticVocab& v, const MqarSpec& spec, const MqarSample& s) {
  const auto& t = s.doc.tokens;
  const int64_t N = s.num_pairs, Q = spec.num_queries ? spec.num_queries : N;
  if (spec.min_pairs > 0) {
    EXPECT_GE(N, spec.min_pairs);
    EXPECT_LE(N, spec.num_pairs);
  } else {
    EXPECT_EQ(N, spec.num_pairs);
  }
  ASSERT_EQ(static_cast<int64_t>(t.size()), spec.seq_len);
  ASSERT_EQ(s.doc.loss_mask.size(), t.size());
  EXPECT_EQ(t[0], SyntheticVocab::bos());
  std::set<int32_t> keys;
  for (int64_t i = 0; i < N; ++i) {
    EXPECT_TRUE(v.is_key(t[static_cast<size_t>(1 + 2 * i)]));
    EXPECT_TRUE(v.is_value(t[static_cast<size_t>(2 + 2 * i)]));
    keys.insert(t[static_cast<size_t>(1 + 2 * i)]);
  }
  EXPECT_EQ(static_cast<int64_t>(keys.size()), N) << "pair keys must be distinct";
  ASSERT_EQ(static_cast<int64_t>(s.queries.size()), Q);
  std::set<int32_t> queried;
  std::vector<uint8_t> expect_mask(t.size(), 0);
  for (size_t qi = 0; qi < s.queries.size(); ++qi) {
    const MqarQuery& q = s.queries[qi];
    if (qi) EXPECT_GT(q.query_pos, s.queries[qi - 1].query_pos + 1);
    // The answer appears earlier: the pair (key, value) sits before the query, in the pairs.
    EXPECT_LT(q.key_pos + 1, q.query_pos);
    EXPECT_LE(q.key_pos, 2 * N - 1);
    EXPECT_EQ(t[static_cast<size_t>(q.key_pos)], q.key);
    EXPECT_EQ(t[static_cast<size_t>(q.key_pos + 1)], q.value);
    EXPECT_EQ(t[static_cast<size_t>(q.query_pos)], q.key);
    ASSERT_LT(q.query_pos + 1, spec.seq_len);
    EXPECT_EQ(t[static_cast<size_t>(q.query_pos + 1)], q.value);
    EXPECT_GE(q.distance(), spec.min_distance);
    if (spec.max_distance > 0) EXPECT_LE(q.distance(), spec.max_distance);
    if (!queried.insert(q.key).second) EXPECT_TRUE(spec.replace_queries) << "key queried twice";
    expect_mask[static_cast<size_t>(q.query_pos + 1)] = 1;
  }
  EXPECT_EQ(s.doc.loss_mask, expect_mask) << "targets only on the query answers";
  // Everything else after the pairs is filler.
  std::vector<bool> used(t.size(), false);
  for (const auto& q : s.queries) used[static_cast<size_t>(q.query_pos)] = used[static_cast<size_t>(q.query_pos + 1)] = true;
  std::set<int32_t> fillers;
  for (int64_t p = 1 + 2 * N; p < spec.seq_len; ++p) {
    const int32_t tok = t[static_cast<size_t>(p)];
    if (used[static_cast<size_t>(p)]) continue;
    if (!spec.random_filler) {
      EXPECT_EQ(tok, v.id("-"));
      continue;
    }
    // random filler: ordinary words, never a key, a value or a special token
    EXPECT_FALSE(v.is_key(tok) || v.is_value(tok)) << "filler " << tok << " at " << p;
    EXPECT_GT(tok, SyntheticVocab::eos());
    fillers.insert(tok);
  }
  if (spec.random_filler && spec.seq_len - 1 - 2 * N - 2 * Q >= 40)
    EXPECT_GE(fillers.size(), 10u) << "random filler should vary";
  // hide_answers: the model reads the tokens except at each answer, where a filler word stands
  if (!spec.hide_answers) {
    EXPECT_TRUE(s.doc.inputs.empty());
    return;
  }
  ASSERT_EQ(s.doc.inputs.size(), t.size());
  for (size_t p = 0; p < t.size(); ++p) {
    if (!s.doc.loss_mask[p]) {
      EXPECT_EQ(s.doc.inputs[p], t[p]) << "at " << p;
      continue;
    }
    const int32_t in = s.doc.inputs[p];
    EXPECT_TRUE(v.is_value(t[p]));
    EXPECT_FALSE(v.is_key(in) || v.is_value(in)) << "answer " << t[p] << " visible at " << p;
    if (!spec.random_filler) EXPECT_EQ(in, v.id("-"));
    EXPECT_GT(in, SyntheticVocab::eos());
  }
}

MqarSpec mixture_spec(int64_t seq_len, int64_t pairs, int64_t min_pairs, int64_t queries,
                      bool replace, bool random_filler, bool hide = false) {
  MqarSpec s{seq_len, pairs, queries, 1, 0};
  s.hide_answers = hide;
  s.min_pairs = min_pairs;
  s.replace_queries = replace;
  s.random_filler = random_filler;
  return s;
}

TEST(Mqar, InvariantsAtAwkwardShapes) {
  SyntheticVocab v({20, 7});
  std::vector<MqarSpec> specs = {
      {64, 8, 0, 1, 0},    // Q = N
      {33, 1, 0, 1, 0},    // one pair
      {21, 5, 5, 1, 0},    // no filler at all: 1 + 2N + 2Q == seq_len
      {101, 20, 3, 1, 0},  // every key of the vocabulary, few queries
      {200, 10, 6, 60, 0}, // only far queries
      {200, 10, 6, 1, 40}, // only near queries
      {256, 12, 8, 30, 50},
  };
  for (const auto& spec : specs)
    for (uint64_t i = 0; i < 20; ++i) {
      SCOPED_TRACE("seq_len " + std::to_string(spec.seq_len) + " sample " + std::to_string(i));
      check_mqar(v, spec, mqar_sample(v, spec, 3, i));
    }
}

TEST(Mqar, MixtureReplacementAndRandomFillerKeepTheInvariants) {
  SyntheticVocab v({20, 7});
  const std::vector<MqarSpec> specs = {
      mixture_spec(128, 8, 2, 0, false, false),  // pair counts 2..8, each key once
      mixture_spec(128, 8, 2, 8, true, true),    // the demo's training layout
      mixture_spec(64, 3, 0, 12, true, false),   // more queries than pairs
      mixture_spec(128, 8, 0, 0, false, true),   // the standard layout with random filler
      mixture_spec(41, 8, 8, 12, true, true),    // min_pairs == num_pairs, no room for filler
      mixture_spec(128, 8, 2, 0, false, true, true),   // answers hidden, random filler
      mixture_spec(64, 4, 0, 0, false, false, true),   // answers hidden behind "-"
  };
  for (const auto& spec : specs) {
    std::set<int64_t> counts;
    int64_t repeated = 0;
    for (uint64_t i = 0; i < 60; ++i) {
      SCOPED_TRACE("spec seq_len " + std::to_string(spec.seq_len) + " sample " + std::to_string(i));
      const MqarSample s = mqar_sample(v, spec, 11, i);
      check_mqar(v, spec, s);
      counts.insert(s.num_pairs);
      std::set<int32_t> keys;
      for (const auto& q : s.queries) repeated += keys.insert(q.key).second ? 0 : 1;
    }
    // every pair count of the range occurs in 60 draws (7 counts: P(miss) < 7 (6/7)^60 = 7e-4)
    if (spec.min_pairs > 0) EXPECT_EQ(static_cast<int64_t>(counts.size()), spec.num_pairs - spec.min_pairs + 1);
    if (spec.replace_queries && (spec.num_queries > spec.num_pairs || spec.min_pairs > 0))
      EXPECT_GT(repeated, 0) << "with replacement some keys must be asked twice";
  }
}

TEST(Mqar, StandardLayoutUnchangedByTheNewSwitches) {
  // min_pairs 0, no replacement, "-" filler: the very stream of before the switches existed
  // (the demo's eval sets). The FNV-1a hash of samples 0..4 of stream 7 was computed with
  // src/eval/mqar.cpp as it was before (commit d65fcf0).
  SyntheticVocab v({64, 64});
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < 5; ++i)
    for (int32_t t : mqar_sample(v, mixture_spec(128, 8, 0, 0, false, false), 7, i).doc.tokens)
      h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ull;
  EXPECT_EQ(h, 9771550266479752377ull);
  EXPECT_THROW(mqar_sample(v, mixture_spec(128, 8, 9, 0, false, false), 0, 0), InputError);  // min > max
  EXPECT_THROW(mqar_sample(v, mixture_spec(128, 8, 0, 12, false, false), 0, 0), InputError);  // Q > N, no replacement
}

TEST(Mqar, DistancesSpreadInsideAndBeyondAWindow) {
  SyntheticVocab v({64, 64});
  MqarSpec spec{256, 16, 0, 1, 0};
  int64_t inside = 0, beyond = 0;
  for (const auto& s : mqar_samples(v, spec, 50, 9))
    for (const auto& q : s.queries) (q.distance() < 64 ? inside : beyond) += 1;
  // Both kinds are well represented at the demo's shape, so both recall numbers mean something.
  EXPECT_GT(inside, 50);
  EXPECT_GT(beyond, 50);
}

TEST(Mqar, DeterministicAndErrors) {
  SyntheticVocab v({16, 16});
  MqarSpec spec{64, 8, 0, 1, 0};
  EXPECT_EQ(mqar_sample(v, spec, 5, 2).doc.tokens, mqar_sample(v, spec, 5, 2).doc.tokens);
  EXPECT_NE(mqar_sample(v, spec, 5, 2).doc.tokens, mqar_sample(v, spec, 5, 3).doc.tokens);
  EXPECT_THROW(mqar_sample(v, {64, 17, 0, 1, 0}, 0, 0), InputError);  // more pairs than keys
  EXPECT_THROW(mqar_sample(v, {20, 5, 0, 1, 0}, 0, 0), InputError);   // seq too short
  EXPECT_THROW(mqar_sample(v, {64, 8, 9, 1, 0}, 0, 0), InputError);   // Q > N
  // The farthest possible query is at seq_len - 2, the nearest key at position 1.
  EXPECT_THROW(mqar_sample(v, {64, 8, 0, 63, 0}, 0, 0), InputError);
}

TEST(Passkey, LayoutAtDepths) {
  SyntheticVocab v;
  const int64_t min_len = passkey_min_length(5);
  for (int64_t len : {min_len, min_len + 1, int64_t{97}, int64_t{500}})
    for (double depth : {0.0, 0.3, 1.0}) {
      PasskeySpec spec{len, depth, 5};
      PasskeySample s = passkey_sample(v, spec, 1, 4);
      const auto& t = s.doc.tokens;
      ASSERT_EQ(static_cast<int64_t>(t.size()), len);
      EXPECT_EQ(s.answer_begin, len - 5);
      EXPECT_EQ(std::vector<int32_t>(t.end() - 5, t.end()), s.answer);
      for (int32_t d : s.answer) EXPECT_GE(v.word(d)[0], '0');
      // The needle holds the answer twice.
      const std::vector<int32_t> needle_head = v.encode("the pass key is");
      EXPECT_TRUE(std::equal(needle_head.begin(), needle_head.end(), t.begin() + s.needle_begin));
      EXPECT_TRUE(std::equal(s.answer.begin(), s.answer.end(), t.begin() + s.needle_begin + 4));
      const std::vector<int32_t> q = v.encode("what is the pass key ? the pass key is");
      EXPECT_TRUE(std::equal(q.begin(), q.end(), t.end() - 5 - static_cast<std::ptrdiff_t>(q.size())));
      for (size_t i = 0; i < t.size(); ++i)
        EXPECT_EQ(s.doc.loss_mask[i], static_cast<int64_t>(i) >= s.answer_begin ? 1 : 0);
      const int64_t filler = len - min_len;
      const int64_t needle_len = 4 + 5 + 4 + 5 + 5;
      const int64_t intro_end = s.answer_begin - static_cast<int64_t>(q.size()) - filler - needle_len;
      if (depth == 0.0) EXPECT_EQ(s.needle_begin, intro_end);
      // Filler sentences are at most 5 tokens, so the boundary nearest the end is that close.
      if (depth == 1.0) EXPECT_GE(s.needle_begin, intro_end + filler - 5);
      EXPECT_GE(s.needle_begin, intro_end);
      EXPECT_LE(s.needle_begin, intro_end + filler);
    }
  EXPECT_THROW(passkey_sample(v, {min_len - 1, 0.5, 5}, 0, 0), InputError);
  EXPECT_THROW(passkey_sample(v, {200, 1.5, 5}, 0, 0), InputError);
}

TEST(Passkey, DeeperNeedleSitsLater) {
  SyntheticVocab v;
  int64_t prev = -1;
  for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    const int64_t pos = passkey_sample(v, {1000, depth, 5}, 0, 0).needle_begin;
    EXPECT_GT(pos, prev);
    prev = pos;
  }
}

TEST(DemoDocuments, CountsAndIndependentStreams) {
  SyntheticVocab v;
  DemoDataSpec spec;
  spec.grammar_docs = 10;
  spec.mqar_docs = 5;
  spec.mqar = {64, 8, 0, 1, 0};
  spec.passkey_docs = 3;
  spec.passkey = {120, 0.5, 5};
  spec.seed = 17;
  auto a = demo_documents(v, spec);
  ASSERT_EQ(a.size(), 18u);
  for (const auto& d : a) {
    EXPECT_EQ(d.tokens.size(), d.loss_mask.size());
    for (int32_t id : d.tokens) EXPECT_TRUE(id >= 0 && id < v.size());
  }
  spec.mqar_docs = 7;
  auto b = demo_documents(v, spec);
  for (size_t i = 0; i < 15; ++i) EXPECT_EQ(a[i].tokens, b[i].tokens) << "document " << i;
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a[15 + i].tokens, b[17 + i].tokens);
}

TEST(DemoDocuments, WriteTokenDatasetRoundTrips) {
  SyntheticVocab v({16, 16});
  DemoDataSpec spec;
  spec.grammar_docs = 4;
  spec.mqar_docs = 3;
  spec.mqar = {48, 6, 0, 1, 0};
  spec.passkey_docs = 2;
  spec.passkey = {100, 0.5, 5};
  const auto docs = demo_documents(v, spec);
  const std::string path = ::testing::TempDir() + "/lizard_eval_synthetic.h5";
  write_token_dataset(path, v, docs);
  const io::TokenDataset ds = io::TokenDataset::open(path);
  EXPECT_EQ(ds.meta().vocab_size, v.size());
  EXPECT_EQ(ds.meta().tokenizer_hash, "synthetic-" + vocab_hash(v));
  EXPECT_NE(vocab_hash(v), vocab_hash(SyntheticVocab({16, 17})));
  ASSERT_EQ(ds.num_docs(), static_cast<int64_t>(docs.size()));
  ASSERT_TRUE(ds.has_mask());
  for (int64_t i = 0; i < ds.num_docs(); ++i) {
    const auto& d = docs[static_cast<size_t>(i)];
    ASSERT_EQ(ds.doc_len(i), static_cast<int64_t>(d.tokens.size()));
    for (int64_t j = 0; j < ds.doc_len(i); ++j) {
      EXPECT_EQ(ds.token(ds.doc_begin(i) + j), d.tokens[static_cast<size_t>(j)]);
      EXPECT_EQ(ds.is_target(ds.doc_begin(i) + j), d.loss_mask[static_cast<size_t>(j)] != 0);
    }
  }
  std::remove(path.c_str());
  EXPECT_THROW(write_token_dataset(path, v, {TokenDocument{}}), InputError);
}

}  // namespace
}  // namespace lizard::eval
