// SparseRowGrad: the data-parallel sum of a gradient that is non-zero on a few rows only, by
// exchanging those rows instead of all-reducing the whole table.
//
// What it is for: an untied input embedding [V, D]. Its gradient on rank r is non-zero only on
// the rows of the token ids rank r looked up in the step (all its micro-batches), U_r; the host
// knows those ids before the forward. Backward produces that gradient LAST (the lookup is the
// first op of the forward), so its all-reduce (V x D, 100 MB at 32768 x 768 f32) can overlap
// nothing; U_r is typically a small fraction of V.
//
// Per step, on every rank, in the same place:
//   set_rows(ids)   host, before the forward: U_r = sorted unique ids (i32); every rank's list
//                   through all_gather_bytes (host MPI, also under NCCL), so every rank knows
//                   every U_q; the lists go to the device once (one small copy).
//   ... backward (the gradient must be zero outside U_r: the caller's contract) ...
//   launch()        rows G_r[U_r] gathered into slot r of a [world, M, D] buffer (M = largest
//                   count, slots padded), then comm.all_gather_async (NCCL: communication stream)
//   finish(div)     grad <- 0; grad[U_0] += rows of rank 0; grad[U_1] += rows of rank 1; ... (rank
//                   order; ids unique within a list, so no atomics); then grad *= 1 / div, like
//                   GradientBucketer.
// Every rank adds the same rows in the same order: the result is bitwise identical on every
// rank and run. It equals the dense all-reduce up to the order of the sum (bitwise on two
// ranks: (0 + a) + b = a + b; the ranks that never saw a row add nothing to it).
//
// Which path: the padded all-gather moves (world - 1) x M rows into each rank, a ring
// all-reduce about 2 (world - 1) / world x V; so a step exchanges rows when world x M < 2 V, and
// otherwise all-reduces the whole gradient (many ranks or long steps over a small vocabulary).
// Every rank knows every count, so every rank takes the same path.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lizard/autograd/variable.h"
#include "lizard/dist/communicator.h"

namespace lizard::dist {

/// Sorted unique ids of `ids` (host tensors, i32 or i64, any shape; duplicates and several
/// tensors fine). InputError naming `what`, the id and `rows` for an id outside [0, rows).
std::vector<int32_t> sorted_unique_ids(const std::vector<Tensor>& ids, int64_t rows,
                                       const std::string& what);

class SparseRowGrad {
 public:
  /// `param`: a leaf [V, D] that requires grad, on comm.device(); V < 2^31. The communicator
  /// must outlive this object. Throws Error otherwise, naming the parameter.
  SparseRowGrad(Communicator& comm, autograd::Var param);
  ~SparseRowGrad();
  SparseRowGrad(const SparseRowGrad&) = delete;
  SparseRowGrad& operator=(const SparseRowGrad&) = delete;

  const autograd::Var& param() const { return param_; }

  /// Starts a step: this rank's gradient will be non-zero only on the ids of `ids` (see
  /// sorted_unique_ids). A collective (all_gather_bytes): every rank calls it once per step,
  /// before launch(). Picks the path (sparse()) and, on it, copies the lists to the device.
  void set_rows(const std::vector<Tensor>& ids);
  /// This step exchanges rows (world x M < 2 V); false: all-reduce of the whole gradient.
  bool sparse() const { return sparse_; }
  /// Row counts |U_q| of every rank in this step.
  const std::vector<int64_t>& counts() const { return counts_; }

  /// Starts the exchange of the parameter's final gradient (after backward); an undefined
  /// gradient counts as zeros. Throws Error unless set_rows() came first in this step.
  void launch();
  /// Waits for it and writes grad = (sum over ranks of grad) / divisor (divisor > 0).
  void finish(double divisor);
  /// set_rows was called and finish not yet: launch()/finish() are due.
  bool armed() const { return armed_; }

 private:
  Communicator& comm_;
  autograd::Var param_;
  int64_t rows_ = 0;                 // V
  std::vector<int64_t> counts_;     // |U_q| per rank
  std::vector<int64_t> offsets_;    // start of U_q in ids_
  int64_t max_count_ = 0;           // M
  Tensor ids_;                      // i32 [sum counts], every rank's list, on the device
  Tensor buffer_;                   // [world x capacity, D] rows; reused across steps
  Tensor gathered_;                 // [world x M, D] view of buffer_ (this step)
  std::unique_ptr<Work> work_;
  bool sparse_ = false;
  bool armed_ = false;
  bool launched_ = false;
};

}  // namespace lizard::dist
