// Packs the documents of a token dataset into fixed-length training sequences.
//
// Each epoch orders the documents (a Philox shuffle keyed by (seed, epoch), or dataset order)
// and concatenates them into one stream; sequence i covers stream tokens [i*T, i*T + T] so
// inputs are the first T and targets the last T (next-token). A target is ignored (-100) when
// it starts a new document (no loss across boundaries), when the loss mask excludes it, or in
// the padding of the epoch's last sequence. With `whole_documents` a sequence holds whole
// documents instead (greedy, in epoch order; a document that does not fit in what is left
// starts the next sequence, the rest is padding; only a document longer than T is split):
// what recall tasks need, whose keys and queries must share a window. Everything is a pure function of (seed, position),
// so the loader resumes exactly from `position()`, and with `world` ranks each micro-step
// takes the next world x B sequences, rank r the r-th block of B: the same sequences per
// optimizer step as one rank at the same global batch.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "lizard/core/tensor.h"
#include "lizard/io/hdf5_tokens.h"

namespace lizard::train {

/// Target value of an ignored position.
constexpr int32_t kIgnoreIndex = -100;

/// One micro-batch on the CPU.
struct Batch {
  Tensor inputs;        ///< int32 [B, T] token ids (padding: token 0)
  Tensor targets;       ///< int32 [B, T] next-token ids, < 0 = ignored
  int64_t num_targets;  ///< count of targets >= 0 (the loss normaliser)
};

/// Deterministic train/validation split of a dataset's documents: a fixed permutation (not
/// the run seed, so every run of a dataset validates on the same documents) of which the first
/// round(fraction * docs) are held out. Returns {train, val} document indices, each sorted.
std::pair<std::vector<int64_t>, std::vector<int64_t>> split_documents(int64_t num_docs,
                                                                      double val_fraction);

struct LoaderOptions {
  int64_t seq_len = 2048;
  int64_t micro_batch = 1;
  bool shuffle = true;
  uint64_t seed = 0;
  bool use_loss_mask = true;  ///< false = every token is a target (loss_on: all)
  int rank = 0;
  int world = 1;
  bool whole_documents = false;  ///< see the file comment (data.pack: documents)
};

class DataLoader {
 public:
  /// `docs`: the document indices this loader draws from (e.g. the train split).
  DataLoader(std::shared_ptr<const io::TokenDataset> data, std::vector<int64_t> docs,
             LoaderOptions opt);

  /// The next micro-batch of this rank; advances the shared position by world x B sequences.
  Batch next();
  /// Sequences per epoch (the last one padded); with whole_documents, epoch 0's (each epoch's
  /// count depends on its order).
  int64_t sequences_per_epoch() const { return seqs_per_epoch_; }
  /// Tokens in the stream of one epoch.
  int64_t tokens_per_epoch() const { return stream_tokens_; }
  /// Sequences consumed by all ranks since the start (the resumable position).
  int64_t position() const { return pos_; }
  void set_position(int64_t pos) { pos_ = pos; }
  int64_t epoch() const;
  /// Sequence `index` (global, across epochs) as int32 inputs/targets of length T.
  void sequence(int64_t index, int32_t* inputs, int32_t* targets) const;

 private:
  void build_epoch(int64_t epoch) const;
  /// whole_documents: the epoch holding global sequence `index` and the index within it.
  std::pair<int64_t, int64_t> locate(int64_t index) const;
  /// whole_documents: sequences in epoch `epoch` (computed once, cached).
  int64_t locate_count(int64_t epoch) const;
  void whole_sequence(int64_t j, int32_t* inputs, int32_t* targets) const;

  std::shared_ptr<const io::TokenDataset> data_;
  std::vector<int64_t> docs_;
  LoaderOptions opt_;
  int64_t stream_tokens_ = 0;
  int64_t seqs_per_epoch_ = 0;
  int64_t pos_ = 0;
  // Layout of the cached epoch (a cache: rebuilt on demand, not state).
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> order_;   // document ids in stream order
  mutable std::vector<int64_t> starts_;  // stream offset of each, plus the total
  // whole_documents: the cached epoch's sequences as segments (document position in order_,
  // first token, length), sequence j owning segments [seg_begin_[j], seg_begin_[j + 1]);
  // and the sequence counts of epochs 0.. computed so far.
  struct Segment {
    int64_t doc_pos, offset, len;
  };
  mutable std::vector<Segment> segments_;
  mutable std::vector<int64_t> seg_begin_;
  mutable std::vector<int64_t> epoch_counts_;
};

}  // namespace lizard::train
