// The trainer's data-parallel path checked over a real communicator (MPI or NCCL tests): the
// same four-parameter graph on every rank, buckets launched from autograd's leaf-ready hook
// during backward, then ZeRO-1's parameter sync. Every rank must call it (it issues
// collectives); checks use EXPECT so no rank leaves a collective behind.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "lizard/autograd/functions.h"
#include "lizard/dist/data_parallel.h"
#include "lizard/ops/elementwise.h"
#include "test_util.h"

namespace lizard::test {

/// Shapes of the check: parameters {w0 [a, b], w1 [b], w2 [b, c], w3 [c, c]} and the input
/// x_r [rows, a]; loss_r = sum(((x_r w0 + w1) w2 w3)^2) with x_r different on every rank.
struct OverlappedDpShapes {
  int64_t rows, a, b, c;
};

/// Runs one overlapped backward under DataParallel (ZeRO-1, `bucket_bytes` buckets; once with
/// the gradients copied into the buckets, once as views of them) on
/// comm.device() and expects (1) every gradient within 1e-6 relative of the f64 sum of every
/// rank's gradient, recomputed here on the same device (f32 partial sums in the backend's order
/// vs f64: a few f32 roundings of the total), and (2) after rank-specific scribbles,
/// sync_params restores each tensor from its owner exactly.
inline void check_overlapped_data_parallel(dist::Communicator& comm, const OverlappedDpShapes& s,
                                           size_t bucket_bytes) {
  const Device dev = comm.device();
  const int world = comm.world_size();
  auto make_params = [&] {
    std::vector<autograd::Var> ps;
    const std::vector<Shape> shapes{{s.a, s.b}, {s.b}, {s.b, s.c}, {s.c, s.c}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      autograd::Var v(rand(shapes[i], 40 + i, DType::F32).to(dev), true);
      v.set_name("w" + std::to_string(i));
      ps.push_back(v);
    }
    return ps;
  };
  auto loss_of = [&](const std::vector<autograd::Var>& ps, int r) {
    autograd::Var x(rand({s.rows, s.a}, 900 + r, DType::F32).to(dev));
    autograd::Var h = autograd::add(autograd::matmul(x, ps[0]), ps[1]);
    autograd::Var z = autograd::matmul(autograd::matmul(h, ps[2]), ps[3]);
    return autograd::sum(autograd::mul(z, z));
  };
  // Twice: with the gradients copied into the buckets, then as views of them
  // (DataParallel::prepare_grads: backward accumulates into what the backend all-reduces).
  for (const bool views : {false, true}) {
    std::vector<autograd::Var> ps = make_params();
    dist::DataParallelOptions o;
    o.bucket_bytes = bucket_bytes;
    o.zero1 = true;
    o.grad_views = views;
    dist::DataParallel dp(comm, ps, o);
    EXPECT_EQ(dp.prepare_grads(), views ? ps.size() : 0u);
    dp.begin_grad_sync();
    autograd::backward({loss_of(ps, comm.rank())}, {}, false,
                       [&](autograd::VarImpl* l) { dp.on_leaf_ready(l); });
    dp.finish_grad_sync();
    std::vector<Tensor> expect(ps.size());
    for (int r = 0; r < world; ++r) {
      std::vector<autograd::Var> qs = make_params();
      loss_of(qs, r).backward();
      for (size_t i = 0; i < qs.size(); ++i) {
        Tensor g = qs[i].grad().to(Device::cpu()).to(DType::F64);
        expect[i] = r == 0 ? g : ops::add(expect[i], g);
      }
    }
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_LT(rel_err(ps[i].grad().to(Device::cpu()).to(DType::F64), expect[i]), 1e-6)
          << ps[i].name() << (views ? " (gradient views)" : "");
    if (!views) continue;
    // ZeRO-1: every rank scribbles rank-specific values, sync restores the owner's.
    const std::vector<int> owners = dist::zero1_owners(ps, world);
    for (size_t i = 0; i < ps.size(); ++i) {
      Tensor d = ps[i].data();
      d.copy_(rand(ps[i].shape(), 7000 + 10 * i + comm.rank(), DType::F32).to(dev));
    }
    dp.sync_params();
    for (size_t i = 0; i < ps.size(); ++i) {
      Tensor want = rand(ps[i].shape(), 7000 + 10 * i + owners[i], DType::F32);
      EXPECT_EQ(max_abs_diff(ps[i].data().to(Device::cpu()), want), 0.0) << ps[i].name();
    }
  }
}

}  // namespace lizard::test
