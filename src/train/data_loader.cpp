// Document packing, shuffling and sharding (see include/lizard/train/data_loader.h).
#include "lizard/train/data_loader.h"

#include <algorithm>
#include <cmath>

#include "lizard/core/error.h"
#include "lizard/core/rng.h"

namespace lizard::train {

namespace {

/// Fisher-Yates with Philox words of stream (seed, offset): the same order on every machine.
void shuffle(std::vector<int64_t>& v, uint64_t seed, uint64_t offset) {
  for (size_t i = v.size(); i > 1; --i) {
    // 64 random bits keep the modulo bias negligible for any realistic size.
    const uint64_t r = (static_cast<uint64_t>(rng_u32(seed, offset, 2 * i)) << 32) |
                       rng_u32(seed, offset, 2 * i + 1);
    std::swap(v[i - 1], v[r % i]);
  }
}

// Distinct stream offsets so the split and the epoch orders never share random numbers.
constexpr uint64_t kSplitSeed = 0x5EED5EEDull;
constexpr uint64_t kEpochOffsetBase = 1ull << 32;

}  // namespace

std::pair<std::vector<int64_t>, std::vector<int64_t>> split_documents(int64_t num_docs,
                                                                      double val_fraction) {
  std::vector<int64_t> all(num_docs);
  for (int64_t i = 0; i < num_docs; ++i) all[i] = i;
  const int64_t n_val = static_cast<int64_t>(std::llround(val_fraction * num_docs));
  if (n_val == 0) return {all, {}};
  LZ_INPUT_CHECK(n_val < num_docs, "data.val_fraction ", val_fraction, " leaves no training documents of ",
                 num_docs);
  shuffle(all, kSplitSeed, 0);
  std::vector<int64_t> val(all.begin(), all.begin() + n_val), train(all.begin() + n_val, all.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {train, val};
}

DataLoader::DataLoader(std::shared_ptr<const io::TokenDataset> data, std::vector<int64_t> docs,
                       LoaderOptions opt)
    : data_(std::move(data)), docs_(std::move(docs)), opt_(opt) {
  LZ_INPUT_CHECK(!docs_.empty(), "data loader over ", data_->path(), ": no documents");
  LZ_CHECK(opt_.seq_len >= 1 && opt_.micro_batch >= 1, "data loader: bad seq_len/micro_batch");
  LZ_CHECK(opt_.world >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world, "data loader: rank ",
           opt_.rank, " of ", opt_.world);
  for (int64_t d : docs_) {
    LZ_CHECK(d >= 0 && d < data_->num_docs(), "data loader: document ", d, " out of range");
    stream_tokens_ += data_->doc_len(d);
  }
  // The stream's last token is only ever a target, so N tokens give N-1 input positions.
  seqs_per_epoch_ = std::max<int64_t>(1, (stream_tokens_ - 1 + opt_.seq_len - 1) / opt_.seq_len);
}

void DataLoader::build_epoch(int64_t epoch) const {
  if (epoch == cached_epoch_) return;
  order_ = docs_;
  if (opt_.shuffle) shuffle(order_, opt_.seed, kEpochOffsetBase + static_cast<uint64_t>(epoch));
  starts_.resize(order_.size() + 1);
  starts_[0] = 0;
  for (size_t i = 0; i < order_.size(); ++i) starts_[i + 1] = starts_[i] + data_->doc_len(order_[i]);
  cached_epoch_ = epoch;
}

void DataLoader::sequence(int64_t index, int32_t* inputs, int32_t* targets) const {
  const int64_t T = opt_.seq_len;
  build_epoch(index / seqs_per_epoch_);
  const int64_t s0 = (index % seqs_per_epoch_) * T;
  // The document holding stream position s0.
  size_t k = std::upper_bound(starts_.begin(), starts_.end(), s0) - starts_.begin() - 1;
  for (int64_t t = 0; t <= T; ++t) {
    const int64_t s = s0 + t;
    while (k < order_.size() && s >= starts_[k + 1]) ++k;
    const bool in_stream = k < order_.size();
    const int64_t p = in_stream ? data_->doc_begin(order_[k]) + (s - starts_[k]) : 0;
    if (t < T) inputs[t] = in_stream ? data_->token(p) : 0;
    if (t > 0) {
      // A target counts only inside the stream, not at a document's first token, and where
      // the loss mask marks it.
      const bool valid = in_stream && s != starts_[k] &&
                         (!opt_.use_loss_mask || data_->is_target(p));
      targets[t - 1] = valid ? data_->token(p) : kIgnoreIndex;
    }
  }
}

Batch DataLoader::next() {
  const int64_t B = opt_.micro_batch, T = opt_.seq_len;
  Batch b;
  b.inputs = Tensor::empty({B, T}, DType::I32);
  b.targets = Tensor::empty({B, T}, DType::I32);
  int32_t* in = b.inputs.data<int32_t>();
  int32_t* tg = b.targets.data<int32_t>();
  const int64_t first = pos_ + static_cast<int64_t>(opt_.rank) * B;
  for (int64_t i = 0; i < B; ++i) sequence(first + i, in + i * T, tg + i * T);
  b.num_targets = 0;
  for (int64_t i = 0; i < B * T; ++i) b.num_targets += tg[i] >= 0;
  pos_ += static_cast<int64_t>(opt_.world) * B;
  return b;
}

}  // namespace lizard::train
