// SparseRowGrad: row exchange of a row-sparse gradient (see include/lizard/dist/sparse_row_grad.h).
#include "lizard/dist/sparse_row_grad.h"

#include <algorithm>
#include <cstring>
#include <exception>

#include "lizard/core/error.h"
#include "lizard/ops/elementwise.h"
#include "lizard/ops/sparse_rows.h"

namespace lizard::dist {

std::vector<int32_t> sorted_unique_ids(const std::vector<Tensor>& ids, int64_t rows,
                                       const std::string& what) {
  // A mark per row, then one pass in row order: O(ids + rows), no sort (this runs on the host
  // at every step's start).
  std::vector<uint8_t> seen(static_cast<size_t>(std::max<int64_t>(rows, 0)), 0);
  for (const Tensor& t : ids) {
    LZ_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, what,
             ": token ids must be i32 or i64, got ", t.desc());
    const Tensor h = t.to(Device::cpu(), DType::I64).contiguous();
    const int64_t* p = h.data<int64_t>();
    for (int64_t i = 0; i < h.numel(); ++i) {
      LZ_INPUT_CHECK(p[i] >= 0 && p[i] < rows, what, ": token id ", p[i],
                     " is outside the vocabulary [0, ", rows, ")");
      seen[static_cast<size_t>(p[i])] = 1;
    }
  }
  std::vector<int32_t> out;
  for (size_t v = 0; v < seen.size(); ++v)
    if (seen[v]) out.push_back(static_cast<int32_t>(v));
  return out;
}

SparseRowGrad::SparseRowGrad(Communicator& comm, autograd::Var param)
    : comm_(comm), param_(std::move(param)) {
  LZ_CHECK(param_.defined() && param_.requires_grad() && param_.is_leaf(),
           "SparseRowGrad: '", param_.defined() ? param_.name() : std::string("(undefined)"),
           "' must be a parameter that requires grad");
  LZ_CHECK(param_.dim() == 2 && param_.size(0) < (int64_t{1} << 31), "SparseRowGrad: '",
           param_.name(), "' must be a table [V, D] with V < 2^31, got ", param_.data().desc());
  LZ_CHECK(param_.device() == comm_.device(), "SparseRowGrad: '", param_.name(), "' is on ",
           param_.device().str(), " but the ", comm_.backend(), " communicator works on ",
           comm_.device().str());
  rows_ = param_.size(0);
}

SparseRowGrad::~SparseRowGrad() {
  // An all-gather in flight still writes into buffer_ (NCCL): order its end first. Not while
  // an exception unwinds: the job is being aborted and a peer may never take part.
  if (work_ && std::uncaught_exceptions() == 0) work_->wait();
}

void SparseRowGrad::set_rows(const std::vector<Tensor>& ids) {
  LZ_CHECK(!launched_, "SparseRowGrad::set_rows: the previous step of '", param_.name(),
           "' was launched but not finished");
  const std::vector<int32_t> mine = sorted_unique_ids(ids, rows_, param_.name());
  std::vector<uint8_t> bytes(mine.size() * sizeof(int32_t));
  if (!bytes.empty()) std::memcpy(bytes.data(), mine.data(), bytes.size());
  const std::vector<std::vector<uint8_t>> all = comm_.all_gather_bytes(bytes);
  const int world = comm_.world_size();
  LZ_CHECK(static_cast<int>(all.size()) == world, "SparseRowGrad: gathered ", all.size(),
           " lists from ", world, " ranks");
  counts_.assign(static_cast<size_t>(world), 0);
  offsets_.assign(static_cast<size_t>(world), 0);
  int64_t total = 0;
  max_count_ = 0;
  for (int q = 0; q < world; ++q) {
    LZ_CHECK(all[q].size() % sizeof(int32_t) == 0, "SparseRowGrad: rank ", q, " sent ",
             all[q].size(), " bytes of ids");
    counts_[q] = static_cast<int64_t>(all[q].size() / sizeof(int32_t));
    offsets_[q] = total;
    total += counts_[q];
    max_count_ = std::max(max_count_, counts_[q]);
  }
  // (world - 1) M rows in through the all-gather vs ~2 (world - 1) / world V through a ring
  // all-reduce (see the header).
  sparse_ = world * max_count_ < 2 * rows_;
  if (sparse_) {
    Tensor host = Tensor::empty({total}, DType::I32);
    for (int q = 0; q < world; ++q)
      if (counts_[q] > 0)
        std::memcpy(host.data<int32_t>() + offsets_[q], all[q].data(), all[q].size());
    // Once per step, before the forward: on a GPU this copy waits for the queued work (the
    // previous step's update), which the first micro-batch's input copy waits for anyway.
    ids_ = host.to(comm_.device());
  }
  armed_ = true;
}

void SparseRowGrad::launch() {
  LZ_CHECK(armed_ && !launched_, "SparseRowGrad::launch: '", param_.name(),
           "': call set_rows() with the step's token ids first (once per step)");
  const Shape shape = param_.shape();
  if (!param_.grad().defined()) {
    param_.set_grad(Tensor::zeros(shape, param_.dtype(), param_.device()));
  } else {
    LZ_CHECK(param_.grad().shape() == shape, "SparseRowGrad: gradient of '", param_.name(),
             "' is ", param_.grad().desc(), ", expected shape ", shape_str(shape));
    if (!param_.grad().is_contiguous()) param_.set_grad(param_.grad().contiguous());
  }
  Tensor g = param_.grad();
  launched_ = true;
  if (!sparse_) {
    work_ = comm_.all_reduce_sum_async(g);
    return;
  }
  const int64_t D = shape[1], M = max_count_;
  const int world = comm_.world_size(), r = comm_.rank();
  if (M == 0) return;  // no rank looked up a row: nothing to send (every rank knows it)
  if (!buffer_.defined() || buffer_.size(0) < world * M || buffer_.dtype() != g.dtype())
    buffer_ = Tensor::empty({world * M, D}, g.dtype(), g.device());
  gathered_ = buffer_.slice(0, 0, world * M);
  Tensor slot = gathered_.slice(0, r * M, (r + 1) * M);  // this rank's part, padded to M
  Tensor mine = slot.slice(0, 0, counts_[r]);
  ops::gather_rows(g, ids_.slice(0, offsets_[r], offsets_[r] + counts_[r]), mine);
  // In place: slot r of the gathered buffer is this rank's input. The padding rows of a slot
  // travel uninitialised and are never read.
  work_ = comm_.all_gather_async(slot, gathered_);
}

void SparseRowGrad::finish(double divisor) {
  LZ_CHECK(launched_, "SparseRowGrad::finish: '", param_.name(), "' was not launched");
  LZ_CHECK(divisor > 0, "SparseRowGrad::finish: divisor must be positive, got ", divisor);
  if (work_) {
    work_->wait();
    work_.reset();
  }
  Tensor g = param_.grad();
  if (sparse_) {
    g.fill_(0.0);
    const int64_t M = max_count_;
    for (int q = 0; q < comm_.world_size(); ++q) {
      if (counts_[q] == 0) continue;
      const Tensor rows = gathered_.slice(0, q * M, q * M + counts_[q]);
      ops::scatter_add_rows(g, ids_.slice(0, offsets_[q], offsets_[q] + counts_[q]), rows);
    }
  }
  // The bucketer's scaling: one multiply by 1 / divisor in the gradient's precision.
  if (divisor != 1.0) g.copy_(ops::affine(g, 1.0 / divisor));
  launched_ = armed_ = false;
}

}  // namespace lizard::dist
