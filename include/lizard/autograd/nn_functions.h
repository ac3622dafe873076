// Differentiable neural-network functions on Vars, one per op of include/lizard/ops/ that a
// model needs. Each records a Node that calls the op's backward; the saved-tensor policy is
// stated next to each function. An input that does not require grad (a frozen weight) gets
// no gradient computed for it.
#pragma once
#include <cstdint>

#include "lizard/autograd/variable.h"
#include "lizard/ops/rope.h"

namespace lizard::autograd {

/// weight [V, D] rows gathered by ids (i32/i64, any shape) -> ids.shape() + [D].
/// Saves ids and V; nothing when the weight is frozen (ids carry no gradient).
Var embedding(const Var& weight, const Tensor& ids);

/// RMSNorm over the last dim, x [..., D], w [D]. Saves x, w and rstd (f32 [N]).
/// dw is skipped when w is frozen, dx when x needs none.
Var rmsnorm(const Var& x, const Var& w, double eps);

/// Rotary embedding of x [B, T, H, D] with the table (see ops::rope_apply).
/// Saves only the table (shared, not copied); the backward is the inverse rotation.
Var rope(const Var& x, const ops::RopeTable& table);

/// silu(gate) * up. Saves gate and up.
Var swiglu(const Var& gate, const Var& up);

/// Softmax over the last dim. Saves the output.
Var softmax(const Var& x);
/// Log-softmax over the last dim. Saves the output.
Var log_softmax(const Var& x);

struct CrossEntropyResult {
  Var loss;           ///< scalar: mean over counted rows (0 when none)
  int64_t count = 0;  ///< rows with target >= 0
};
/// Cross-entropy of logits [N, V] against targets [N] (negative = ignored), fused with
/// log-softmax. Saves logits, targets and lse [N] (softmax is recomputed in the backward).
/// host_targets: see ops::cross_entropy (a CPU copy of targets; no device read).
CrossEntropyResult cross_entropy(const Var& logits, const Tensor& targets,
                                 const Tensor& host_targets = Tensor());

/// mean((a - b)^2). Saves a and b (either may be frozen, e.g. a teacher's output).
Var mse(const Var& a, const Var& b);

/// Dropout with the Philox mask of (seed, offset) (see ops::dropout). Saves nothing: the
/// backward regenerates the mask. p == 0 returns x itself.
Var dropout(const Var& x, double p, uint64_t seed, uint64_t offset);

struct AttentionResult {
  Var o;       ///< [B, T, H, D]
  Tensor lse;  ///< [B, H, T] (no gradient flows through it)
};
/// Causal softmax attention with GQA and optional window (see ops::causal_attention).
/// Saves q, k, v, o and lse; the backward recomputes the probabilities.
AttentionResult causal_attention(const Var& q, const Var& k, const Var& v, double scale,
                                 int64_t window = 0);

}  // namespace lizard::autograd
