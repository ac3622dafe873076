// bench_lizard_attention (see include/lizard/cuda/lizard_attention_bench.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <cmath>
#include <sstream>

#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/cuda/lizard_attention_bench.h"

namespace lizard::cuda {

std::vector<LizardBenchShape> lizard_bench_default_shapes() {
  LizardBenchShape a, b, c;
  b.B = 2, b.T = 8192;
  c.B = 1, c.T = 32768;
  return {a, b, c};
}

namespace {

/// HBM bytes one call moves in the tensor-core pipeline (each tensor read or written once
/// per kernel that touches it; L2 reuse of K/V between neighbouring tiles not counted), per
/// stage: the floor a kernel of this design cannot beat. bf16 activations, f32 states.
struct StageBytes {
  const char* name;
  double bytes;
};

std::vector<StageBytes> forward_bytes(const LizardBenchShape& s) {
  const double B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, F2 = 2.0 * s.F;
  const double NC = std::ceil(T / 32.0);  // kChunk of cuda/lizard_attention_common.cuh
  const double q = B * T * H * D * 2, kv = B * T * Hkv * D * 2, phi = B * H * T * F2 * 2;
  const double states = B * H * NC * F2 * (D + 1) * 4, numden = B * H * T * (D + 1) * 4;
  return {{"gate", B * T * s.dm * 2 + B * T * 8},
          {"features", q + kv + 2 * phi},
          {"state", phi + kv + states},
          {"output", 2 * phi + kv + states + numden},
          {"window", q + 2 * kv + numden + q + B * H * T * 8}};
}

std::vector<StageBytes> backward_bytes(const LizardBenchShape& s) {
  const double B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, F2 = 2.0 * s.F;
  const double NC = std::ceil(T / 32.0);
  const double q = B * T * H * D * 2, kv = B * T * Hkv * D * 2, phi = B * H * T * F2 * 2;
  const double states = B * H * NC * F2 * (D + 1) * 4, dO = B * H * T * (D + 1) * 4;
  const double dq32 = B * T * H * D * 4, dkv32 = B * T * Hkv * D * 4, dphi = B * H * T * F2 * 4;
  // The window backward stores its dq, dk, dv rows (no zeroed buffers read back); the q feature
  // backward reads that f32 dq and writes the final bf16 one; dk and dv are summed by atomics
  // (read and written) and converted to bf16 once; the gate writes its dx in bf16.
  return {{"features_recompute", q + kv + 2 * phi},
          {"window_q", 2 * q + 2 * kv + dO + dO + dq32},
          {"window_k", 2 * q + 2 * kv + 2 * dkv32},
          {"dstate", phi + dO + states},
          {"global_grad", 2 * phi + kv + 2 * states + dO + 2 * dphi + 2 * dkv32},
          {"features_bwd", q + kv + 2 * dphi + dq32 + q + 2 * dkv32},
          {"conversions", 2 * dkv32 + 2 * kv},
          {"gate_bwd", 2 * B * T * s.dm * 2 + B * T * s.dm * 2}};
}

/// {"stage": GB, ...}, the total in GB, and the floor at kHbmBytesPerS.
std::string bytes_json(const std::vector<StageBytes>& st, double measured_ms, const char* tag) {
  constexpr double kHbmBytesPerS = 4.8e12;  // H200 HBM3e peak (H100 SXM: 3.35e12)
  std::ostringstream os;
  double total = 0;
  os << ",\"hbm_gb_" << tag << "\":{";
  for (size_t i = 0; i < st.size(); ++i) {
    os << (i ? "," : "") << "\"" << st[i].name << "\":" << st[i].bytes / 1e9;
    total += st[i].bytes;
  }
  const double floor_ms = total / kHbmBytesPerS * 1e3;
  os << ",\"total\":" << total / 1e9 << "},\"hbm_floor_ms_" << tag << "\":" << floor_ms
     << ",\"hbm_fraction_" << tag << "\":" << (measured_ms > 0 ? floor_ms / measured_ms : 0);
  return os.str();
}

}  // namespace

std::string bench_lizard_attention(const std::vector<LizardBenchShape>& shapes, int warmup,
                                   int iters) {
  std::ostringstream os;
  const Device gpu = Device::cuda(0);
  for (const auto& sh : shapes) {
    ops::LizardConfig cfg;
    cfg.feature_dim = sh.F;
    cfg.window = sh.window;
    cfg.sinks = sh.sinks;
    ops::LizardInputs in;
    in.q = Tensor::normal({sh.B, sh.T, sh.H, sh.D}, 0, 1, 1, 0, DType::BF16, gpu);
    in.k = Tensor::normal({sh.B, sh.T, sh.Hkv, sh.D}, 0, 1, 2, 0, DType::BF16, gpu);
    in.v = Tensor::normal({sh.B, sh.T, sh.Hkv, sh.D}, 0, 1, 3, 0, DType::BF16, gpu);
    in.x = Tensor::normal({sh.B, sh.T, sh.dm}, 0, 1, 4, 0, DType::BF16, gpu);
    ops::LizardParams p = ops::lizard_init_params(cfg, sh.H, sh.D, sh.dm, DType::F32);
    for (Tensor* t : {&p.wq, &p.wk, &p.w_g, &p.b_g, &p.tau, &p.alpha}) *t = t->to(gpu);
    Tensor dy = Tensor::ones(in.q.shape(), DType::BF16, gpu);
    void* stream = stream_of(in.q);
    auto s = static_cast<cudaStream_t>(stream);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    auto time = [&](bool bwd) {
      std::vector<float> ms;
      for (int i = 0; i < warmup + iters; ++i) {
        cudaEventRecord(e0, s);
        ops::LizardSaved saved;
        Tensor y;
        lizard_attention_forward(cfg, in, p, y, bwd ? &saved : nullptr, stream);
        if (bwd) {
          ops::LizardGrads g;
          lizard_attention_backward(cfg, in, p, saved, dy, g, stream);
        }
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float t = 0;
        cudaEventElapsedTime(&t, e0, e1);
        if (i >= warmup) ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    // Inference forward and training forward+backward by the default path (tensor cores
    // where they cover the shape, see lizard_attention_kernel_path), and the tensor-core
    // training path forced (LIZARD_ATTENTION_KERNELS=tc): timed again only when the default
    // did not take it (LIZARD_ATTENTION_KERNELS=f32, or a shape it does not cover).
    const float f = time(false), fb = time(true);
    const LizardKernelPath path = lizard_attention_kernel_path(cfg, in, p, true);
    const LizardKernelPath ipath = lizard_attention_kernel_path(cfg, in, p, false);
    float fb_tc = fb;
    if (!path.global_tc) {
      const char* env = std::getenv("LIZARD_ATTENTION_KERNELS");
      const std::string env_saved = env ? env : "";
      setenv("LIZARD_ATTENTION_KERNELS", "tc", 1);
      fb_tc = time(true);
      if (env) setenv("LIZARD_ATTENTION_KERNELS", env_saved.c_str(), 1);
      else unsetenv("LIZARD_ATTENTION_KERNELS");
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    os << "{\"op\":\"lizard_attention\",\"device\":\"" << context(0).name << "\",\"B\":" << sh.B
       << ",\"T\":" << sh.T << ",\"H\":" << sh.H << ",\"Hkv\":" << sh.Hkv << ",\"D\":" << sh.D
       << ",\"F\":" << sh.F << ",\"window\":" << sh.window << ",\"sinks\":" << sh.sinks
       << ",\"inference_tc\":" << (ipath.global_tc ? "true" : "false")
       << ",\"training_global_tc\":" << (path.global_tc ? "true" : "false")
       << ",\"training_window_tc\":" << (path.window_tc ? "true" : "false")
       << ",\"state_rows\":" << path.state_rows
       << ",\"fwd_ms\":" << f << ",\"fwd_bwd_ms\":" << fb << ",\"tc_fwd_bwd_ms\":" << fb_tc
       << bytes_json(forward_bytes(sh), f, "fwd") << bytes_json(backward_bytes(sh), fb_tc - f, "bwd")
       << "}\n";
  }
  return os.str();
}

}  // namespace lizard::cuda
