// Fuzz feeders (see fuzz/feeders.h).
#include "feeders.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "lizard/core/error.h"
#include "lizard/io/hdf5_tokens.h"
#include "lizard/io/hf_config.h"
#include "lizard/io/json.h"
#include "lizard/io/safetensors.h"
#include "lizard/io/tokenizer.h"
#include "lizard/train/config.h"

namespace lizard::fuzz {

namespace {

/// A file holding the input for parsers that read paths; removed on scope exit. One per
/// process (the pid keeps parallel fuzzing jobs apart).
class TempFile {
 public:
  TempFile(const char* ext, const uint8_t* data, size_t size) {
    const char* dir = std::getenv("TMPDIR");
    path_ = str_cat(dir && *dir ? dir : "/tmp", "/lizard-fuzz-", ::getpid(), ext);
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) throw std::runtime_error("fuzz: cannot create " + path_);  // harness failure
    const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
    if (std::fclose(f) != 0 || !ok) throw std::runtime_error("fuzz: cannot write " + path_);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string as_text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

/// A broken invariant of lizard itself (not bad input): must never be caught as input error.
[[noreturn]] void invariant(const std::string& what) { throw std::logic_error(what); }

}  // namespace

void feed_safetensors(const uint8_t* data, size_t size) {
  TempFile tmp(".safetensors", data, size);
  io::SafetensorsFile f(tmp.path());
  for (const std::string& name : f.names())
    if (f.info(name).loadable) (void)f.load(name);
}

void feed_tokenizer(const uint8_t* data, size_t size) {
  const std::string all = as_text(data, size);
  const size_t nul = all.find('\0');
  const std::string json = all.substr(0, nul);
  const std::string text =
      nul == std::string::npos ? std::string("Hello world, 123 h\xc3\xa9llo <s> \xe2\x96\x81x\n\t!")
                               : all.substr(nul + 1);
  const io::Tokenizer tok = io::Tokenizer::from_json(io::parse_json(json, "fuzz"), "fuzz");
  const std::vector<int32_t> ids = tok.encode(text, true);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) invariant("tokenizer: encode produced an id outside the vocabulary");
  (void)tok.decode(ids, true);
  (void)tok.decode(ids, false);
  (void)tok.bos_id();
  (void)tok.eos_id();
}

void feed_yaml_config(const uint8_t* data, size_t size) {
  const std::vector<train::RunConfig> cfgs =
      train::load_config_string(as_text(data, size), "fuzz.yaml", {}, "/nonexistent-lizard-fuzz");
  for (const train::RunConfig& c : cfgs) {
    const std::string yaml = train::config_to_yaml(c);
    try {
      const auto again = train::load_config_string(yaml, "round-trip", {}, "/nonexistent-lizard-fuzz");
      if (again.size() != 1 || train::config_to_yaml(again[0]) != yaml)
        invariant("config: config_to_yaml round trip changed the config:\n" + yaml);
    } catch (const Error& e) {
      invariant(std::string("config: config_to_yaml output does not load again: ") + e.what());
    }
  }
}

void feed_hf_config(const uint8_t* data, size_t size) {
  const nn::LlamaConfig cfg = io::parse_hf_config(io::parse_json(as_text(data, size), "fuzz"), "fuzz");
  try {
    (void)io::parse_hf_config(io::hf_config_json(cfg), "round-trip");
  } catch (const Error& e) {
    invariant(std::string("hf config: hf_config_json output does not load again: ") + e.what());
  }
}

void feed_hdf5_dataset(const uint8_t* data, size_t size) {
  TempFile tmp(".h5", data, size);
  const io::TokenDataset d = io::TokenDataset::open(tmp.path());
  // Touch every document boundary and token the way the data loader does.
  int64_t sum = 0;
  for (int64_t i = 0; i < d.num_docs(); ++i)
    for (int64_t p = d.doc_begin(i); p < d.doc_end(i); ++p) sum += d.token(p) + d.is_target(p);
  (void)sum;
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", feed_safetensors},   {"tokenizer", feed_tokenizer},
      {"yaml_config", feed_yaml_config},   {"hf_config", feed_hf_config},
      {"hdf5_dataset", feed_hdf5_dataset},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace lizard::fuzz
