#include "lizard/eval/grammar.h"

#include <set>

#include "lizard/core/error.h"

namespace lizard::eval {

namespace {

const std::string& one_of(Draws& d, const std::vector<std::string>& v) {
  return v[static_cast<size_t>(d.below(static_cast<int64_t>(v.size())))];
}

bool coin(Draws& d, double p) { return d.uniform() < p; }

// Up to two adjectives, each with probability 0.3 (a geometric tail would allow rare long runs
// that only lengthen documents).
void adjectives(Draws& d, std::vector<std::string>& out) {
  const GrammarLexicon& L = grammar_lexicon();
  for (int i = 0; i < 2 && coin(d, 0.3); ++i) out.push_back(one_of(d, L.adjectives));
}

// A number 2..99 written with digit tokens ("1 2" for twelve): teaches the digits the passkey
// task asks for.
void digit_number(Draws& d, std::vector<std::string>& out) {
  const int64_t n = 2 + d.below(98);
  if (n >= 10) out.push_back(std::to_string(n / 10));
  out.push_back(std::to_string(n % 10));
}

void object(Draws& d, std::vector<std::string>& out) {
  const GrammarLexicon& L = grammar_lexicon();
  const bool plural = coin(d, 0.4);
  out.push_back(one_of(d, plural ? L.det_pl : L.det_sg));
  adjectives(d, out);
  out.push_back(one_of(d, plural ? L.noun_pl : L.noun_sg));
}

void prep_phrase(Draws& d, std::vector<std::string>& out) {
  out.push_back(one_of(d, grammar_lexicon().preps));
  object(d, out);
}

void subject(Draws& d, bool plural, std::vector<std::string>& out) {
  const GrammarLexicon& L = grammar_lexicon();
  const size_t form = d.pick({0.6, 0.2, 0.2});
  if (!plural) {
    if (form == 1) {
      out.push_back(one_of(d, L.names));
      return;
    }
    out.push_back(form == 0 ? one_of(d, L.det_sg) : std::string("one"));
  } else if (form == 0) {
    out.push_back(one_of(d, L.det_pl));
  } else if (form == 1) {
    out.push_back(one_of(d, L.number_words));
  } else {
    digit_number(d, out);
  }
  adjectives(d, out);
  out.push_back(one_of(d, plural ? L.noun_pl : L.noun_sg));
  // A prepositional phrase between subject and verb: an agreement "attractor" of either number.
  if (form == 0 && coin(d, 0.15)) prep_phrase(d, out);
}

void verb_phrase(Draws& d, bool plural, std::vector<std::string>& out) {
  const GrammarLexicon& L = grammar_lexicon();
  if (coin(d, 0.65)) {
    out.push_back(one_of(d, plural ? L.verb_t_pl : L.verb_t_sg));
    object(d, out);
    if (coin(d, 0.25)) prep_phrase(d, out);
  } else {
    out.push_back(one_of(d, plural ? L.verb_i_pl : L.verb_i_sg));
    if (coin(d, 0.4)) out.push_back(one_of(d, L.adverbs));
  }
}

void clause(Draws& d, std::vector<std::string>& out) {
  const bool plural = coin(d, 0.45);
  subject(d, plural, out);
  verb_phrase(d, plural, out);
}

}  // namespace

const GrammarLexicon& grammar_lexicon() {
  // Immutable after first use (function-local static: thread-safe initialisation).
  static const GrammarLexicon lex = [] {
    GrammarLexicon L;
    L.det_sg = {"the", "a", "this", "every"};
    L.det_pl = {"the", "these", "some", "many"};
    L.noun_sg = {"cat",   "dog",  "bird",  "farmer", "child", "teacher", "friend", "horse",
                 "king",  "girl", "boy",   "river",  "tree",  "house",   "apple",  "boat",
                 "city",  "book", "stone", "garden"};
    L.noun_pl = {"cats",  "dogs",  "birds",  "farmers", "children", "teachers", "friends",
                 "horses", "kings", "girls", "boys",    "rivers",   "trees",    "houses",
                 "apples", "boats", "cities", "books",  "stones",   "gardens"};
    L.names = {"alice", "bob", "carol", "dave", "emma"};
    L.adjectives = {"big", "small", "old", "young", "red", "happy", "quiet", "bright", "tall", "dark"};
    L.verb_t_sg = {"sees", "likes", "finds", "carries", "follows", "watches", "builds", "paints"};
    L.verb_t_pl = {"see", "like", "find", "carry", "follow", "watch", "build", "paint"};
    L.verb_i_sg = {"sleeps", "runs", "sings", "waits", "smiles"};
    L.verb_i_pl = {"sleep", "run", "sing", "wait", "smile"};
    L.adverbs = {"quickly", "slowly", "often", "today"};
    L.preps = {"near", "behind", "under", "with", "across"};
    L.number_words = {"two", "three", "four", "five", "six", "seven", "eight", "nine"};
    L.conjunctions = {"and", "because", ","};
    return L;
  }();
  return lex;
}

std::vector<std::string> grammar_words() {
  const GrammarLexicon& L = grammar_lexicon();
  std::set<std::string> s{"one"};
  for (const auto* v : {&L.det_sg, &L.det_pl, &L.noun_sg, &L.noun_pl, &L.names, &L.adjectives,
                        &L.verb_t_sg, &L.verb_t_pl, &L.verb_i_sg, &L.verb_i_pl, &L.adverbs,
                        &L.preps, &L.number_words, &L.conjunctions})
    for (const auto& w : *v)
      if (w != ",") s.insert(w);  // punctuation is added by the vocabulary itself
  return {s.begin(), s.end()};
}

std::vector<std::string> grammar_sentence(Draws& d) {
  std::vector<std::string> out;
  clause(d, out);
  if (coin(d, 0.3)) {
    out.push_back(one_of(d, grammar_lexicon().conjunctions));
    clause(d, out);
  }
  out.push_back(".");
  return out;
}

std::vector<TokenDocument> grammar_documents(const SyntheticVocab& vocab, int64_t n, uint64_t seed,
                                             const GrammarSpec& spec) {
  LZ_INPUT_CHECK(n >= 0, "grammar_documents: n must be >= 0, got ", n);
  LZ_INPUT_CHECK(spec.min_sentences >= 1 && spec.max_sentences >= spec.min_sentences,
                 "grammar_documents: need 1 <= min_sentences <= max_sentences, got ",
                 spec.min_sentences, " and ", spec.max_sentences);
  std::vector<TokenDocument> docs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    Draws d(seed, static_cast<uint64_t>(i));
    TokenDocument& doc = docs[static_cast<size_t>(i)];
    doc.tokens.push_back(SyntheticVocab::bos());
    const int64_t k = spec.min_sentences + d.below(spec.max_sentences - spec.min_sentences + 1);
    for (int64_t s = 0; s < k; ++s)
      for (int32_t id : vocab.encode(grammar_sentence(d))) doc.tokens.push_back(id);
    doc.tokens.push_back(SyntheticVocab::eos());
    doc.loss_mask.assign(doc.tokens.size(), 1);
    doc.loss_mask[0] = 0;  // <bos> is never predicted
  }
  return docs;
}

}  // namespace lizard::eval
