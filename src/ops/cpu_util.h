// Private helpers of the CPU reference backend.
#pragma once
#include <vector>

#include "lizard/core/dispatch.h"
#include "lizard/core/tensor.h"

namespace lizard::ops::cpu {

/// Calls f(o0, o1, o2) with element offsets of three operands over every index of `shape`.
template <class F>
void for_each3(const Shape& shape, const Shape& s0, const Shape& s1, const Shape& s2, F&& f) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (nd == 0) {
    f(0, 0, 0);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  int64_t o0 = 0, o1 = 0, o2 = 0;
  const int64_t L = nd - 1, len = shape[L];
  for (;;) {
    for (int64_t i = 0; i < len; ++i) f(o0 + i * s0[L], o1 + i * s1[L], o2 + i * s2[L]);
    int64_t d = L - 1;
    for (; d >= 0; --d) {
      ++idx[d];
      o0 += s0[d];
      o1 += s1[d];
      o2 += s2[d];
      if (idx[d] < shape[d]) break;
      o0 -= s0[d] * shape[d];
      o1 -= s1[d] * shape[d];
      o2 -= s2[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

/// Calls f(T{}) for float or double; any other dtype is an error naming `op`.
template <class F>
decltype(auto) visit_float(DType t, const char* op, F&& f) {
  if (t == DType::F32) return f(float{});
  if (t == DType::F64) return f(double{});
  throw Error(str_cat(op, ": the CPU backend computes in f32 or f64, got ", dtype_name(t)));
}

/// Throws unless every tensor is on the same device as the first.
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);

}  // namespace lizard::ops::cpu
