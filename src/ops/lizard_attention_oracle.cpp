// Naive O(T^2) Lizard attention on the CPU: the oracle (see lizard_attention_oracle.h).
// One routine computes the forward and, when dy is given, the backward, so the two can never
// disagree on the forward they differentiate.
#include "lizard/ops/lizard_attention_oracle.h"

#include "cpu_util.h"
#include "lizard_attention_cpu.h"

namespace lizard::ops {
namespace {

using namespace lizard_cpu;

template <class T>
void run(const LizardConfig& cfg, const LizardInputs& in, const LizardParams& p, const Tensor* dy_t,
         Tensor* y_out, LizardGrads* grads) {
  const Buffers<T> b = load<T>(cfg, in, p);
  const LizardDims& d = b.d;
  const int64_t B = d.B, Tn = d.T, H = d.H, Hkv = d.Hkv, D = d.D, F = d.F, F2 = 2 * F;
  const int64_t rep = H / Hkv;
  const bool rope_on = cfg.use_window_rope() && d.w > 0;
  // Without a window branch y = g: alpha (and the convex scaling) has nothing to weigh.
  const bool convex = cfg.combine == Combine::Convex && d.w > 0;
  const T alpha = b.alpha[0], A = convex ? std::abs(alpha) : alpha;
  const T eps = T(cfg.eps);

  std::vector<T> z, a, uq, uk, pq, pk, qw, kw;
  gates(b, z, a);
  features(b, cfg.feature_activation, uq, uk, pq, pk);
  if (d.w > 0) window_qk(b, rope_on, qw, kw);

  const bool bwd = dy_t != nullptr;
  std::vector<T> dyv = bwd ? to_std<T>(*dy_t) : std::vector<T>{};
  std::vector<T> y(B * Tn * H * D, T(0));
  // Gradient buffers (used only in backward).
  BranchGrads<T> gr;
  if (bwd) gr = zero_branch_grads(b, pq.size(), pk.size());

  std::vector<T> bc(Tn), num(D), M(D), g(D), l(D), dg(D), dl(D), p_w, p_s;
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t gh = d.Hg == 1 ? 0 : h, kvh = h / rep;
      T acc = 0;
      for (int64_t t = 0; t < Tn; ++t) bc[t] = (acc += a[(bb * Tn + t) * d.Hg + gh]);
      auto PQ = [&](int64_t t) { return &pq[((bb * Tn + t) * H + h) * F2]; };
      auto PK = [&](int64_t s) { return &pk[((bb * Tn + s) * H + h) * F2]; };
      auto V = [&](int64_t s) { return &b.v[((bb * Tn + s) * Hkv + kvh) * D]; };
      for (int64_t t = 0; t < Tn; ++t) {
        // ---- global branch ----
        // M = sum_s att_ts (v_s - v_t) = num - den v_t without the self term (for the backward)
        std::fill(num.begin(), num.end(), T(0));
        std::fill(M.begin(), M.end(), T(0));
        T den = 0;
        for (int64_t s = 0; s <= t; ++s) {
          T kk = 0;
          for (int64_t f = 0; f < F2; ++f) kk += PQ(t)[f] * PK(s)[f];
          const T att = std::exp(bc[t] - bc[s]) * kk;
          den += att;
          for (int64_t j = 0; j < D; ++j) {
            num[j] += att * V(s)[j];
            M[j] += att * (V(s)[j] - V(t)[j]);
          }
        }
        const bool clamped = den < eps;
        const T den_c = clamped ? eps : den;
        for (int64_t j = 0; j < D; ++j) g[j] = num[j] / den_c;
        // ---- window branch ----
        std::fill(l.begin(), l.end(), T(0));
        int64_t n = 0;
        if (d.w > 0) {
          n = window_probs(b, qw, kw, bb, t, h, p_w, p_s);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < D; ++j) l[j] += p_w[i] * V(t - n + 1 + i)[j];
        }
        // ---- combine ----
        const int64_t yo = ((bb * Tn + t) * H + h) * D;
        for (int64_t j = 0; j < D; ++j)
          y[yo + j] = convex ? (g[j] + A * l[j]) / (T(1) + A) : g[j] + alpha * l[j];
        if (!bwd) continue;

        // ================= backward of row (b, t, h) =================
        const T* dyr = &dyv[yo];
        T dot_l = 0, dot_lg = 0;
        for (int64_t j = 0; j < D; ++j) {
          dg[j] = convex ? dyr[j] / (T(1) + A) : dyr[j];
          dl[j] = convex ? A * dyr[j] / (T(1) + A) : alpha * dyr[j];
          dot_l += dyr[j] * l[j];
          dot_lg += dyr[j] * (l[j] - g[j]);
        }
        if (d.w > 0)
          gr.dalpha += convex ? (alpha >= 0 ? T(1) : T(-1)) * dot_lg / ((T(1) + A) * (T(1) + A)) : dot_l;
        // global: g = num / den_c; dnum = dg / den_c; dden = -(dg.g) / den_c unless clamped, so
        // datt_ts = dg.(v_s - g) / den_c = dg.(v_s - v_t) / den_c + c_t with the self part
        // c_t = dg.(v_t - g) / den = -dg.M / den^2 (clamped: dg.v_t / eps). Written this way,
        // not as dg.v_s / den + dden: when the token attends mostly to itself (T = 1, gates
        // near 0) the true datt is tiny and that form leaves only rounding noise.
        T c_self = 0;
        for (int64_t j = 0; j < D; ++j)
          c_self += clamped ? dg[j] * V(t)[j] / den_c : -dg[j] * M[j] / (den_c * den_c);
        for (int64_t s = 0; s <= t; ++s) {
          T kk = 0;
          for (int64_t f = 0; f < F2; ++f) kk += PQ(t)[f] * PK(s)[f];
          const T e = std::exp(bc[t] - bc[s]), att = e * kk;
          T datt = c_self;
          for (int64_t j = 0; j < D; ++j) {
            datt += dg[j] / den_c * (V(s)[j] - V(t)[j]);
            gr.dv[((bb * Tn + s) * Hkv + kvh) * D + j] += att * dg[j] / den_c;
          }
          const T dkk = datt * e;
          T* dq_ = &gr.dpq[((bb * Tn + t) * H + h) * F2];
          T* dk_ = &gr.dpk[((bb * Tn + s) * H + h) * F2];
          for (int64_t f = 0; f < F2; ++f) {
            dq_[f] += dkk * PK(s)[f];
            dk_[f] += dkk * PQ(t)[f];
          }
          // att depends on b_t - b_s (not at all for s = t: adding and removing it is noise)
          if (s < t) {
            gr.dbcum[(bb * Tn + t) * d.Hg + gh] += datt * att;
            gr.dbcum[(bb * Tn + s) * d.Hg + gh] -= datt * att;
          }
        }
        if (d.w > 0) window_row_backward(b, qw, kw, bb, t, h, n, p_w, p_s, l.data(), dl.data(), gr.dqw, gr.dkw, gr.dv, gr.dtau);
      }
    }
  if (y_out) *y_out = make(y, {B, Tn, H, D}, in.q.dtype());
  if (!bwd) return;

  finish_grads(cfg, in, p, b, z, uq, uk, pq, pk, gr.dpq, gr.dpk, gr.dqw, gr.dkw, gr.dv, gr.dbcum,
               gr.dtau, gr.dalpha, grads);
}

}  // namespace

Tensor lizard_oracle_forward(const LizardConfig& cfg, const LizardInputs& in,
                             const LizardParams& p) {
  Tensor y;
  cpu::visit_float(in.q.dtype(), "lizard_oracle_forward", [&](auto z) {
    run<decltype(z)>(cfg, in, p, nullptr, &y, nullptr);
  });
  return y;
}

LizardGrads lizard_oracle_backward(const LizardConfig& cfg, const LizardInputs& in,
                                   const LizardParams& p, const Tensor& dy) {
  LZ_INPUT_CHECK(dy.defined() && dy.shape() == in.q.shape(), "lizard_oracle_backward: dy must be ",
                 shape_str(in.q.shape()));
  LizardGrads g;
  cpu::visit_float(in.q.dtype(), "lizard_oracle_backward", [&](auto z) {
    run<decltype(z)>(cfg, in, p, &dy, nullptr, &g);
  });
  return g;
}

}  // namespace lizard::ops
