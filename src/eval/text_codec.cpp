#include "lizard/eval/text_codec.h"

#include <memory>

#include "lizard/core/error.h"
#include "lizard/eval/synthetic_vocab.h"
#include "lizard/io/tokenizer.h"

namespace lizard::eval {

namespace {

TextCodec demo_codec() {
  auto vocab = std::make_shared<const SyntheticVocab>();
  TextCodec c;
  c.name = "demo";
  c.encode = [vocab](const std::string& s) { return vocab->encode(s); };
  c.decode = [vocab](const std::vector<int32_t>& ids) {
    std::vector<int32_t> kept;  // specials skipped, as tokenizers' decode does
    for (int32_t id : ids)
      if (id != SyntheticVocab::pad() && id != SyntheticVocab::bos() && id != SyntheticVocab::eos())
        kept.push_back(id);
    return vocab->decode(kept);
  };
  c.bos = SyntheticVocab::bos();
  c.eos = SyntheticVocab::eos();
  return c;
}

TextCodec tokenizer_codec(const std::string& path, const nn::LlamaConfig& cfg) {
  auto tok = std::make_shared<const io::Tokenizer>(io::Tokenizer::from_file(path));
  TextCodec c;
  c.name = path;
  c.encode = [tok](const std::string& s) { return tok->encode(s, false); };
  c.decode = [tok](const std::vector<int32_t>& ids) { return tok->decode(ids, true); };
  c.bos = tok->bos_id();
  if (c.bos < 0 && cfg.bos_token_id >= 0) c.bos = static_cast<int32_t>(cfg.bos_token_id);
  c.eos = cfg.eos_token_id >= 0 ? static_cast<int32_t>(cfg.eos_token_id) : tok->eos_id();
  return c;
}

}  // namespace

TextCodec text_codec_for(const InferenceModel& model, const std::string& choice) {
  const nn::LlamaConfig& cfg = model.model->config();
  const int64_t demo_size = SyntheticVocab().size();
  if (choice == "demo") {
    LZ_INPUT_CHECK(cfg.vocab_size >= demo_size, "--tokenizer demo: the model's vocabulary (",
                   cfg.vocab_size, ") is smaller than the demo vocabulary (", demo_size, ")");
    return demo_codec();
  }
  if (!choice.empty()) return tokenizer_codec(choice, cfg);
  if (!model.tokenizer.empty()) return tokenizer_codec(model.tokenizer, cfg);
  LZ_INPUT_CHECK(cfg.vocab_size == demo_size, "--model ", model.dir,
                 ": no tokenizer.json there (and the vocabulary of ", cfg.vocab_size,
                 " is not the demo's ", demo_size, "); pass --tokenizer PATH");
  return demo_codec();
}

}  // namespace lizard::eval
