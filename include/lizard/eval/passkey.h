// Passkey retrieval (Mohtashami & Jaggi, 2023): a number hidden at a chosen depth of repetitive
// filler text, then a question whose answer is the number. Written in the synthetic vocabulary
// (digits are single tokens), so the answer is `num_digits` tokens.
//
//   <bos> there is an important info hidden inside a lot of irrelevant text . find it and
//   memorize it . i will quiz you about the important information there .
//   [filler ...] the pass key is D..D . remember it . D..D is the pass key . [filler ...]
//   what is the pass key ? the pass key is D..D
//
// Filler cycles "the grass is green . the sky is blue . the sun is yellow . here we go . there
// and back again ." and is cut to make the prompt exactly `length` tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/eval/synthetic_vocab.h"

namespace lizard::eval {

/// Every word the passkey prompts use (digits and punctuation excluded).
std::vector<std::string> passkey_words();

struct PasskeySpec {
  int64_t length = 256;    ///< total tokens, answer included
  double depth = 0.5;      ///< where the needle goes in the filler: 0 = start, 1 = end
  int64_t num_digits = 5;  ///< digits of the pass key, each uniform in 0..9
};

struct PasskeySample {
  TokenDocument doc;            ///< prompt + answer; loss mask 1 on the answer digits only
  int64_t answer_begin = 0;     ///< position of the first answer digit (== length - num_digits)
  int64_t needle_begin = 0;     ///< position of "the" in "the pass key is D..D"
  std::vector<int32_t> answer;  ///< the digit ids
};

/// The shortest `length` a spec can have (no filler at all).
int64_t passkey_min_length(int64_t num_digits);

/// Sample `index` of the stream `seed`: depends only on (spec, seed, index). The needle starts
/// at the filler sentence boundary nearest to depth * filler_length. InputError when `length`
/// is below passkey_min_length or depth is outside [0, 1].
PasskeySample passkey_sample(const SyntheticVocab& vocab, const PasskeySpec& spec, uint64_t seed,
                             uint64_t index);

}  // namespace lizard::eval
