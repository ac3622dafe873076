// The row exchange of an embedding gradient (dist::SparseRowGrad) checked over a real
// communicator (the MPI and NCCL test binaries). Every rank must call each check (they issue
// collectives); checks use EXPECT so no rank leaves a collective behind.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lizard/autograd/functions.h"
#include "lizard/autograd/nn_functions.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/dist/sparse_row_grad.h"
#include "lizard/ops/elementwise.h"
#include "test_util.h"

namespace lizard::test {

/// all_gather out of place and in place, f32 and i32 (any dtype travels as bytes): rank q's
/// slot holds exactly what rank q sent.
inline void check_all_gather(dist::Communicator& comm) {
  const Device dev = comm.device();
  const int world = comm.world_size(), r = comm.rank();
  const int64_t n = 5;
  for (DType dt : {DType::F32, DType::I32}) {
    auto part = [&](int q) {
      std::vector<double> v;
      for (int64_t i = 0; i < n; ++i) v.push_back(100.0 * q + static_cast<double>(i) - 7);
      return v;
    };
    Tensor in = Tensor::from_vector(part(r), {n}, dt).to(dev);
    Tensor out = Tensor::full({world * n}, -1, dt, dev);
    comm.all_gather(in, out);
    Tensor same = Tensor::full({world * n}, -1, dt, dev);
    Tensor slot = same.slice(0, r * n, (r + 1) * n);
    slot.copy_(in);
    comm.all_gather(slot, same);  // in place
    std::vector<double> want;
    for (int q = 0; q < world; ++q)
      for (double v : part(q)) want.push_back(v);
    EXPECT_EQ(out.to_vector(), want) << dtype_name(dt);
    EXPECT_EQ(same.to_vector(), want) << dtype_name(dt) << " in place";
  }
}

/// The token ids of rank `r`'s micro-batch `mb` (i32 [2, 6], repeats included). Over the
/// ranks: rows 0..2 seen by every rank, rows 10 + 4r .. 10 + 4r + 5 (neighbouring ranks
/// overlap on two), row V - 1 seen by rank 1 only, the other rows by nobody.
inline Tensor sparse_check_ids(int r, int mb, int64_t V) {
  std::vector<int32_t> ids{0, 1, 2, 2};
  for (int k = 0; k < 4; ++k) ids.push_back(10 + 4 * r + 3 * mb + (k % 3));
  ids.push_back(static_cast<int32_t>(r == 1 ? V - 1 : 0));
  ids.push_back(static_cast<int32_t>(mb == 0 ? 1 : 10 + 4 * r));
  ids.push_back(2);
  ids.push_back(0);
  return Tensor::from_data(ids, {2, 6});
}

/// Rank `r`'s weighting of micro-batch `mb`'s embedding output [2, 6, D].
inline Tensor sparse_check_weights(int r, int mb, int64_t D) {
  return rand({2, 6, D}, 500 + 10 * static_cast<uint64_t>(r) + static_cast<uint64_t>(mb), DType::F32);
}

/// The exchanged gradient of a [V, D] embedding (dtype `dt` on comm.device()) with 2
/// accumulated micro-batches per rank (ids above, loss = sum(embedding(ids) * weights)) equals:
/// (1) the sum over ranks computed here independently in f64 (the gradient of the loss is a
/// scatter-add of the weights: exact in f64), divided by the divisor: f32 within 1e-6 relative
/// (a few f32 roundings: accumulation, the rank sum, the division); bf16 within 1e-2 (every
/// rank's gradient is rounded to 8 bits, 2^-9 relative, then its sum once more);
/// (2) the dense all-reduce of the same gradient, divided the same way: bitwise on 2 ranks
/// (0 + a + b = a + b, commutative), else within the f32 (bf16) tolerance above;
/// (3) on every rank, bit for bit. Rows no rank saw are exactly zero. V, D: awkward sizes.
inline void check_sparse_row_grad(dist::Communicator& comm, DType dt, int64_t V, int64_t D) {
  const Device dev = comm.device();
  const int world = comm.world_size(), r = comm.rank();
  const double divisor = 3.0;
  const double tol = dt == DType::BF16 ? 1e-2 : 1e-6;
  autograd::Var w(rand({V, D}, 5, DType::F32).to(dev, dt), true);
  w.set_name("embed");
  for (int mb = 0; mb < 2; ++mb) {
    autograd::Var y = autograd::embedding(w, sparse_check_ids(r, mb, V).to(dev));
    autograd::Var c(sparse_check_weights(r, mb, D).to(dev, dt));
    autograd::sum(autograd::mul(y, c)).backward();  // accumulates over the micro-batches
  }
  const Tensor local = w.grad().clone();
  // (1) independently: grad[id] += weights[position] over every rank's micro-batches, in f64.
  std::vector<double> want(static_cast<size_t>(V * D), 0.0);
  std::vector<bool> seen(static_cast<size_t>(V), false);
  for (int q = 0; q < world; ++q)
    for (int mb = 0; mb < 2; ++mb) {
      const std::vector<double> ids = sparse_check_ids(q, mb, V).to_vector();
      const std::vector<double> c = sparse_check_weights(q, mb, D).to(dt).to_vector();
      for (size_t p = 0; p < ids.size(); ++p) {
        const auto id = static_cast<size_t>(ids[p]);
        seen[id] = true;
        for (int64_t d = 0; d < D; ++d) want[id * D + d] += c[p * D + d] / divisor;
      }
    }
  const Tensor expect = Tensor::from_vector(want, {V, D}, DType::F64);
  dist::SparseRowGrad ex(comm, w);
  ex.set_rows({sparse_check_ids(r, 0, V), sparse_check_ids(r, 1, V)});
  EXPECT_TRUE(ex.sparse()) << "rows of a small share of the table must be exchanged as rows";
  EXPECT_EQ(ex.counts().size(), static_cast<size_t>(world));
  ex.launch();
  ex.finish(divisor);
  const Tensor got = w.grad().to(Device::cpu()).to(DType::F64);
  EXPECT_LT(rel_err(got, expect), tol) << dtype_name(dt);
  // And the check can fail: before the exchange this rank held only its own share.
  EXPECT_GT(rel_err(local.to(Device::cpu()).to(DType::F64), expect), 1e-1);
  const std::vector<double> g = got.to_vector();
  int64_t nonzero_unseen = 0;  // EXPECT, not ASSERT: the collectives below must still run
  for (int64_t v = 0; v < V; ++v)
    if (!seen[static_cast<size_t>(v)])
      for (int64_t d = 0; d < D; ++d) nonzero_unseen += g[v * D + d] != 0.0;
  EXPECT_EQ(nonzero_unseen, 0) << "elements of rows no rank looked up";
  // (2) the dense path on the same local gradient.
  Tensor dense = local.clone();
  comm.all_reduce_sum(dense);
  dense = ops::affine(dense, 1.0 / divisor);
  const double to_dense = rel_err(got, dense.to(Device::cpu()).to(DType::F64));
  if (world == 2 && dt == DType::F32) {
    EXPECT_EQ(to_dense, 0.0);
  } else {
    EXPECT_LT(to_dense, tol);
  }
  // (3) every rank holds the same bits.
  Tensor all = Tensor::empty({world * V * D}, dt, dev);
  comm.all_gather(w.grad().view({V * D}), all);
  const std::vector<double> every = all.to_vector();
  for (int q = 0; q < world; ++q)
    EXPECT_TRUE(std::equal(every.begin() + q * V * D, every.begin() + (q + 1) * V * D, g.begin()))
        << "rank " << q << " holds another gradient";
}

/// The trainer's path: DataParallel with the embedding as `sparse_rows` (out of the buckets)
/// and a dense parameter behind it, buckets launched from autograd's leaf-ready hook in the
/// last of 2 micro-batches' backward. Both gradients equal the f64 sum of every rank's
/// gradient recomputed here (1e-6: f32 roundings). A second step whose ids cover the whole
/// vocabulary takes the all-reduce path (world x M >= 2 V) and gives the same kind of result.
inline void check_data_parallel_sparse_rows(dist::Communicator& comm, int64_t V, int64_t D) {
  const Device dev = comm.device();
  const int world = comm.world_size(), r = comm.rank();
  auto make_params = [&] {
    autograd::Var e(rand({V, D}, 61, DType::F32).to(dev), true), m(rand({D, 3}, 62, DType::F32).to(dev), true);
    e.set_name("embed");
    m.set_name("proj");
    return std::vector<autograd::Var>{e, m};
  };
  auto loss_of = [&](const std::vector<autograd::Var>& ps, const Tensor& ids, int q, int mb) {
    autograd::Var h = autograd::embedding(ps[0], ids.to(dev));  // [2, 6, D]
    autograd::Var z = autograd::matmul(autograd::reshape(h, {ids.numel(), D}), ps[1]);
    autograd::Var c(rand({ids.numel(), 3}, 800 + 10 * static_cast<uint64_t>(q) + static_cast<uint64_t>(mb), DType::F32).to(dev));
    return autograd::sum(autograd::mul(z, c));
  };
  for (bool whole_vocab : {false, true}) {
    auto ids_of = [&](int q, int mb) {
      if (!whole_vocab) return sparse_check_ids(q, mb, V);
      std::vector<int32_t> all;
      for (int64_t v = 0; v < V; ++v) all.push_back(static_cast<int32_t>((v * 7 + q + mb) % V));
      return Tensor::from_data(all, {1, V});
    };
    std::vector<autograd::Var> ps = make_params();
    dist::DataParallelOptions o;
    o.bucket_bytes = 64;
    o.sparse_rows = ps[0];
    dist::DataParallel dp(comm, ps, o);
    ASSERT_NE(dp.sparse_rows(), nullptr);
    dp.set_step_ids({ids_of(r, 0), ids_of(r, 1)});
    EXPECT_EQ(dp.sparse_rows()->sparse(), !whole_vocab);
    loss_of(ps, ids_of(r, 0), r, 0).backward();
    dp.begin_grad_sync();
    autograd::backward({loss_of(ps, ids_of(r, 1), r, 1)}, {}, false,
                       [&](autograd::VarImpl* l) { dp.on_leaf_ready(l); });
    dp.finish_grad_sync();
    std::vector<Tensor> expect(ps.size());
    for (int q = 0; q < world; ++q) {
      std::vector<autograd::Var> qs = make_params();
      for (int mb = 0; mb < 2; ++mb) loss_of(qs, ids_of(q, mb), q, mb).backward();
      for (size_t i = 0; i < qs.size(); ++i) {
        Tensor gq = qs[i].grad().to(Device::cpu()).to(DType::F64);
        expect[i] = q == 0 ? gq : ops::add(expect[i], gq);
      }
    }
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_LT(rel_err(ps[i].grad().to(Device::cpu()).to(DType::F64), expect[i]), 1e-6)
          << ps[i].name() << (whole_vocab ? " (all-reduce path)" : " (row exchange)");
  }
}

}  // namespace lizard::test
