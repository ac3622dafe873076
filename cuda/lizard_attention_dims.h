// The call scalars of the Lizard attention kernels (Dims), in a header that host-only C++ can
// include: lizard_attention_common.cuh (device helpers) takes it from here, and GPU tests that
// call a launcher of lizard_detail directly (tests/gpu/lizard_window_bwd_q_test.cpp) build one
// without compiling device code.
#pragma once

namespace lizard::cuda::lizard_detail {

/// Scalars of one call shared by the kernels.
struct Dims {
  int B, T, H, Hkv, D, F, dm, Hg, Ht, m, w, NC;
  int combine_convex, rope, act_exp;
  float eps, scale;
};

}  // namespace lizard::cuda::lizard_detail
