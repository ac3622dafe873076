// HDF5 token dataset writer and reader (see include/lizard/io/hdf5_tokens.h).
#include <filesystem>

#include "lizard/core/error.h"
#include "lizard/io/hdf5_file.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::io {

namespace {

/// InputError unless every id is in [0, vocab): `what` prefixes the message, `kind` names the
/// ids ("token", "input token"), `where(i)` the position of id i, `outside` the range's words.
template <typename Where>
void check_ids(const std::vector<int32_t>& ids, int64_t vocab, const std::string& what,
               const char* kind, Where where, const char* outside) {
  for (size_t i = 0; i < ids.size(); ++i)
    LZ_INPUT_CHECK(ids[i] >= 0 && ids[i] < vocab, what, kind, " ", ids[i], where(i), " ", outside,
                   " [0, ", vocab, ")");
}

}  // namespace

TokenDatasetWriter::TokenDatasetWriter(std::string path, TokenDatasetMeta meta)
    : path_(std::move(path)), meta_(std::move(meta)) {
  LZ_INPUT_CHECK(meta_.vocab_size > 0, "token dataset ", path_, ": vocab_size must be positive");
}

void TokenDatasetWriter::add(const std::vector<int32_t>& tokens, const std::vector<uint8_t>* mask,
                             const std::vector<int32_t>* inputs) {
  LZ_CHECK(!finished_, "token dataset ", path_, ": add after finish");
  LZ_CHECK(!tokens.empty(), "token dataset ", path_, ": empty document ", offsets_.size());
  const std::string what = str_cat("token dataset ", path_, ": ");
  const std::string doc = str_cat(" of document ", offsets_.size());
  check_ids(tokens, meta_.vocab_size, what, "token", [&](size_t) { return doc; }, "outside the vocabulary");
  if (mask) {
    LZ_CHECK(mask->size() == tokens.size(), "token dataset ", path_, ": mask of ", mask->size(),
             " for ", tokens.size(), " tokens");
    if (mask_.empty()) mask_.assign(tokens_.size(), 1);  // earlier documents: all targets
  }
  if (inputs) {
    LZ_CHECK(inputs->size() == tokens.size(), "token dataset ", path_, ": inputs of ", inputs->size(),
             " for ", tokens.size(), " tokens");
    check_ids(*inputs, meta_.vocab_size, what, "input token", [&](size_t) { return doc; }, "outside the vocabulary");
    if (inputs_.empty()) inputs_ = tokens_;  // earlier documents read their tokens
  }
  offsets_.push_back(static_cast<int64_t>(tokens_.size()));
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  if (mask) {
    for (uint8_t m : *mask) mask_.push_back(m ? 1 : 0);
  } else if (!mask_.empty()) {
    mask_.insert(mask_.end(), tokens.size(), 1);
  }
  if (inputs) inputs_.insert(inputs_.end(), inputs->begin(), inputs->end());
  else if (!inputs_.empty()) inputs_.insert(inputs_.end(), tokens.begin(), tokens.end());
}

void TokenDatasetWriter::finish() {
  LZ_CHECK(!finished_, "token dataset ", path_, ": finish called twice");
  LZ_INPUT_CHECK(!offsets_.empty(), "token dataset ", path_, ": no documents to write");
  finished_ = true;
  const std::string tmp = path_ + ".tmp";
  {
    H5File f = H5File::create(tmp);
    f.write("tokens", Tensor::from_data(tokens_, {num_tokens()}));
    f.write("offsets", Tensor::from_data(offsets_, {num_docs()}));
    if (!mask_.empty()) f.write("loss_mask", Tensor::from_data(mask_, {num_tokens()}));
    if (!inputs_.empty()) f.write("input_tokens", Tensor::from_data(inputs_, {num_tokens()}));
    f.set_attr("tokenizer_hash", meta_.tokenizer_hash);
    f.set_attr("vocab_size", meta_.vocab_size);
    f.set_attr("schema_version", kTokenSchemaVersion);
    f.close();
  }
  std::filesystem::rename(tmp, path_);
}

TokenDataset TokenDataset::open(const std::string& path) {
  H5File f = H5File::open(path);
  TokenDataset d;
  d.path_ = path;
  const std::string what = str_cat("token dataset ", path, ": ");
  LZ_INPUT_CHECK(f.has_attr("schema_version"), what,
                 "no schema_version attribute (not written by `lizard prepare-data`?)");
  const int64_t version = f.attr_int("schema_version");
  LZ_INPUT_CHECK(version == kTokenSchemaVersion, what, "schema version ", version,
                 ", this build reads version ", kTokenSchemaVersion);
  d.meta_.vocab_size = f.attr_int("vocab_size");
  d.meta_.tokenizer_hash = f.attr_string("tokenizer_hash");
  for (const char* name : {"tokens", "offsets"})
    LZ_INPUT_CHECK(f.has(name), what, "dataset '", name, "' is missing");
  Tensor tokens = f.read("tokens"), offsets = f.read("offsets");
  LZ_INPUT_CHECK(tokens.dtype() == DType::I32 && tokens.dim() == 1, what,
                 "'tokens' must be 1-D int32, got ", tokens.desc());
  LZ_INPUT_CHECK(offsets.dtype() == DType::I64 && offsets.dim() == 1, what,
                 "'offsets' must be 1-D int64, got ", offsets.desc());
  const int32_t* tp = tokens.data<int32_t>();
  d.tokens_.assign(tp, tp + tokens.numel());
  const int64_t* op = offsets.data<int64_t>();
  d.offsets_.assign(op, op + offsets.numel());
  LZ_INPUT_CHECK(!d.offsets_.empty() && d.offsets_[0] == 0, what, "offsets must start at 0");
  for (size_t i = 0; i < d.offsets_.size(); ++i) {
    const int64_t end = i + 1 < d.offsets_.size() ? d.offsets_[i + 1] : d.num_tokens();
    LZ_INPUT_CHECK(d.offsets_[i] < end, what, "document ", i, " is empty or offsets decrease (",
                   d.offsets_[i], " -> ", end, ")");
  }
  auto at = [](size_t i) { return str_cat(" at ", i); };
  check_ids(d.tokens_, d.meta_.vocab_size, what, "token", at, "outside");
  if (f.has("loss_mask")) {
    Tensor m = f.read("loss_mask");
    LZ_INPUT_CHECK(m.dtype() == DType::U8 && m.numel() == tokens.numel(), what,
                   "'loss_mask' must be uint8 with one entry per token, got ", m.desc());
    const uint8_t* mp = m.data<uint8_t>();
    d.mask_.assign(mp, mp + m.numel());
  }
  if (f.has("input_tokens")) {
    Tensor in = f.read("input_tokens");
    LZ_INPUT_CHECK(in.dtype() == DType::I32 && in.numel() == tokens.numel(), what,
                   "'input_tokens' must be int32 with one entry per token, got ", in.desc());
    const int32_t* ip = in.data<int32_t>();
    d.inputs_.assign(ip, ip + in.numel());
    check_ids(d.inputs_, d.meta_.vocab_size, what, "input token", at, "outside");
  }
  return d;
}

}  // namespace lizard::io
