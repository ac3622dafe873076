// LizardConfig: every switch of the Lizard attention maths (DESIGN.md section 2), with the
// paper's values as defaults and the `plus` preset. Read by nn::LizardAttention, the YAML
// loader and the kernels; validation errors name the field.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "lizard/core/error.h"

namespace lizard::ops {

/// Which feature map phi is used (one per query head, separate for q and k).
enum class FeatureActivation {
  /// phi(u) = [softmax(u), softmax(-u)] (Hedgehog; the paper).
  Softmax,
  /// phi(u) = [exp(u - m), exp(-u - m)] with m = max_i |u_i|, the max over BOTH halves of the
  /// same token. The shift keeps every entry in (0, 1]; it is part of the map (for keys it
  /// weights token s by exp(-m_s), which does not cancel in the normalised global branch), and
  /// gradients flow through m (subgradient at the arg-max).
  Exp,
};

/// One gate per token shared by all heads (the paper) or one per head.
enum class GateMode { Shared, PerHead };

/// y = g + alpha l (Sum, the paper) or (g + |alpha| l) / (1 + |alpha|) (Convex).
enum class Combine { Sum, Convex };

/// paper: the paper as written. plus: window_rope, per-head gate, gate bias 3 (gamma ~ 0.95).
enum class Preset { Paper, Plus };

/// "softmax"/"exp", "shared"/"per_head", "sum"/"convex", "paper"/"plus"; InputError otherwise.
FeatureActivation feature_activation_from_name(const std::string& s);
GateMode gate_mode_from_name(const std::string& s);
Combine combine_from_name(const std::string& s);
Preset preset_from_name(const std::string& s);
const char* name_of(FeatureActivation a);
const char* name_of(GateMode g);
const char* name_of(Combine c);
const char* name_of(Preset p);

/// C of the CUDA kernels, whose tensor-core tiles are built for it (lizard.chunk sets the CPU
/// chunked path only): the per-chunk states a CUDA forward saves for backward, [B, H, ceil(T /
/// kCudaChunk), 2F, D+1] f32, are sized by it.
inline constexpr int64_t kCudaChunk = 32;

/// Configuration of one Lizard attention layer. Fields a preset changes are optional: unset
/// means "take the preset's value"; set means "explicit, overrides the preset". Consumers read
/// the resolved values through the accessors (or call resolved()).
struct LizardConfig {
  Preset preset = Preset::Paper;
  int64_t feature_dim = 128;  ///< F; phi has width 2F
  FeatureActivation feature_activation = FeatureActivation::Softmax;
  std::optional<GateMode> gate;              ///< paper: Shared, plus: PerHead
  std::optional<double> gate_bias_init;      ///< paper: 0 (gamma 0.5), plus: 3 (gamma ~0.95)
  int64_t window = 128;                      ///< w; 0 disables the window branch
  int64_t sinks = 4;                         ///< m learnable sink logits; 0 = none
  bool sinks_per_head = false;               ///< tau [m] (false) or [H, m] (true)
  Combine combine = Combine::Sum;
  std::optional<bool> window_rope;           ///< paper: false, plus: true
  /// Clamp of the global branch's denominator: g = num / max(den, eps). phi entries are
  /// positive, so den > 0 in exact arithmetic; the clamp only guards underflow when every
  /// decay factor of a row is tiny (gates near 0 over a long prefix). 1e-6 is far below any
  /// healthy denominator (den >= phi_q . phi_k of the token itself, about 2/F >= 1e-3 for
  /// F <= 1024 with the softmax map) and far above fp32 underflow.
  double eps = 1e-6;
  int64_t chunk = 64;  ///< C of the CPU chunked path (DESIGN section 3); a tuning knob only
  /// Run-time, not a `lizard:` key (the run's `recompute_states` sets it): whether a CUDA
  /// training forward keeps its per-chunk f32 states [S|z] for the backward (2F (D+1) floats
  /// per kCudaChunk tokens and head, most of what a layer keeps) and, on the tensor cores, its
  /// feature maps as bf16 hi + lo pairs (4 x 2F bf16 per token and head, a quarter of the
  /// states). false: the tensor-core backward recomputes the feature maps and reruns the state
  /// sweep instead (the same bits, as long as LIZARD_STATE_KERNEL and LIZARD_STATE_COLS do not
  /// change between the forward and the backward: z's f32 sum order depends on them); the f32
  /// kernels keep the states regardless. CPU ignores it (its backward recomputes all).
  bool keep_states = true;

  // ---- resolved values (preset applied, explicit fields win) ----
  GateMode gate_mode() const {
    return gate ? *gate : (preset == Preset::Plus ? GateMode::PerHead : GateMode::Shared);
  }
  double bias_init() const {
    return gate_bias_init ? *gate_bias_init : (preset == Preset::Plus ? 3.0 : 0.0);
  }
  bool use_window_rope() const {
    return window_rope ? *window_rope : preset == Preset::Plus;
  }
  /// A copy with every optional field filled in from the preset.
  LizardConfig resolved() const {
    LizardConfig c = *this;
    c.gate = gate_mode();
    c.gate_bias_init = bias_init();
    c.window_rope = use_window_rope();
    return c;
  }
  /// Throws InputError naming the field when a value is out of range.
  void validate() const;
  /// One line, resolved: "preset=paper feature_dim=128 ...".
  std::string str() const;
};

}  // namespace lizard::ops
