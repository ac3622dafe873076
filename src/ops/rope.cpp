#include "lizard/ops/rope.h"

#include <cmath>

#include "cpu_util.h"
#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/rope.h"

namespace lizard::ops {

std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const nn::RopeScaling& scaling) {
  LZ_INPUT_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and positive, got ",
                 head_dim);
  LZ_INPUT_CHECK(theta > 0, "rope: rope_theta must be positive, got ", theta);
  const int64_t half = head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  if (scaling.type == "default") return inv;
  LZ_INPUT_CHECK(scaling.type == "llama3", "rope_scaling: rope_type '", scaling.type,
                 "' is not supported (expected 'default' or 'llama3')");
  LZ_INPUT_CHECK(scaling.factor > 0, "rope_scaling.factor must be positive, got ", scaling.factor);
  LZ_INPUT_CHECK(scaling.high_freq_factor > scaling.low_freq_factor,
                 "rope_scaling: high_freq_factor (", scaling.high_freq_factor,
                 ") must exceed low_freq_factor (", scaling.low_freq_factor, ")");
  const double old_len = static_cast<double>(scaling.original_max_position_embeddings);
  const double low_wavelen = old_len / scaling.low_freq_factor;
  const double high_wavelen = old_len / scaling.high_freq_factor;
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < half; ++i) {
    const double wavelen = 2 * pi / inv[i];
    if (wavelen < high_wavelen) continue;  // high frequencies: unchanged
    if (wavelen > low_wavelen) {           // low frequencies: interpolated by `factor`
      inv[i] /= scaling.factor;
      continue;
    }
    // In between: a smooth blend of the two, linear in old_len / wavelen.
    const double smooth = (old_len / wavelen - scaling.low_freq_factor) /
                          (scaling.high_freq_factor - scaling.low_freq_factor);
    inv[i] = (1 - smooth) * inv[i] / scaling.factor + smooth * inv[i];
  }
  return inv;
}

RopeTable rope_table(int64_t head_dim, double theta, const nn::RopeScaling& scaling,
                     const Tensor& positions, Device device) {
  LZ_CHECK(positions.dim() == 1 && (positions.dtype() == DType::I32 ||
                                    positions.dtype() == DType::I64),
           "rope_table: positions must be i32/i64 [T], got ", positions.desc());
  const std::vector<double> inv = rope_inv_freq(head_dim, theta, scaling);
  const int64_t T = positions.size(0), half = head_dim / 2;
  const Tensor pos = positions.to(Device::cpu(), DType::I64).contiguous();
  const int64_t* pp = pos.data<int64_t>();
  Tensor c = Tensor::empty({T, half}, DType::F32), s = Tensor::empty({T, half}, DType::F32);
  float* pc = c.data<float>();
  float* ps = s.data<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pp[t]) * inv[i];
      pc[t * half + i] = static_cast<float>(std::cos(a));
      ps[t * half + i] = static_cast<float>(std::sin(a));
    }
  return {c.to(device), s.to(device)};
}

RopeTable rope_table(int64_t head_dim, double theta, const nn::RopeScaling& scaling, int64_t T,
                     Device device) {
  return rope_table(head_dim, theta, scaling, Tensor::arange(T, DType::I64), device);
}

Tensor rope_apply(const Tensor& x, const RopeTable& table, bool inverse) {
  LZ_CHECK(x.dim() == 4, "rope: x must be [B, T, H, D], got ", x.desc());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  LZ_CHECK(D % 2 == 0, "rope: head dim must be even, got ", x.desc());
  LZ_CHECK(table.cos.dim() == 2 && table.cos.size(1) == half && table.cos.size(0) >= T &&
               table.sin.shape() == table.cos.shape() && table.cos.dtype() == DType::F32 &&
               table.sin.dtype() == DType::F32,
           "rope: table cos ", table.cos.desc(), " sin ", table.sin.desc(),
           " does not cover f32 [", T, ", ", half, "] for x ", x.desc());
  cpu::check_same_device("rope", {&x, &table.cos, &table.sin});
  const Tensor cs = table.cos.slice(0, 0, T).contiguous(), sn = table.sin.slice(0, 0, T).contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    LZ_CUDA_ONLY(cuda::rope_apply(x.contiguous(), cs, sn, inverse, y, cuda::stream_of(x)));
    return y;
  }
  cpu::visit_float(x.dtype(), "rope", [&](auto z) {
    using T_ = decltype(z);
    const Tensor xc = x.contiguous();
    const T_* px = xc.data<T_>();
    T_* py = y.data<T_>();
    const float* pc = cs.data<float>();
    const float* ps = sn.data<float>();
    const T_ sign = inverse ? T_(-1) : T_(1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t o = ((b * T + t) * H + h) * D;
          for (int64_t i = 0; i < half; ++i) {
            const T_ c = pc[t * half + i], s = sign * static_cast<T_>(ps[t * half + i]);
            const T_ x1 = px[o + i], x2 = px[o + i + half];
            py[o + i] = x1 * c - x2 * s;
            py[o + i + half] = x2 * c + x1 * s;
          }
        }
  });
  return y;
}

}  // namespace lizard::ops
