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

/// Greedy whole-document layout of one epoch (DataLoader's whole_documents mode): appends the
/// segments {position in `order`, first token, length} of each sequence and the index of each
/// sequence's first segment, plus an end sentinel. A document of at most T tokens that does not
/// fit in what is left of the open sequence starts the next one; a longer one is split.
template <class Segment, class LenOf>
void whole_document_layout(const std::vector<int64_t>& order, int64_t T, LenOf len_of,
                           std::vector<Segment>& segments, std::vector<int64_t>& seg_begin) {
  segments.clear();
  seg_begin.clear();
  int64_t used = T;  // no sequence open yet
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t L = len_of(order[k]);
    if (L <= 0) continue;
    if (L <= T && used + L > T) used = T;  // does not fit: close the open sequence
    for (int64_t off = 0; off < L;) {
      if (used == T) {
        seg_begin.push_back(static_cast<int64_t>(segments.size()));
        used = 0;
      }
      const int64_t take = std::min(L - off, T - used);
      segments.push_back(Segment{static_cast<int64_t>(k), off, take});
      used += take;
      off += take;
    }
  }
  seg_begin.push_back(static_cast<int64_t>(segments.size()));
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
  if (opt_.whole_documents) seqs_per_epoch_ = locate_count(0);
}

int64_t DataLoader::locate_count(int64_t epoch) const {
  while (static_cast<int64_t>(epoch_counts_.size()) <= epoch) {
    build_epoch(static_cast<int64_t>(epoch_counts_.size()));
    epoch_counts_.push_back(static_cast<int64_t>(seg_begin_.size()) - 1);
  }
  return epoch_counts_[static_cast<size_t>(epoch)];
}

std::pair<int64_t, int64_t> DataLoader::locate(int64_t index) const {
  LZ_CHECK(index >= 0, "data loader: sequence index ", index);
  int64_t e = 0;
  for (;; ++e) {
    const int64_t n = locate_count(e);
    if (index < n) return {e, index};
    index -= n;
  }
}

int64_t DataLoader::epoch() const {
  return opt_.whole_documents ? locate(pos_).first : pos_ / seqs_per_epoch_;
}

void DataLoader::whole_sequence(int64_t j, int32_t* inputs, int32_t* targets) const {
  const int64_t T = opt_.seq_len;
  std::fill(inputs, inputs + T, 0);
  std::fill(targets, targets + T, kIgnoreIndex);
  auto target_of = [&](int64_t p) {
    return !opt_.use_loss_mask || data_->is_target(p) ? data_->token(p) : kIgnoreIndex;
  };
  int64_t t = 0;
  const int64_t s_end = seg_begin_[static_cast<size_t>(j) + 1];
  for (int64_t s = seg_begin_[static_cast<size_t>(j)]; s < s_end; ++s) {
    const Segment& g = segments_[static_cast<size_t>(s)];
    const int64_t doc = order_[static_cast<size_t>(g.doc_pos)];
    const int64_t b = data_->doc_begin(doc) + g.offset;
    for (int64_t i = 0; i < g.len; ++i, ++t) {
      inputs[t] = data_->input(b + i);
      // A target is the next token of the same document (never a document's first token).
      if (i > 0) targets[t - 1] = target_of(b + i);
    }
    // The last segment of a document split by the sequence end: its next token is the target.
    if (s + 1 == s_end && g.offset + g.len < data_->doc_len(doc)) targets[t - 1] = target_of(b + g.len);
  }
}

void DataLoader::build_epoch(int64_t epoch) const {
  if (epoch == cached_epoch_) return;
  order_ = docs_;
  if (opt_.shuffle) shuffle(order_, opt_.seed, kEpochOffsetBase + static_cast<uint64_t>(epoch));
  starts_.resize(order_.size() + 1);
  starts_[0] = 0;
  for (size_t i = 0; i < order_.size(); ++i) starts_[i + 1] = starts_[i] + data_->doc_len(order_[i]);
  if (opt_.whole_documents)
    whole_document_layout(order_, opt_.seq_len, [&](int64_t d) { return data_->doc_len(d); },
                          segments_, seg_begin_);
  cached_epoch_ = epoch;
}

void DataLoader::sequence(int64_t index, int32_t* inputs, int32_t* targets) const {
  if (opt_.whole_documents) {
    const auto [e, j] = locate(index);
    build_epoch(e);
    whole_sequence(j, inputs, targets);
    return;
  }
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
    if (t < T) inputs[t] = in_stream ? data_->input(p) : 0;
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
