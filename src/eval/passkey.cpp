#include "lizard/eval/passkey.h"

#include <cmath>
#include <set>
#include <sstream>

#include "lizard/core/error.h"
#include "lizard/eval/draws.h"

namespace lizard::eval {

namespace {

const char* kIntro =
    "there is an important info hidden inside a lot of irrelevant text . find it and memorize it "
    ". i will quiz you about the important information there .";
const char* kFiller =
    "the grass is green . the sky is blue . the sun is yellow . here we go . there and back again .";
const char* kQuestion = "what is the pass key ? the pass key is";

std::vector<std::string> split(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> out;
  std::string w;
  while (is >> w) out.push_back(w);
  return out;
}

// The needle's words around the digits: "the pass key is" D "." "remember it ." D "is the pass key ."
int64_t needle_length(int64_t digits) { return 4 + digits + 4 + digits + 5; }

}  // namespace

std::vector<std::string> passkey_words() {
  std::set<std::string> s;
  for (const char* text : {kIntro, kFiller, kQuestion, "the pass key is remember it"})
    for (const auto& w : split(text))
      if (w != "." && w != "?" && w != ",") s.insert(w);
  return {s.begin(), s.end()};
}

int64_t passkey_min_length(int64_t num_digits) {
  return 1 + static_cast<int64_t>(split(kIntro).size()) + needle_length(num_digits) +
         static_cast<int64_t>(split(kQuestion).size()) + num_digits;
}

PasskeySample passkey_sample(const SyntheticVocab& vocab, const PasskeySpec& spec, uint64_t seed,
                             uint64_t index) {
  LZ_INPUT_CHECK(spec.num_digits >= 1, "passkey: num_digits must be >= 1, got ", spec.num_digits);
  LZ_INPUT_CHECK(spec.depth >= 0.0 && spec.depth <= 1.0, "passkey: depth must be in [0, 1], got ",
                 spec.depth);
  const int64_t min_len = passkey_min_length(spec.num_digits);
  LZ_INPUT_CHECK(spec.length >= min_len, "passkey: length ", spec.length, " is below the minimum ",
                 min_len, " for ", spec.num_digits, " digits");
  Draws d(seed, index);
  PasskeySample s;
  for (int64_t i = 0; i < spec.num_digits; ++i)
    s.answer.push_back(vocab.digit(static_cast<int>(d.below(10))));

  // Filler of exactly F tokens, with the sentence boundaries it contains.
  const int64_t F = spec.length - min_len;
  const std::vector<int32_t> cycle = vocab.encode(kFiller);
  const int32_t period = vocab.id(".");
  std::vector<int32_t> filler;
  std::vector<int64_t> boundaries{0};
  for (int64_t i = 0; i < F; ++i) {
    filler.push_back(cycle[static_cast<size_t>(i) % cycle.size()]);
    if (filler.back() == period) boundaries.push_back(i + 1);
  }
  const double target = spec.depth * static_cast<double>(F);
  int64_t cut = 0;
  for (int64_t b : boundaries)
    if (std::abs(static_cast<double>(b) - target) < std::abs(static_cast<double>(cut) - target))
      cut = b;

  std::vector<int32_t>& t = s.doc.tokens;
  auto append = [&](const std::vector<int32_t>& ids) { t.insert(t.end(), ids.begin(), ids.end()); };
  t.push_back(SyntheticVocab::bos());
  append(vocab.encode(kIntro));
  t.insert(t.end(), filler.begin(), filler.begin() + cut);
  s.needle_begin = static_cast<int64_t>(t.size());
  append(vocab.encode("the pass key is"));
  append(s.answer);
  append(vocab.encode(". remember it ."));
  append(s.answer);
  append(vocab.encode("is the pass key ."));
  t.insert(t.end(), filler.begin() + cut, filler.end());
  append(vocab.encode(kQuestion));
  s.answer_begin = static_cast<int64_t>(t.size());
  append(s.answer);
  LZ_CHECK(static_cast<int64_t>(t.size()) == spec.length, "passkey: built ", t.size(),
           " tokens, expected ", spec.length);
  s.doc.loss_mask.assign(t.size(), 0);
  for (int64_t i = s.answer_begin; i < spec.length; ++i) s.doc.loss_mask[static_cast<size_t>(i)] = 1;
  return s;
}

}  // namespace lizard::eval
