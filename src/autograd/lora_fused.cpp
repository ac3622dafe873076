// Several LoRA adapters on one input with one down-projection GEMM (see lora_fused.h).
//
// Two node kinds: one down node (z = x A_cat^T, inputs x and every A_p) and one up node per
// adapter (y_p = s z_p B_p^T + base_p, inputs z, B_p, base_p). The up nodes run first in
// backward; each writes its block dz_p = s G_p B_p straight into one dz [N, n r] they share
// with the down node, so dz is never zero-filled, sliced or summed: the first up node to run
// allocates it and hands it to the engine as z's gradient; the others receive it back as the
// engine's running sum for z and return it again as folded (their block written in place).
// The down node then runs the two K = n r / N = n r GEMMs on the whole dz.
#include "lizard/autograd/lora_fused.h"

#include <memory>

#include "lizard/ops/matmul.h"
#include "lizard/ops/shape_ops.h"

namespace lizard::autograd {

namespace {

// The dz of one call, shared by its up nodes and its down node during one backward pass.
struct FusedGrad {
  Tensor dz;                  // [N, n r], blocks written by the up nodes that ran
  std::vector<bool> written;  // per adapter: its block of dz holds its gradient
  void reset() {
    dz = Tensor();
    written.assign(written.size(), false);
  }
};

struct LoraUpNode : Node {
  Tensor z;  // the whole [N, n r] (shared with the down node's output); saved when B_p trains
  Tensor b;  // B_p [out_p, r]; saved when z needs a gradient
  int64_t p = 0, r = 0, n = 0;
  double scale = 1.0;
  std::shared_ptr<FusedGrad> shared;
  const char* name() const override { return "lora_fused_up"; }
  void release() override { z = b = Tensor(); }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<bool> folded(3, false);
    return backward_accumulate(g, {Tensor(), Tensor(), Tensor()}, folded);
  }
  std::vector<Tensor> backward_accumulate(const Tensor& g, const std::vector<Tensor>& partial,
                                          std::vector<bool>& folded) override {
    std::vector<Tensor> out(3);
    // dB_p = s G^T z_p: z_p is read in place as a column block of z (leading dimension n r).
    if (needs_grad(1)) out[1] = ops::matmul(g, z.slice(1, p * r, (p + 1) * r), true, false, scale);
    if (needs_grad(2)) out[2] = g;  // y_p = ... + base_p: the engine never writes G (variable.cpp)
    if (needs_grad(0)) {
      FusedGrad& f = *shared;
      if (partial[0].defined()) {
        // The engine's running sum for z can only be this call's dz (z has no other consumer):
        // writing this adapter's block into it is the fold. Unlike other partial sums it has no
        // holder but the engine and these nodes, and no one has read or written this block.
        LZ_CHECK(f.dz.defined() && partial[0].raw() == f.dz.raw(),
                 "lora_fused: the gradient sum of z is not the fused call's own dz buffer");
        folded[0] = true;
      } else {
        // First of this backward pass (a dz left by a pass that stopped early is dropped).
        f.reset();
        f.dz = Tensor::empty({g.size(0), n * r}, g.dtype(), g.device());
      }
      Tensor block = f.dz.slice(1, p * r, (p + 1) * r);
      ops::matmul_out(block, g, b, scale);  // dz_p = s G B_p, written as a column block (ldc n r)
      f.written[static_cast<size_t>(p)] = true;
      out[0] = f.dz;
    }
    return out;
  }
};

struct LoraDownNode : Node {
  Tensor x;      // [N, in]; saved when some A_p trains
  Tensor a_cat;  // [n r, in]; saved when x needs a gradient
  Shape x_shape;
  int64_t n = 0, r = 0;
  std::shared_ptr<FusedGrad> shared;
  const char* name() const override { return "lora_fused_down"; }
  void release() override { x = a_cat = Tensor(); }
  // The A_p's gradients are row blocks of one dA_cat GEMM result, each given to one leaf only.
  bool grad_is_private(size_t i) const override { return i >= 1; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<bool> folded(edges.size(), false);
    return backward_accumulate(g, std::vector<Tensor>(edges.size()), folded);
  }
  std::vector<Tensor> backward_accumulate(const Tensor& g, const std::vector<Tensor>& partial,
                                          std::vector<bool>& folded) override {
    FusedGrad& f = *shared;
    LZ_CHECK(f.dz.defined() && g.raw() == f.dz.raw(),
             "lora_fused: the gradient of z is not the fused call's own dz buffer");
    Tensor dz = g;
    bool all = true;
    for (bool w : f.written) all = all && w;
    if (!all) {
      // An adapter whose output got no gradient left its block unwritten: zero, not stale.
      dz = g.clone();
      for (int64_t p = 0; p < n; ++p)
        if (!f.written[static_cast<size_t>(p)]) dz.slice(1, p * r, (p + 1) * r).fill_(0.0);
    }
    f.reset();
    std::vector<Tensor> out(edges.size());
    bool any_a = false;
    for (int64_t p = 0; p < n; ++p) any_a = any_a || needs_grad(static_cast<size_t>(p + 1));
    if (any_a) {
      const Tensor da = ops::matmul(dz, x, true, false);  // dA_cat = dz^T x [n r, in]
      for (int64_t p = 0; p < n; ++p)
        if (needs_grad(static_cast<size_t>(p + 1)))
          out[static_cast<size_t>(p + 1)] = da.slice(0, p * r, (p + 1) * r);
    }
    if (needs_grad(0)) {
      // dx = dz A_cat (K = n r): the sum the engine already holds for x (e.g. the base
      // projections' dx) rides in the GEMM as C.
      const Tensor acc = partial.empty() ? Tensor() : partial[0];
      if (acc.defined() && acc.shape() == x_shape && acc.dtype() == dz.dtype() &&
          acc.device() == dz.device()) {
        out[0] = ops::matmul_add(dz, a_cat, acc);
        folded[0] = true;
      } else {
        out[0] = ops::matmul(dz, a_cat);
      }
    }
    return out;
  }
};

}  // namespace

bool is_row_split(const Tensor& whole, const std::vector<Tensor>& parts) {
  if (!whole.defined() || whole.dim() != 2 || !whole.is_contiguous()) return false;
  int64_t at = whole.offset(), rows = 0;
  for (const Tensor& t : parts) {
    if (!t.defined() || t.storage() != whole.storage() || t.dtype() != whole.dtype() ||
        t.dim() != 2 || t.size(1) != whole.size(1) || !t.is_contiguous() || t.offset() != at)
      return false;
    at += t.numel();
    rows += t.size(0);
  }
  return rows == whole.size(0);
}

std::vector<Var> lora_fused(const Var& x, const std::vector<Var>& a, const std::vector<Var>& b,
                            const std::vector<Var>& base, double scale, const Tensor& a_cat_in) {
  const size_t n = a.size();
  LZ_CHECK(n >= 1 && b.size() == n && base.size() == n, "lora_fused: ", n, " A, ", b.size(),
           " B and ", base.size(), " base tensors (one of each per adapter)");
  LZ_CHECK(x.dim() == 2, "lora_fused: x ", x.data().desc(), " must be 2-D [N, in]");
  const int64_t N = x.size(0), in = x.size(1), r = a[0].dim() == 2 ? a[0].size(0) : -1;
  std::vector<Tensor> ad;
  for (size_t p = 0; p < n; ++p) {
    LZ_CHECK(a[p].dim() == 2 && a[p].size(0) == r && a[p].size(1) == in, "lora_fused: A_", p, " ",
             a[p].data().desc(), " must be [", r, ", ", in, "] (one rank for all adapters)");
    LZ_CHECK(b[p].dim() == 2 && b[p].size(1) == r, "lora_fused: B_", p, " ", b[p].data().desc(),
             " must be [out, ", r, "]");
    LZ_CHECK(!base[p].defined() || base[p].shape() == Shape({N, b[p].size(0)}), "lora_fused: base_",
             p, " ", base[p].data().desc(), " must be [", N, ", ", b[p].size(0), "]");
    ad.push_back(a[p].data());
  }
  const Tensor a_cat = is_row_split(a_cat_in, ad) ? a_cat_in : ops::concat(ad, 0);
  const Tensor zt = ops::matmul(x.data(), a_cat, false, true);  // [N, n r]

  auto shared = std::make_shared<FusedGrad>();
  shared->written.assign(n, false);
  const bool rec = grad_enabled();
  auto down = std::make_shared<LoraDownNode>();
  down->n = static_cast<int64_t>(n);
  down->r = r;
  down->x_shape = x.shape();
  down->shared = shared;
  bool any_a = false;
  for (const Var& v : a) any_a = any_a || v.requires_grad();
  if (rec && any_a) down->x = x.data();
  if (rec && x.requires_grad()) down->a_cat = a_cat;
  std::vector<Var> down_in{x};
  down_in.insert(down_in.end(), a.begin(), a.end());
  const Var z = make_result(zt, down_in, down);

  std::vector<Var> ys;
  for (size_t p = 0; p < n; ++p) {
    auto up = std::make_shared<LoraUpNode>();
    up->p = static_cast<int64_t>(p);
    up->r = r;
    up->n = static_cast<int64_t>(n);
    up->scale = scale;
    up->shared = shared;
    if (rec && b[p].requires_grad()) up->z = zt;
    if (rec && z.requires_grad()) up->b = b[p].data();
    // z_p read in place (leading dimension n r); scale and base ride in the GEMM, as unfused.
    const Tensor zp = zt.slice(1, up->p * r, (up->p + 1) * r);
    Tensor y = base[p].defined()
                   ? ops::matmul_add(zp, b[p].data(), base[p].data(), scale, false, true)
                   : ops::matmul(zp, b[p].data(), false, true, scale);
    ys.push_back(make_result(std::move(y), {z, b[p], base[p]}, std::move(up)));
  }
  return ys;
}

}  // namespace lizard::autograd
