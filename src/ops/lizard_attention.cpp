// Host dispatch of Lizard attention (see lizard_attention.h).
#include "lizard/ops/lizard_attention.h"

#include "lizard/core/cuda_runtime.h"
#include "lizard/cuda/lizard_attention.h"
#include "lizard/ops/lizard_attention_chunked.h"

namespace lizard::ops {

Tensor lizard_attention_forward(const LizardConfig& cfg, const LizardInputs& in,
                                const LizardParams& p, LizardSaved* saved) {
  if (!in.q.is_cuda()) return lizard_chunked_forward(cfg, in, p);
  Tensor y;
  LZ_CUDA_ONLY(cuda::lizard_attention_forward(cfg, in, p, y, saved, cuda::stream_of(in.q)));
  return y;
}

LizardGrads lizard_attention_backward(const LizardConfig& cfg, const LizardInputs& in,
                                      const LizardParams& p, const LizardSaved& saved,
                                      const Tensor& dy, const LizardWants& want) {
  if (!in.q.is_cuda()) return lizard_chunked_backward(cfg, in, p, dy);
  LizardGrads g;
  LZ_CUDA_ONLY(cuda::lizard_attention_backward(cfg, in, p, saved, dy, g, cuda::stream_of(in.q), want));
  return g;
}

}  // namespace lizard::ops
