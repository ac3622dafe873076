// English-like text from a small probabilistic context-free grammar, for pretraining the demo's
// teacher without downloads. Subjects agree with their verbs in number (singular determiners,
// names and "one" take singular nouns and verbs; plural determiners, number words 2-9 and digit
// numbers 2-99 take plural ones), so a model must carry the subject's number across adjectives
// and prepositional phrases to predict the verb.
//
//   sentence -> clause [("and" | "because" | ",") clause] "."
//   clause   -> NP[n] VP[n]                      n in {singular, plural}
//   NP[sg]   -> det_sg adj* noun_sg [PP] | name | "one" adj* noun_sg
//   NP[pl]   -> det_pl adj* noun_pl [PP] | number adj* noun_pl
//   VP[n]    -> verb_t[n] object [PP] | verb_i[n] [adverb]
//   object   -> det adj* noun (either number, no PP)   PP -> prep object
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/eval/draws.h"
#include "lizard/eval/synthetic_vocab.h"

namespace lizard::eval {

/// The grammar's words by class (tests check agreement with these).
struct GrammarLexicon {
  std::vector<std::string> det_sg, det_pl, noun_sg, noun_pl, names, adjectives;
  std::vector<std::string> verb_t_sg, verb_t_pl, verb_i_sg, verb_i_pl, adverbs, preps;
  std::vector<std::string> number_words;  ///< "two".."nine" (plural); "one" is singular
  std::vector<std::string> conjunctions;  ///< "and", "because", ","
};
const GrammarLexicon& grammar_lexicon();

/// Every word the grammar can emit except digits and punctuation.
std::vector<std::string> grammar_words();

struct GrammarSpec {
  int64_t min_sentences = 2;  ///< sentences per document, uniform in [min, max]
  int64_t max_sentences = 8;
};

/// One sentence (words, ending with ".") drawn from `draws`.
std::vector<std::string> grammar_sentence(Draws& draws);

/// n documents "<bos> sentence ... <eos>"; document i depends only on (seed, i), so any
/// document can be regenerated alone. Loss mask: every token but the leading <bos>.
std::vector<TokenDocument> grammar_documents(const SyntheticVocab& vocab, int64_t n, uint64_t seed,
                                             const GrammarSpec& spec = {});

}  // namespace lizard::eval
