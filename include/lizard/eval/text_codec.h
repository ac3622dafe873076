// Text <-> token ids for the command line: the model's tokenizer.json, an explicit one, or
// the embedded demo's word vocabulary (eval::SyntheticVocab), chosen once so eval and
// generate agree on the choice.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lizard/eval/model_loader.h"
#include "lizard/eval/multiple_choice.h"

namespace lizard::eval {

struct TextCodec {
  std::string name;  ///< "demo" or the tokenizer.json path
  Encoder encode;    ///< text -> ids, no special tokens
  std::function<std::string(const std::vector<int32_t>&)> decode;  ///< specials skipped
  int32_t bos = -1;  ///< prepended to prompts when >= 0
  int32_t eos = -1;  ///< generation stops after it when >= 0
};

/// `choice`: "demo" (the demo vocabulary), a tokenizer.json or a directory holding one, or ""
/// (the model's own tokenizer.json; else the demo vocabulary when the model's vocab_size is
/// the demo's). InputError naming the model directory when nothing fits.
TextCodec text_codec_for(const InferenceModel& model, const std::string& choice);

}  // namespace lizard::eval
