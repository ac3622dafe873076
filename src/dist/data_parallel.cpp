// DataParallel: the per-step collectives of one rank (see include/lizard/dist/data_parallel.h).
#include "lizard/dist/data_parallel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "lizard/core/error.h"

namespace lizard::dist {

std::vector<int> zero1_owners(const std::vector<autograd::Var>& params, int world) {
  LZ_CHECK(world >= 1, "zero1_owners: world size ", world);
  std::vector<size_t> order(params.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Largest first onto the least-loaded rank: the classic greedy bound (max load <= mean +
  // largest tensor); stable so equal sizes keep registration order.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return params[a].data().numel() > params[b].data().numel();
  });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(params.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += params[i].data().numel();
  }
  return owner;
}

DataParallel::DataParallel(Communicator& comm, std::vector<autograd::Var> params,
                           DataParallelOptions opt)
    : comm_(comm), params_(std::move(params)), opt_(opt) {
  std::vector<autograd::Var> bucketed;
  for (const autograd::Var& p : params_) {
    if (opt_.sparse_rows.defined() && p.impl() == opt_.sparse_rows.impl()) continue;
    bucketed.push_back(p);
  }
  if (opt_.sparse_rows.defined()) {
    LZ_CHECK(bucketed.size() < params_.size(), "DataParallel: sparse_rows '",
             opt_.sparse_rows.name(), "' is not one of the parameters");
    sparse_ = std::make_unique<SparseRowGrad>(comm_, opt_.sparse_rows);
  }
  bucketer_ = std::make_unique<GradientBucketer>(comm_, bucketed, opt_.bucket_bytes);
  for (size_t i = 0; i < bucketer_->num_params(); ++i) index_[bucketer_->param(i).impl()] = i;
  if (opt_.zero1) {
    const std::vector<int> owners = zero1_owners(params_, comm_.world_size());
    for (size_t i = 0; i < params_.size(); ++i) owner_[params_[i].impl()] = owners[i];
  }
}

DataParallel::~DataParallel() = default;

void sum_doubles_on_host(Communicator& comm, double* values, int n) {
  std::vector<uint8_t> mine(sizeof(double) * static_cast<size_t>(n));
  std::memcpy(mine.data(), values, mine.size());
  const std::vector<std::vector<uint8_t>> all = comm.all_gather_bytes(mine);
  std::vector<double> sum(static_cast<size_t>(n), 0.0);
  for (size_t r = 0; r < all.size(); ++r) {
    LZ_CHECK(all[r].size() == mine.size(), "allreduce_sum: rank ", r, " sent ", all[r].size(),
             " bytes, this rank ", mine.size(), " (the ranks disagree on the step's collectives)");
    for (size_t i = 0; i < sum.size(); ++i) {
      double v;
      std::memcpy(&v, all[r].data() + sizeof(double) * i, sizeof(double));
      sum[i] += v;
    }
  }
  std::copy(sum.begin(), sum.end(), values);
}

void DataParallel::allreduce_sum(double* values, int n) {
  if (comm_.device().is_cuda()) {
    // A round trip through NCCL would copy to the GPU and back, and the copy back waits for
    // everything queued on the compute stream (at a step's start: the previous step's
    // optimizer), a GPU bubble per call that only a data-parallel run pays.
    sum_doubles_on_host(comm_, values, n);
    return;
  }
  Tensor t = Tensor::empty({n}, DType::F64);
  std::copy(values, values + n, t.data<double>());
  comm_.all_reduce_sum(t);
  std::copy(t.data<double>(), t.data<double>() + n, values);
}

void DataParallel::set_step_ids(const std::vector<Tensor>& ids) {
  if (sparse_) sparse_->set_rows(ids);
}

size_t DataParallel::prepare_grads() {
  return opt_.grad_views ? bucketer_->attach_grad_views() : 0;
}

void DataParallel::begin_grad_sync() {
  if (!opt_.overlap) return;
  bucketer_->start(1.0);
  started_ = true;
}

void DataParallel::on_leaf_ready(const autograd::VarImpl* leaf) {
  if (!started_) return;
  auto it = index_.find(leaf);
  if (it != index_.end()) bucketer_->mark_ready(it->second);
}

void DataParallel::finish_grad_sync() {
  // Each rank backpropagated its loss sum over the GLOBAL count: the plain sum is the mean.
  if (!started_) bucketer_->start(1.0);
  bucketer_->mark_all_ready();
  // After the last bucket: backward produces this gradient last (an embedding lookup is the
  // forward's first op), and every rank issues the collectives in this one order.
  if (sparse_) sparse_->launch();
  bucketer_->wait();
  if (sparse_) sparse_->finish(1.0);
  started_ = false;
}

std::vector<autograd::Var> DataParallel::owned_params(
    const std::vector<autograd::Var>& params) const {
  if (!opt_.zero1) return params;
  std::vector<autograd::Var> mine;
  for (const autograd::Var& p : params) {
    auto it = owner_.find(p.impl());
    LZ_CHECK(it != owner_.end(), "DataParallel::owned_params: parameter '", p.name(),
             "' was not given to the constructor");
    if (it->second == comm_.rank()) mine.push_back(p);
  }
  return mine;
}

void DataParallel::sync_params() {
  if (!opt_.zero1) return;
  // One broadcast per tensor in registration order (the same sequence on every rank).
  for (autograd::Var& p : params_) {
    Tensor d = p.data();
    LZ_CHECK(d.is_contiguous(), "ZeRO-1: parameter '", p.name(), "' is not contiguous");
    comm_.broadcast(d, owner_.at(p.impl()));
  }
}

}  // namespace lizard::dist
