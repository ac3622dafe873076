// Chunked Lizard attention on the CPU (see lizard_attention_chunked.h): the loop structure
// of the CUDA kernels, so that their algorithm is proven here against the oracle.
#include "lizard/ops/lizard_attention_chunked.h"

#include "cpu_util.h"
#include "lizard_attention_cpu.h"

namespace lizard::ops {
namespace {

using namespace lizard_cpu;

template <class T>
void run(const LizardConfig& cfg, const LizardInputs& in, const LizardParams& p, const Tensor* dy_t,
         Tensor* y_out, Tensor* state_out, LizardGrads* grads) {
  const Buffers<T> b = load<T>(cfg, in, p);
  const LizardDims& d = b.d;
  const int64_t B = d.B, Tn = d.T, H = d.H, Hkv = d.Hkv, D = d.D, F2 = 2 * d.F, D1 = D + 1;
  const int64_t rep = H / Hkv, C = cfg.chunk, NC = (Tn + C - 1) / C;
  const bool rope_on = cfg.use_window_rope() && d.w > 0;
  const bool convex = cfg.combine == Combine::Convex && d.w > 0;
  const T alpha = b.alpha[0], A = convex ? std::abs(alpha) : alpha;
  const T eps = T(cfg.eps);
  const bool bwd = dy_t != nullptr;

  std::vector<T> z, a, uq, uk, pq, pk, qw, kw;
  gates(b, z, a);
  features(b, cfg.feature_activation, uq, uk, pq, pk);
  if (d.w > 0) window_qk(b, rope_on, qw, kw);
  std::vector<T> dyv = bwd ? to_std<T>(*dy_t) : std::vector<T>{};

  std::vector<T> y(B * Tn * H * D, T(0));
  if (state_out) *state_out = Tensor::zeros({B, H, F2, D1}, in.q.dtype());
  BranchGrads<T> gr;
  if (bwd) gr = zero_branch_grads(b, pq.size(), pk.size());
  std::vector<T> S(F2 * D1), dS(F2 * D1), bl(Tn), O(D1), P(C * C), l(D), dl(D), p_w, p_s;
  std::vector<T> states;   // [NC, 2F, D+1]: S before each chunk (kept for the backward sweep)
  std::vector<T> dO;       // [T, D+1] = [dg/den, dden]
  std::vector<T> cself;    // [T] c_t = dL/datt_tt = dg.(v_t - g_t) / den, without cancellation
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t gh = d.Hg == 1 ? 0 : h, kvh = h / rep;
      auto PQ = [&](int64_t t) { return &pq[((bb * Tn + t) * H + h) * F2]; };
      auto PK = [&](int64_t s) { return &pk[((bb * Tn + s) * H + h) * F2]; };
      // V'_s = [v_s | 1]
      auto Vp = [&](int64_t s, int64_t j) {
        return j < D ? b.v[((bb * Tn + s) * Hkv + kvh) * D + j] : T(1);
      };
      for (int64_t c = 0; c < NC; ++c) {  // chunk-local inclusive cumulative log-gate
        T acc = 0;
        for (int64_t t = c * C; t < std::min(Tn, (c + 1) * C); ++t)
          bl[t] = (acc += a[(bb * Tn + t) * d.Hg + gh]);
      }
      std::fill(S.begin(), S.end(), T(0));
      if (bwd) {
        states.assign(NC * F2 * D1, T(0));
        dO.assign(Tn * D1, T(0));
        cself.assign(Tn, T(0));
      }
      for (int64_t c = 0; c < NC; ++c) {
        const int64_t t0 = c * C, t1 = std::min(Tn, t0 + C), n = t1 - t0;
        if (bwd) std::copy(S.begin(), S.end(), states.begin() + c * F2 * D1);
        // P = (phi_q phi_k^T) * exp(bl_t - bl_s) on the causal tile
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j <= i; ++j) {
            T kk = 0;
            for (int64_t f = 0; f < F2; ++f) kk += PQ(t0 + i)[f] * PK(t0 + j)[f];
            P[i * C + j] = kk * std::exp(bl[t0 + i] - bl[t0 + j]);
          }
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = t0 + i;
          // O' = [M | den]: den = exp(bl_t) phi_q z + P 1 and, instead of the numerator
          // exp(bl_t) phi_q S + P V, M = num - den v_t = exp(bl_t) (phi_q S - (phi_q z) v_t) +
          // sum_s P_ts (v_s - v_t): the self term drops out exactly, so g = v_t + M / den keeps
          // its digits when the token attends mostly to itself and the backward's c_t is exact.
          const T et = std::exp(bl[t]);
          T qz = 0;
          for (int64_t f = 0; f < F2; ++f) qz += PQ(t)[f] * S[f * D1 + D];
          for (int64_t j = 0; j < D1; ++j) {
            const T vt = j < D ? Vp(t, j) : T(0);
            T s = 0;
            for (int64_t f = 0; f < F2; ++f) s += PQ(t)[f] * S[f * D1 + j];
            s = et * (j < D ? s - qz * vt : s);
            for (int64_t r = 0; r <= i; ++r) s += P[i * C + r] * (Vp(t0 + r, j) - vt);
            O[j] = s;
          }
          const bool clamped = O[D] < eps;
          const T den = clamped ? eps : O[D];
          // g_j = num_j / max(den, eps)
          auto gval = [&](int64_t j) {
            return clamped ? (O[j] + O[D] * Vp(t, j)) / eps : Vp(t, j) + O[j] / den;
          };
          int64_t nw = 0;
          std::fill(l.begin(), l.end(), T(0));
          if (d.w > 0) {
            nw = window_probs(b, qw, kw, bb, t, h, p_w, p_s);
            for (int64_t r = 0; r < nw; ++r)
              for (int64_t j = 0; j < D; ++j) l[j] += p_w[r] * Vp(t - nw + 1 + r, j);
          }
          const int64_t yo = ((bb * Tn + t) * H + h) * D;
          for (int64_t j = 0; j < D; ++j) {
            const T g = gval(j);
            y[yo + j] = convex ? (g + A * l[j]) / (T(1) + A) : (d.w > 0 ? g + alpha * l[j] : g);
          }
          if (!bwd) continue;
          T dgg = 0, dot = 0, cs = 0;
          for (int64_t j = 0; j < D; ++j) {
            const T dyj = dyv[yo + j], g = gval(j);
            const T dg = convex ? dyj / (T(1) + A) : dyj;
            dl[j] = convex ? A * dyj / (T(1) + A) : alpha * dyj;
            dot += convex ? dyj * (l[j] - g) : dyj * l[j];
            dgg += dg * g;
            // c_t = dg.(v_t - g_t) / den = -dg.M / den^2 (clamped: dden = 0, c_t = dg.v_t / eps)
            cs += clamped ? dg * Vp(t, j) / den : -dg * O[j] / (den * den);
            dO[t * D1 + j] = dg / den;
          }
          dO[t * D1 + D] = clamped ? T(0) : -dgg / den;
          cself[t] = cs;
          if (d.w > 0) {
            gr.dalpha += convex ? (alpha >= 0 ? T(1) : T(-1)) * dot / ((T(1) + A) * (T(1) + A)) : dot;
            window_row_backward(b, qw, kw, bb, t, h, nw, p_w, p_s, l.data(), dl.data(), gr.dqw, gr.dkw,
                                gr.dv, gr.dtau);
          }
        }
        // carry: [S|z] <- exp(bl_end) [S|z] + (phi_k exp(bl_end - bl_s))^T [V|1]
        const T bend = bl[t1 - 1], eend = std::exp(bend);
        for (auto& e : S) e *= eend;
        for (int64_t r = 0; r < n; ++r) {
          const T f_s = std::exp(bend - bl[t0 + r]);
          for (int64_t f = 0; f < F2; ++f) {
            const T kf = PK(t0 + r)[f] * f_s;
            for (int64_t j = 0; j < D1; ++j) S[f * D1 + j] += kf * Vp(t0 + r, j);
          }
        }
      }
      if (state_out) {
        T* so = state_out->data<T>() + (bb * H + h) * F2 * D1;
        std::copy(S.begin(), S.end(), so);
      }
      if (!bwd) continue;

      // ---- reverse sweep over chunks ----
      std::fill(dS.begin(), dS.end(), T(0));
      for (int64_t c = NC - 1; c >= 0; --c) {
        const int64_t t0 = c * C, t1 = std::min(Tn, t0 + C), n = t1 - t0;
        const T* Sp = &states[c * F2 * D1];
        const T bend = bl[t1 - 1], eend = std::exp(bend);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = t0 + i;
          T* dq_ = &gr.dpq[((bb * Tn + t) * H + h) * F2];
          const T et = std::exp(bl[t]);
          T& dbt = gr.dbcum[(bb * Tn + t) * d.Hg + gh];
          // inter-chunk: exp(bl_t) S_prev dO'_t; the gate gets phi_q . that (b_t - b_s, s < t0)
          for (int64_t f = 0; f < F2; ++f) {
            T s = 0;
            for (int64_t j = 0; j < D1; ++j) s += Sp[f * D1 + j] * dO[t * D1 + j];
            dq_[f] += et * s;
            dbt += et * s * PQ(t)[f];
          }
          // intra-chunk: dA_ts = dO'_t . [v_s - v_t | 0] + c_t (= dO'_t . [v_s | 1], see cself)
          for (int64_t r = 0; r <= i; ++r) {
            const int64_t s = t0 + r;
            T dA = cself[t];
            for (int64_t j = 0; j < D; ++j) dA += dO[t * D1 + j] * (Vp(s, j) - Vp(t, j));
            const T e = std::exp(bl[t] - bl[s]);
            T kk = 0;
            for (int64_t f = 0; f < F2; ++f) kk += PQ(t)[f] * PK(s)[f];
            // the gate: att_ts depends on b_t - b_s, the diagonal not at all
            if (r < i) {
              dbt += kk * e * dA;
              gr.dbcum[(bb * Tn + s) * d.Hg + gh] -= kk * e * dA;
            }
            T* dk_ = &gr.dpk[((bb * Tn + s) * H + h) * F2];
            for (int64_t f = 0; f < F2; ++f) {
              dq_[f] += dA * e * PK(s)[f];
              dk_[f] += dA * e * PQ(t)[f];
            }
            for (int64_t j = 0; j < D; ++j)
              gr.dv[((bb * Tn + s) * Hkv + kvh) * D + j] += kk * e * dO[t * D1 + j];
          }
        }
        // from later chunks: exp(bl_end - bl_s) dS V'_s and (phi_k_s exp(..))^T dS
        for (int64_t r = 0; r < n; ++r) {
          const int64_t s = t0 + r;
          const T f_s = std::exp(bend - bl[s]);
          T* dk_ = &gr.dpk[((bb * Tn + s) * H + h) * F2];
          for (int64_t f = 0; f < F2; ++f) {
            T acc = 0;
            for (int64_t j = 0; j < D1; ++j) acc += dS[f * D1 + j] * Vp(s, j);
            dk_[f] += f_s * acc;
            gr.dbcum[(bb * Tn + s) * d.Hg + gh] -= f_s * acc * PK(s)[f];  // key of later queries
          }
          for (int64_t j = 0; j < D; ++j) {
            T acc = 0;
            for (int64_t f = 0; f < F2; ++f) acc += PK(s)[f] * dS[f * D1 + j];
            gr.dv[((bb * Tn + s) * Hkv + kvh) * D + j] += f_s * acc;
          }
        }
        // dS_prev = exp(bl_end) dS + sum_t exp(bl_t) phi_q_t dO'_t^T
        for (auto& e : dS) e *= eend;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = t0 + i;
          const T et = std::exp(bl[t]);
          for (int64_t f = 0; f < F2; ++f)
            for (int64_t j = 0; j < D1; ++j) dS[f * D1 + j] += et * PQ(t)[f] * dO[t * D1 + j];
        }
      }
      // The gate gradient dbcum was added pair by pair above. Not as phi_q . dphi_q -
      // phi_k . dphi_k: both contain the self pair (t, t), which does not depend on the gate,
      // and their difference is rounding noise when that pair dominates (T = 1, gates near 0).
    }
  if (y_out) *y_out = make(y, {B, Tn, H, D}, in.q.dtype());
  if (!bwd) return;
  finish_grads(cfg, in, p, b, z, uq, uk, pq, pk, gr.dpq, gr.dpk, gr.dqw, gr.dkw, gr.dv, gr.dbcum,
               gr.dtau, gr.dalpha, grads);
}

}  // namespace

Tensor lizard_chunked_forward(const LizardConfig& cfg, const LizardInputs& in,
                              const LizardParams& p, Tensor* final_state) {
  Tensor y;
  cpu::visit_float(in.q.dtype(), "lizard_chunked_forward", [&](auto z) {
    run<decltype(z)>(cfg, in, p, nullptr, &y, final_state, nullptr);
  });
  return y;
}

LizardGrads lizard_chunked_backward(const LizardConfig& cfg, const LizardInputs& in,
                                    const LizardParams& p, const Tensor& dy) {
  LZ_INPUT_CHECK(dy.defined() && dy.shape() == in.q.shape(),
                 "lizard_chunked_backward: dy must be ", shape_str(in.q.shape()));
  LizardGrads g;
  cpu::visit_float(in.q.dtype(), "lizard_chunked_backward", [&](auto z) {
    run<decltype(z)>(cfg, in, p, &dy, nullptr, nullptr, &g);
  });
  return g;
}

}  // namespace lizard::ops
