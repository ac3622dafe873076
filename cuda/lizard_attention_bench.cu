// bench_lizard_attention (see include/lizard/cuda/lizard_attention_bench.h).
#include <cuda_runtime.h>

#include <algorithm>
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
    const float f = time(false), fb = time(true);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    os << "{\"op\":\"lizard_attention\",\"device\":\"" << context(0).name << "\",\"B\":" << sh.B
       << ",\"T\":" << sh.T << ",\"H\":" << sh.H << ",\"Hkv\":" << sh.Hkv << ",\"D\":" << sh.D
       << ",\"F\":" << sh.F << ",\"window\":" << sh.window << ",\"sinks\":" << sh.sinks
       << ",\"fwd_ms\":" << f << ",\"fwd_bwd_ms\":" << fb << "}\n";
  }
  return os.str();
}

}  // namespace lizard::cuda
