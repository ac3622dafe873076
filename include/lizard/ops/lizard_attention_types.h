// The tensors one Lizard attention call reads and writes (DESIGN.md section 2), shared by the
// CPU oracle, the chunked CPU reference, the CUDA kernels and the decode path.
#pragma once
#include <cstdint>

#include "lizard/core/tensor.h"
#include "lizard/ops/lizard_config.h"

namespace lizard::ops {

/// Activations of one layer (all contiguous, one float dtype, same device).
struct LizardInputs {
  Tensor q;    ///< [B, T, H, D]   query projections (no RoPE: the student is RoPE-free)
  Tensor k;    ///< [B, T, Hkv, D] H % Hkv == 0; query head h reads kv head h / (H / Hkv)
  Tensor v;    ///< [B, T, Hkv, D]
  Tensor x;    ///< [B, T, dm]     the layer input: the gate reads it
  Tensor cos;  ///< [T, D/2] only with window_rope (HF rotate_half layout); row t = position t
  Tensor sin;  ///< [T, D/2]
};

/// Trainable parameters of one layer.
struct LizardParams {
  Tensor wq;     ///< [H, D, F] feature map of the queries, one per query head
  Tensor wk;     ///< [H, D, F] feature map of the keys (applied after the GQA repeat)
  Tensor w_g;    ///< [1, dm] (gate shared) or [H, dm] (per_head)
  Tensor b_g;    ///< [1] (shared) or [H] (per_head)
  Tensor tau;    ///< [1, m] (shared sinks) or [H, m] (sinks_per_head); undefined when m = 0
  Tensor alpha;  ///< [1] weight of the window branch
};

/// Gradients of a scalar loss with respect to every input and parameter (same shapes).
/// dalpha is zero and dtau undefined when the window branch is off (window = 0).
struct LizardGrads {
  Tensor dq, dk, dv, dx;
  Tensor dwq, dwk, dw_g, db_g, dtau, dalpha;
  /// Only with LizardWants::dstates (tests): the CUDA tensor-core backward's per-chunk dstates
  /// [B, H, NC, 2F, D+1] f32 (scratch of the global branch, laid out like the states), so that
  /// kernel variants can be compared bit for bit; undefined otherwise.
  Tensor dstates;
};

/// Which gradients a backward must produce (all by default). A gradient not wanted may come
/// back undefined, and the work only it needs is skipped: the feature maps' weight gradient
/// when they are frozen (stage 2), the gate's parameter gradient, the gradients of inputs that
/// need none (stage 1's frozen q, k, v and x). CUDA only; the CPU reference computes all.
struct LizardWants {
  bool dq = true, dk = true, dv = true, dx = true;
  bool dwq = true, dwk = true;
  bool dgate = true;  ///< dw_g and db_g
  bool dsinks = true;  ///< dtau and dalpha (frozen in stage 2 unless the Lizard parameters train)
  bool dstates = false;  ///< keep LizardGrads::dstates (tests; the tensor-core path only)
};

/// Shapes read off the inputs, checked against each other and the config.
struct LizardDims {
  int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, F = 0, dm = 0;
  int64_t Hg = 1;  ///< gate heads: 1 (shared) or H (per_head)
  int64_t Ht = 1;  ///< sink heads: 1 or H (sinks_per_head)
  int64_t m = 0;   ///< sinks
  int64_t w = 0;   ///< window
};

/// Checks every shape (InputError naming the tensor and the expected shape) and returns them.
LizardDims lizard_check_dims(const LizardConfig& cfg, const LizardInputs& in,
                             const LizardParams& p);

/// Parameters at their initial values: wq = wk = identity-rectangular (W[h][i][j] = i == j),
/// w_g = 0, b_g = gate_bias_init, tau = 0, alpha = 1; CPU tensors of `dtype`.
LizardParams lizard_init_params(const LizardConfig& cfg, int64_t H, int64_t D, int64_t dm,
                                DType dtype = DType::F32);

}  // namespace lizard::ops
