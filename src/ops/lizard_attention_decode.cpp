// Recurrent decode of Lizard attention (DESIGN.md "Decode"): per head an f32 state [S | z]
// (2F x (D+1)) decayed by the gate and a ring buffer of the last w keys/values; constant
// memory per token, and equal to the parallel form at every position.
#include "lizard/ops/lizard_attention.h"
#include "lizard/ops/lizard_attention_chunked.h"
#include "lizard_attention_cpu.h"

namespace lizard::ops {

using namespace lizard_cpu;

LizardDecodeState lizard_decode_init(const LizardConfig& cfg, int64_t B, int64_t H, int64_t Hkv,
                                     int64_t D) {
  cfg.validate();
  LizardDecodeState s;
  s.S = Tensor::zeros({B, H, 2 * cfg.feature_dim, D + 1}, DType::F32);
  const int64_t w = std::max<int64_t>(cfg.window, 1);
  s.k_ring = Tensor::zeros({B, w, Hkv, D}, DType::F32);
  s.v_ring = Tensor::zeros({B, w, Hkv, D}, DType::F32);
  s.pos = 0;
  return s;
}

LizardDecodeState lizard_prefill(const LizardConfig& cfg, const LizardInputs& in_any,
                                 const LizardParams& p_any, Tensor* y) {
  // The prefill runs where its inputs are; the state lives on the CPU (decode is CPU-side).
  LizardInputs in = in_any;
  LizardParams p = p_any;
  const bool on_gpu = in.q.is_cuda();
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.x, &in.cos, &in.sin})
    if (t->defined()) *t = t->to(Device::cpu(), DType::F32);
  for (Tensor* t : {&p.wq, &p.wk, &p.w_g, &p.b_g, &p.tau, &p.alpha})
    if (t->defined()) *t = t->to(Device::cpu(), DType::F32);
  const LizardDims d = lizard_check_dims(cfg, in, p);
  LizardDecodeState s = lizard_decode_init(cfg, d.B, d.H, d.Hkv, d.D);
  Tensor state;
  Tensor out = lizard_chunked_forward(cfg, in, p, &state);
  if (y) *y = on_gpu ? out.to(in_any.q.device(), in_any.q.dtype()) : out.to(in_any.q.dtype());
  s.S = state;
  if (d.w > 0) {
    Buffers<float> b = load<float>(cfg, in, p);
    std::vector<float> qw, kw;
    window_qk(b, cfg.use_window_rope(), qw, kw);
    float* kr = s.k_ring.data<float>();
    float* vr = s.v_ring.data<float>();
    for (int64_t bb = 0; bb < d.B; ++bb)
      for (int64_t t = std::max<int64_t>(0, d.T - d.w); t < d.T; ++t)
        for (int64_t i = 0; i < d.Hkv * d.D; ++i) {
          const int64_t src = (bb * d.T + t) * d.Hkv * d.D + i;
          const int64_t dst = (bb * d.w + t % d.w) * d.Hkv * d.D + i;
          kr[dst] = kw[src];
          vr[dst] = b.v[src];
        }
  }
  s.pos = d.T;
  return s;
}

Tensor lizard_decode_step(const LizardConfig& cfg, LizardDecodeState& st, const LizardInputs& in_any,
                          const LizardParams& p_any) {
  LizardInputs in = in_any;
  LizardParams p = p_any;
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.x, &in.cos, &in.sin})
    if (t->defined()) *t = t->to(Device::cpu(), DType::F32);
  for (Tensor* t : {&p.wq, &p.wk, &p.w_g, &p.b_g, &p.tau, &p.alpha})
    if (t->defined()) *t = t->to(Device::cpu(), DType::F32);
  LZ_INPUT_CHECK(in.q.dim() == 4 && in.q.size(1) == 1, "lizard_decode_step: q must be [B, 1, H, D]");
  const Buffers<float> b = load<float>(cfg, in, p);
  const LizardDims& d = b.d;
  const int64_t B = d.B, H = d.H, Hkv = d.Hkv, D = d.D, F2 = 2 * d.F, D1 = D + 1, w = d.w;
  LZ_INPUT_CHECK(st.S.defined() && st.S.shape() == Shape({B, H, F2, D1}),
                 "lizard_decode_step: state S must be ", shape_str({B, H, F2, D1}));
  std::vector<float> z, a, uq, uk, pq, pk, qw, kw;
  gates(b, z, a);
  features(b, cfg.feature_activation, uq, uk, pq, pk);
  const bool convex = cfg.combine == Combine::Convex && w > 0;
  const float alpha = b.alpha[0], A = convex ? std::abs(alpha) : alpha;
  float* S = st.S.data<float>();
  float* kr = st.k_ring.data<float>();
  float* vr = st.v_ring.data<float>();
  const int64_t slot = w > 0 ? st.pos % w : 0;
  if (w > 0) {
    window_qk(b, cfg.use_window_rope(), qw, kw);  // cos/sin row of position pos
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t i = 0; i < Hkv * D; ++i) {
        kr[(bb * w + slot) * Hkv * D + i] = kw[bb * Hkv * D + i];
        vr[(bb * w + slot) * Hkv * D + i] = b.v[bb * Hkv * D + i];
      }
  }
  const int64_t n = std::min(w, st.pos + 1);
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<float> y(B * H * D), num(D1), sc(std::max<int64_t>(n, 1)), l(D);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / Hkv), gh = d.Hg == 1 ? 0 : h;
      const float gam = std::exp(a[bb * d.Hg + gh]);
      float* Sh = &S[(bb * H + h) * F2 * D1];
      const float* phk = &pk[(bb * H + h) * F2];
      const float* phq = &pq[(bb * H + h) * F2];
      const float* vv = &b.v[(bb * Hkv + kvh) * D];
      for (int64_t f = 0; f < F2; ++f)
        for (int64_t j = 0; j < D1; ++j)
          Sh[f * D1 + j] = gam * Sh[f * D1 + j] + phk[f] * (j < D ? vv[j] : 1.0f);
      std::fill(num.begin(), num.end(), 0.0f);
      for (int64_t f = 0; f < F2; ++f)
        for (int64_t j = 0; j < D1; ++j) num[j] += phq[f] * Sh[f * D1 + j];
      const float den = std::max(num[D], float(cfg.eps));
      std::fill(l.begin(), l.end(), 0.0f);
      if (w > 0) {
        const float* qv = &qw[(bb * H + h) * D];
        const float* tau = d.m ? &b.tau[(d.Ht == 1 ? 0 : h) * d.m] : nullptr;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < n; ++i) {
          const float* kk = &kr[((bb * w + (st.pos - i) % w) * Hkv + kvh) * D];
          float c = 0;
          for (int64_t j = 0; j < D; ++j) c += qv[j] * kk[j];
          mx = std::max(mx, sc[i] = c * scale);
        }
        for (int64_t j = 0; j < d.m; ++j) mx = std::max(mx, tau[j]);
        float wden = 0;
        for (int64_t j = 0; j < d.m; ++j) wden += std::exp(tau[j] - mx);
        for (int64_t i = 0; i < n; ++i) {
          const float e = std::exp(sc[i] - mx);
          wden += e;
          const float* vv2 = &vr[((bb * w + (st.pos - i) % w) * Hkv + kvh) * D];
          for (int64_t j = 0; j < D; ++j) l[j] += e * vv2[j];
        }
        for (auto& e : l) e /= wden;
      }
      for (int64_t j = 0; j < D; ++j) {
        const float g = num[j] / den;
        y[(bb * H + h) * D + j] =
            convex ? (g + A * l[j]) / (1 + A) : (w > 0 ? g + alpha * l[j] : g);
      }
    }
  ++st.pos;
  Tensor out = make(y, {B, 1, H, D}, DType::F32);
  return out.to(in_any.q.device(), in_any.q.dtype());
}

}  // namespace lizard::ops
