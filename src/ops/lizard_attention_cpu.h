// Private pieces of the CPU Lizard attention (oracle, chunked reference, decode): the gate,
// the feature maps, RoPE and the window branch of one row, in T = float or double.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lizard/ops/lizard_attention_types.h"

namespace lizard::ops::lizard_cpu {

/// log(sigmoid(z)) = min(z, 0) - log1p(exp(-|z|)): never log(sigmoid()) (that is -inf below
/// z ~ -88 in fp32 and loses all digits of gates near 1).
template <class T>
inline T log_sigmoid(T z) {
  return std::min(z, T(0)) - std::log1p(std::exp(-std::abs(z)));
}
/// sigmoid(-z) = d logsigmoid(z) / dz, without overflow for either sign.
template <class T>
inline T sigmoid_neg(T z) {
  if (z >= T(0)) {
    const T e = std::exp(-z);
    return e / (T(1) + e);
  }
  return T(1) / (T(1) + std::exp(z));
}

/// phi(u) for one token: u [F] -> phi [2F] (see FeatureActivation for both variants).
template <class T>
inline void feature_map(FeatureActivation act, const T* u, int64_t F, T* phi) {
  if (act == FeatureActivation::Softmax) {
    T mp = -std::numeric_limits<T>::infinity(), mn = mp;
    for (int64_t i = 0; i < F; ++i) {
      mp = std::max(mp, u[i]);
      mn = std::max(mn, -u[i]);
    }
    T sp = 0, sn = 0;
    for (int64_t i = 0; i < F; ++i) {
      phi[i] = std::exp(u[i] - mp);
      phi[F + i] = std::exp(-u[i] - mn);
      sp += phi[i];
      sn += phi[F + i];
    }
    for (int64_t i = 0; i < F; ++i) {
      phi[i] /= sp;
      phi[F + i] /= sn;
    }
  } else {
    T m = 0;
    for (int64_t i = 0; i < F; ++i) m = std::max(m, std::abs(u[i]));
    for (int64_t i = 0; i < F; ++i) {
      phi[i] = std::exp(u[i] - m);
      phi[F + i] = std::exp(-u[i] - m);
    }
  }
}

/// du = (d phi / du)^T dphi for one token, given u and phi = feature_map(u).
template <class T>
inline void feature_map_backward(FeatureActivation act, const T* u, const T* phi, const T* dphi,
                                 int64_t F, T* du) {
  if (act == FeatureActivation::Softmax) {
    T dp = 0, dn = 0;
    for (int64_t i = 0; i < F; ++i) {
      dp += phi[i] * dphi[i];
      dn += phi[F + i] * dphi[F + i];
    }
    for (int64_t i = 0; i < F; ++i)
      du[i] = phi[i] * (dphi[i] - dp) - phi[F + i] * (dphi[F + i] - dn);
  } else {
    // phi_i = exp(u_i - m), phi_{F+i} = exp(-u_i - m), m = |u_j*| at the arg-max j*.
    T dm = 0;
    int64_t jstar = 0;
    T best = -1;
    for (int64_t i = 0; i < F; ++i) {
      du[i] = phi[i] * dphi[i] - phi[F + i] * dphi[F + i];
      dm -= phi[i] * dphi[i] + phi[F + i] * dphi[F + i];
      if (std::abs(u[i]) > best) {
        best = std::abs(u[i]);
        jstar = i;
      }
    }
    du[jstar] += u[jstar] >= T(0) ? dm : -dm;
  }
}

/// RoPE of one head vector in the rotate_half layout (inverse = rotation by -angle, which is
/// also the backward of the forward rotation).
template <class T>
inline void rope(const T* x, const T* cos, const T* sin, int64_t D, bool inverse, T* y) {
  const int64_t h = D / 2;
  for (int64_t i = 0; i < h; ++i) {
    const T c = cos[i], s = inverse ? -sin[i] : sin[i];
    const T a = x[i], b = x[i + h];
    y[i] = a * c - b * s;
    y[i + h] = b * c + a * s;
  }
}

/// Contiguous buffers of one call in the compute type T.
template <class T>
struct Buffers {
  LizardDims d;
  std::vector<T> q, k, v, x, cos, sin, wq, wk, wg, bg, tau, alpha;
};

template <class T>
inline std::vector<T> to_std(const Tensor& t) {
  std::vector<T> out;
  if (!t.defined()) return out;
  auto v = t.to_vector();
  out.assign(v.begin(), v.end());
  return out;
}

template <class T>
inline Buffers<T> load(const LizardConfig& cfg, const LizardInputs& in, const LizardParams& p) {
  Buffers<T> b;
  b.d = lizard_check_dims(cfg, in, p);
  b.q = to_std<T>(in.q);
  b.k = to_std<T>(in.k);
  b.v = to_std<T>(in.v);
  b.x = to_std<T>(in.x);
  if (cfg.use_window_rope() && b.d.w > 0) {
    b.cos = to_std<T>(in.cos);
    b.sin = to_std<T>(in.sin);
  }
  b.wq = to_std<T>(p.wq);
  b.wk = to_std<T>(p.wk);
  b.wg = to_std<T>(p.w_g);
  b.bg = to_std<T>(p.b_g);
  b.tau = to_std<T>(p.tau);
  b.alpha = to_std<T>(p.alpha);
  return b;
}

/// Gate logits z [B, T, Hg] = x . w_g + b_g and log-gates a = logsigmoid(z).
template <class T>
inline void gates(const Buffers<T>& b, std::vector<T>& z, std::vector<T>& a) {
  const auto& d = b.d;
  z.assign(d.B * d.T * d.Hg, T(0));
  a.assign(z.size(), T(0));
  for (int64_t bt = 0; bt < d.B * d.T; ++bt)
    for (int64_t g = 0; g < d.Hg; ++g) {
      T s = b.bg[g];
      for (int64_t j = 0; j < d.dm; ++j) s += b.x[bt * d.dm + j] * b.wg[g * d.dm + j];
      z[bt * d.Hg + g] = s;
      a[bt * d.Hg + g] = log_sigmoid(s);
    }
}

/// Feature maps of every query and (repeated) key: u [B, T, H, F], phi [B, T, H, 2F].
template <class T>
inline void features(const Buffers<T>& b, FeatureActivation act, std::vector<T>& uq,
                     std::vector<T>& uk, std::vector<T>& pq, std::vector<T>& pk) {
  const auto& d = b.d;
  const int64_t F = d.F, D = d.D, rep = d.H / d.Hkv;
  uq.assign(d.B * d.T * d.H * F, T(0));
  uk.assign(uq.size(), T(0));
  pq.assign(uq.size() * 2, T(0));
  pk.assign(uq.size() * 2, T(0));
  for (int64_t bt = 0; bt < d.B * d.T; ++bt)
    for (int64_t h = 0; h < d.H; ++h) {
      const T* qv = &b.q[(bt * d.H + h) * D];
      const T* kv = &b.k[(bt * d.Hkv + h / rep) * D];
      T* u1 = &uq[(bt * d.H + h) * F];
      T* u2 = &uk[(bt * d.H + h) * F];
      for (int64_t i = 0; i < D; ++i)
        for (int64_t f = 0; f < F; ++f) {
          u1[f] += qv[i] * b.wq[(h * D + i) * F + f];
          u2[f] += kv[i] * b.wk[(h * D + i) * F + f];
        }
      feature_map(act, u1, F, &pq[(bt * d.H + h) * 2 * F]);
      feature_map(act, u2, F, &pk[(bt * d.H + h) * 2 * F]);
    }
}

/// Queries and keys as the window branch sees them ([B, T, H, D] and [B, T, Hkv, D]):
/// rotated by RoPE with window_rope, else copies.
template <class T>
inline void window_qk(const Buffers<T>& b, bool use_rope, std::vector<T>& qw, std::vector<T>& kw) {
  const auto& d = b.d;
  qw = b.q;
  kw = b.k;
  if (!use_rope) return;
  const int64_t hD = d.D / 2;
  for (int64_t bb = 0; bb < d.B; ++bb)
    for (int64_t t = 0; t < d.T; ++t) {
      const T* c = &b.cos[t * hD];
      const T* s = &b.sin[t * hD];
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t o = ((bb * d.T + t) * d.H + h) * d.D;
        rope(&b.q[o], c, s, d.D, false, &qw[o]);
      }
      for (int64_t h = 0; h < d.Hkv; ++h) {
        const int64_t o = ((bb * d.T + t) * d.Hkv + h) * d.D;
        rope(&b.k[o], c, s, d.D, false, &kw[o]);
      }
    }
}

/// The window branch of row (b, t, h): fills p [min(w, t+1)] with the probabilities of keys
/// s = t - n + 1 .. t, ps [m] with those of the sinks, and returns n. Row max over scores and
/// sink logits together, so nothing overflows.
template <class T>
inline int64_t window_probs(const Buffers<T>& b, const std::vector<T>& qw, const std::vector<T>& kw,
                            int64_t bb, int64_t t, int64_t h, std::vector<T>& p, std::vector<T>& ps) {
  const auto& d = b.d;
  const int64_t n = std::min(d.w, t + 1), kvh = h / (d.H / d.Hkv);
  const T scale = T(1) / std::sqrt(T(d.D));
  const T* qv = &qw[((bb * d.T + t) * d.H + h) * d.D];
  const T* tau = d.m ? &b.tau[(d.Ht == 1 ? 0 : h) * d.m] : nullptr;
  p.assign(n, T(0));
  ps.assign(d.m, T(0));
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = t - n + 1 + i;
    const T* kv = &kw[((bb * d.T + s) * d.Hkv + kvh) * d.D];
    T c = 0;
    for (int64_t j = 0; j < d.D; ++j) c += qv[j] * kv[j];
    p[i] = c * scale;
    mx = std::max(mx, p[i]);
  }
  for (int64_t j = 0; j < d.m; ++j) mx = std::max(mx, tau[j]);
  T den = 0;
  for (int64_t i = 0; i < n; ++i) den += (p[i] = std::exp(p[i] - mx));
  for (int64_t j = 0; j < d.m; ++j) den += (ps[j] = std::exp(tau[j] - mx));
  for (auto& e : p) e /= den;
  for (auto& e : ps) e /= den;
  return n;
}


template <class T>
inline Tensor make(const std::vector<T>& v, const Shape& s, DType dt) {
  return Tensor::from_vector(std::vector<double>(v.begin(), v.end()), s, dt);
}

/// Backward of the window branch of row (b, t, h) given its probabilities (window_probs), its
/// output l and the gradient dl: softmax over {keys in window} U {sinks}, sinks carry value 0,
/// so dc_s = p_s (dl . v_s - dl . l) and dtau_j = -p_j (dl . l). Accumulates into dqw, dkw
/// (gradients of the rotated q~, k~), dv, dtau.
template <class T>
inline void window_row_backward(const Buffers<T>& b, const std::vector<T>& qw,
                                const std::vector<T>& kw, int64_t bb, int64_t t, int64_t h,
                                int64_t n, const std::vector<T>& p_w, const std::vector<T>& p_s,
                                const T* l, const T* dl, std::vector<T>& dqw, std::vector<T>& dkw,
                                std::vector<T>& dv, std::vector<T>& dtau) {
  const auto& d = b.d;
  const int64_t D = d.D, Tn = d.T, H = d.H, Hkv = d.Hkv, kvh = h / (H / Hkv);
  const int64_t yo = ((bb * Tn + t) * H + h) * D;
  const T scale = T(1) / std::sqrt(T(D));
  auto V = [&](int64_t s) { return &b.v[((bb * Tn + s) * Hkv + kvh) * D]; };
  T delta = 0;
  for (int64_t j = 0; j < D; ++j) delta += dl[j] * l[j];
  const T* qv = &qw[yo];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = t - n + 1 + i;
    T dp = 0;
    for (int64_t j = 0; j < D; ++j) {
      dp += dl[j] * V(s)[j];
      dv[((bb * Tn + s) * Hkv + kvh) * D + j] += p_w[i] * dl[j];
    }
    const T dc = p_w[i] * (dp - delta) * scale;
    const int64_t ko = ((bb * Tn + s) * Hkv + kvh) * D;
    for (int64_t j = 0; j < D; ++j) {
      dqw[yo + j] += dc * kw[ko + j];
      dkw[ko + j] += dc * qv[j];
    }
  }
  for (int64_t j = 0; j < d.m; ++j) dtau[(d.Ht == 1 ? 0 : h) * d.m + j] -= p_s[j] * delta;
}

/// The branch gradients the oracle and the chunked reference accumulate before finish_grads:
/// dL/dphi_q, dL/dphi_k (like pq, pk), window q and k (like b.q, b.k), v, the cumulative
/// log-gate b_t ([B, T, Hg]), tau, alpha.
template <class T>
struct BranchGrads {
  std::vector<T> dpq, dpk, dqw, dkw, dv, dbcum, dtau;
  T dalpha = 0;
};

/// BranchGrads of zeros for the buffers b and feature maps of n_pq, n_pk values.
template <class T>
inline BranchGrads<T> zero_branch_grads(const Buffers<T>& b, size_t n_pq, size_t n_pk) {
  BranchGrads<T> g;
  g.dpq.assign(n_pq, T(0));
  g.dpk.assign(n_pk, T(0));
  g.dqw.assign(b.q.size(), T(0));
  g.dkw.assign(b.k.size(), T(0));
  g.dv.assign(b.v.size(), T(0));
  g.dbcum.assign(b.d.B * b.d.T * b.d.Hg, T(0));
  g.dtau.assign(b.tau.size(), T(0));
  return g;
}

/// The backward shared by the oracle and the chunked reference once the branch gradients are
/// known: gate (dbcum [B, T, Hg] = dL/db_t -> reverse cumsum -> logsigmoid -> x, w_g, b_g),
/// feature maps (dphi -> u -> q, k, Wq, Wk), RoPE of the window branch; fills `grads`.
template <class T>
inline void finish_grads(const LizardConfig& cfg, const LizardInputs& in, const LizardParams& p,
                         const Buffers<T>& b, const std::vector<T>& z, const std::vector<T>& uq,
                         const std::vector<T>& uk, const std::vector<T>& pq,
                         const std::vector<T>& pk, const std::vector<T>& dpq,
                         const std::vector<T>& dpk, const std::vector<T>& dqw,
                         const std::vector<T>& dkw, const std::vector<T>& dv,
                         const std::vector<T>& dbcum, const std::vector<T>& dtau, T dalpha,
                         LizardGrads* grads) {
  const LizardDims& d = b.d;
  const int64_t B = d.B, Tn = d.T, H = d.H, Hkv = d.Hkv, D = d.D, F = d.F, F2 = 2 * F;
  const int64_t rep = H / Hkv;
  const bool rope_on = cfg.use_window_rope() && d.w > 0;
  // ---- gate: b_t = cumsum a  =>  da_r = sum_{t>=r} db_t; a = logsigmoid(z) ----
  std::vector<T> dx(b.x.size(), T(0)), dwg(b.wg.size(), T(0)), dbg(b.bg.size(), T(0));
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t gh = 0; gh < d.Hg; ++gh) {
      T acc = 0;
      for (int64_t t = Tn - 1; t >= 0; --t) {
        const int64_t o = (bb * Tn + t) * d.Hg + gh;
        acc += dbcum[o];
        const T dzv = acc * sigmoid_neg(z[o]);
        dbg[gh] += dzv;
        for (int64_t j = 0; j < d.dm; ++j) {
          dx[(bb * Tn + t) * d.dm + j] += dzv * b.wg[gh * d.dm + j];
          dwg[gh * d.dm + j] += dzv * b.x[(bb * Tn + t) * d.dm + j];
        }
      }
    }
  // ---- feature maps: u = q W; phi = map(u) ----
  std::vector<T> dq(b.q.size(), T(0)), dk(b.k.size(), T(0)), dwq(b.wq.size(), T(0)),
      dwk(b.wk.size(), T(0)), du(F);
  for (int64_t bt = 0; bt < B * Tn; ++bt)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = bt * H + h, ko = (bt * Hkv + h / rep) * D;
      for (int pass = 0; pass < 2; ++pass) {
        const std::vector<T>& u = pass ? uk : uq;
        const std::vector<T>& ph = pass ? pk : pq;
        const std::vector<T>& dph = pass ? dpk : dpq;
        const std::vector<T>& W = pass ? b.wk : b.wq;
        std::vector<T>& dW = pass ? dwk : dwq;
        const T* xin = pass ? &b.k[ko] : &b.q[o * D];
        T* dxin = pass ? &dk[ko] : &dq[o * D];
        feature_map_backward(cfg.feature_activation, &u[o * F], &ph[o * F2], &dph[o * F2], F,
                             du.data());
        for (int64_t i = 0; i < D; ++i)
          for (int64_t f = 0; f < F; ++f) {
            dxin[i] += W[(h * D + i) * F + f] * du[f];
            dW[(h * D + i) * F + f] += xin[i] * du[f];
          }
      }
    }
  // ---- window branch gradients of q~, k~ back through RoPE ----
  if (d.w > 0) {
    std::vector<T> tmp(D);
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t t = 0; t < Tn; ++t) {
        for (int64_t h = 0; h < H; ++h) {
          const int64_t o = ((bb * Tn + t) * H + h) * D;
          if (rope_on) rope(&dqw[o], &b.cos[t * (D / 2)], &b.sin[t * (D / 2)], D, true, tmp.data());
          for (int64_t j = 0; j < D; ++j) dq[o + j] += rope_on ? tmp[j] : dqw[o + j];
        }
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t o = ((bb * Tn + t) * Hkv + h) * D;
          if (rope_on) rope(&dkw[o], &b.cos[t * (D / 2)], &b.sin[t * (D / 2)], D, true, tmp.data());
          for (int64_t j = 0; j < D; ++j) dk[o + j] += rope_on ? tmp[j] : dkw[o + j];
        }
      }
  }
  const DType dt = in.q.dtype();
  grads->dq = make(dq, in.q.shape(), dt);
  grads->dk = make(dk, in.k.shape(), dt);
  grads->dv = make(dv, in.v.shape(), dt);
  grads->dx = make(dx, in.x.shape(), dt);
  grads->dwq = make(dwq, p.wq.shape(), dt);
  grads->dwk = make(dwk, p.wk.shape(), dt);
  grads->dw_g = make(dwg, p.w_g.shape(), dt);
  grads->db_g = make(dbg, p.b_g.shape(), dt);
  if (d.m > 0) grads->dtau = make(dtau, p.tau.shape(), dt);
  grads->dalpha = make(std::vector<T>{dalpha}, {1}, dt);
}

}  // namespace lizard::ops::lizard_cpu
