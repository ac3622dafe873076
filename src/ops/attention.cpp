#include "lizard/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/flash_attention.h"

namespace lizard::ops {

namespace {

struct Dims {
  int64_t B, T, H, Hkv, D, group;
};

Dims check(const Tensor& q, const Tensor& k, const Tensor& v, int64_t window, const char* op) {
  LZ_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
           ": q, k, v must be [B, T, H, D], got ", q.desc(), ", ", k.desc(), ", ", v.desc());
  LZ_CHECK(k.shape() == v.shape(), op, ": k ", k.desc(), " and v ", v.desc(), " must match");
  Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), 1};
  LZ_CHECK(k.size(0) == d.B && k.size(1) == d.T && k.size(3) == d.D, op, ": k ", k.desc(),
           " does not match q ", q.desc());
  LZ_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, op, ": ", d.H, " query heads are not a multiple of ",
           d.Hkv, " kv heads");
  LZ_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": dtypes of q, k, v differ");
  LZ_CHECK(window >= 0, op, ": window must be >= 0 (0 = full causal), got ", window);
  cpu::check_same_device(op, {&q, &k, &v});
  d.group = d.H / d.Hkv;
  return d;
}

/// First key position visible from query t.
inline int64_t first_key(int64_t t, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
}

DType lse_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

}  // namespace

AttentionOut causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                              int64_t window) {
  const Dims d = check(q, k, v, window, "causal_attention");
  AttentionOut r;
  r.o = Tensor::empty(q.shape(), q.dtype(), q.device());
  if (q.is_cuda()) {
    r.lse = Tensor::empty({d.B, d.H, d.T}, DType::F32, q.device());
    LZ_CUDA_ONLY(cuda::flash_attention_forward(q.contiguous(), k.contiguous(), v.contiguous(),
                                               scale, window, r.o, r.lse, cuda::stream_of(r.o)));
    return r;
  }
  r.lse = Tensor::empty({d.B, d.H, d.T}, lse_dtype(q.dtype()));
  cpu::visit_float(q.dtype(), "causal_attention", [&](auto z) {
    using T = decltype(z);
    const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const T* pq = qc.data<T>();
    const T* pk = kc.data<T>();
    const T* pv = vc.data<T>();
    T* po = r.o.data<T>();
    T* pl = r.lse.data<T>();
    std::vector<double> sc(d.T), acc(d.D);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t hk = h / d.group;
        for (int64_t t = 0; t < d.T; ++t) {
          const T* qr = pq + ((b * d.T + t) * d.H + h) * d.D;
          const int64_t s0 = first_key(t, window);
          double m = -std::numeric_limits<double>::infinity();
          for (int64_t s = s0; s <= t; ++s) {
            const T* kr = pk + ((b * d.T + s) * d.Hkv + hk) * d.D;
            double dot = 0;
            for (int64_t i = 0; i < d.D; ++i) dot += static_cast<double>(qr[i]) * kr[i];
            sc[s] = scale * dot;
            m = std::max(m, sc[s]);
          }
          double sum = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t s = s0; s <= t; ++s) {
            const double p = std::exp(sc[s] - m);
            sum += p;
            const T* vr = pv + ((b * d.T + s) * d.Hkv + hk) * d.D;
            for (int64_t i = 0; i < d.D; ++i) acc[i] += p * vr[i];
          }
          T* orow = po + ((b * d.T + t) * d.H + h) * d.D;
          for (int64_t i = 0; i < d.D; ++i) orow[i] = static_cast<T>(acc[i] / sum);
          pl[(b * d.H + h) * d.T + t] = static_cast<T>(m + std::log(sum));
        }
      }
  });
  return r;
}

AttentionGrads causal_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& o, const Tensor& lse,
                                         double scale, int64_t window) {
  const Dims d = check(q, k, v, window, "causal_attention_backward");
  LZ_CHECK(dout.shape() == q.shape() && o.shape() == q.shape(),
           "causal_attention_backward: dout ", dout.desc(), " and o ", o.desc(), " for q ",
           q.desc());
  LZ_CHECK(lse.shape() == (Shape{d.B, d.H, d.T}), "causal_attention_backward: lse ", lse.desc(),
           " for q ", q.desc());
  AttentionGrads g{Tensor::empty(q.shape(), q.dtype(), q.device()),
                   Tensor::empty(k.shape(), k.dtype(), k.device()),
                   Tensor::empty(v.shape(), v.dtype(), v.device())};
  if (q.is_cuda()) {
    LZ_CUDA_ONLY(cuda::flash_attention_backward(dout.contiguous(), q.contiguous(), k.contiguous(),
                                                v.contiguous(), o.contiguous(), lse, scale, window,
                                                g.dq, g.dk, g.dv, cuda::stream_of(g.dq)));
    return g;
  }
  cpu::visit_float(q.dtype(), "causal_attention_backward", [&](auto z) {
    using T = decltype(z);
    const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const Tensor oc = o.contiguous(), gc = dout.contiguous();
    const Tensor lc = lse.to(DType::F64).contiguous();
    const T* pq = qc.data<T>();
    const T* pk = kc.data<T>();
    const T* pv = vc.data<T>();
    const T* po = oc.data<T>();
    const T* pg = gc.data<T>();
    const double* pl = lc.data<double>();
    // dk, dv gather from every query head of their group: accumulate in double, round once.
    std::vector<double> dk(k.numel(), 0.0), dv(v.numel(), 0.0), dq(d.D);
    T* pdq = g.dq.data<T>();
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t hk = h / d.group;
        for (int64_t t = 0; t < d.T; ++t) {
          const int64_t qo = ((b * d.T + t) * d.H + h) * d.D;
          const T* qr = pq + qo;
          const T* gr = pg + qo;
          double delta = 0;  // dout_t . o_t = sum_s p_ts dp_ts
          for (int64_t i = 0; i < d.D; ++i) delta += static_cast<double>(gr[i]) * po[qo + i];
          const double l = pl[(b * d.H + h) * d.T + t];
          std::fill(dq.begin(), dq.end(), 0.0);
          for (int64_t s = first_key(t, window); s <= t; ++s) {
            const int64_t ko = ((b * d.T + s) * d.Hkv + hk) * d.D;
            double dot = 0, dp = 0;
            for (int64_t i = 0; i < d.D; ++i) {
              dot += static_cast<double>(qr[i]) * pk[ko + i];
              dp += static_cast<double>(gr[i]) * pv[ko + i];
            }
            const double p = std::exp(scale * dot - l);
            const double ds = p * (dp - delta) * scale;
            for (int64_t i = 0; i < d.D; ++i) {
              dq[i] += ds * pk[ko + i];
              dk[ko + i] += ds * qr[i];
              dv[ko + i] += p * gr[i];
            }
          }
          for (int64_t i = 0; i < d.D; ++i) pdq[qo + i] = static_cast<T>(dq[i]);
        }
      }
    T* pdk = g.dk.data<T>();
    T* pdv = g.dv.data<T>();
    for (size_t i = 0; i < dk.size(); ++i) {
      pdk[i] = static_cast<T>(dk[i]);
      pdv[i] = static_cast<T>(dv[i]);
    }
  });
  return g;
}

}  // namespace lizard::ops
