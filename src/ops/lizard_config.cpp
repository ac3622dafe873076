#include "lizard/ops/lizard_config.h"

#include <cmath>

namespace lizard::ops {

FeatureActivation feature_activation_from_name(const std::string& s) {
  if (s == "softmax") return FeatureActivation::Softmax;
  if (s == "exp") return FeatureActivation::Exp;
  throw InputError(str_cat("lizard.feature_activation: expected softmax or exp, got '", s, "'"));
}
GateMode gate_mode_from_name(const std::string& s) {
  if (s == "shared") return GateMode::Shared;
  if (s == "per_head") return GateMode::PerHead;
  throw InputError(str_cat("lizard.gate: expected shared or per_head, got '", s, "'"));
}
Combine combine_from_name(const std::string& s) {
  if (s == "sum") return Combine::Sum;
  if (s == "convex") return Combine::Convex;
  throw InputError(str_cat("lizard.combine: expected sum or convex, got '", s, "'"));
}
Preset preset_from_name(const std::string& s) {
  if (s == "paper") return Preset::Paper;
  if (s == "plus") return Preset::Plus;
  throw InputError(str_cat("lizard.preset: expected paper or plus, got '", s, "'"));
}
const char* name_of(FeatureActivation a) { return a == FeatureActivation::Softmax ? "softmax" : "exp"; }
const char* name_of(GateMode g) { return g == GateMode::Shared ? "shared" : "per_head"; }
const char* name_of(Combine c) { return c == Combine::Sum ? "sum" : "convex"; }
const char* name_of(Preset p) { return p == Preset::Paper ? "paper" : "plus"; }

void LizardConfig::validate() const {
  LZ_INPUT_CHECK(feature_dim >= 1, "lizard.feature_dim: expected >= 1, got ", feature_dim);
  LZ_INPUT_CHECK(window >= 0, "lizard.window: expected >= 0 (0 = no window branch), got ", window);
  LZ_INPUT_CHECK(sinks >= 0, "lizard.sinks: expected >= 0, got ", sinks);
  LZ_INPUT_CHECK(eps > 0 && std::isfinite(eps), "lizard.eps: expected a finite value > 0, got ", eps);
  LZ_INPUT_CHECK(chunk >= 1, "lizard.chunk: expected >= 1, got ", chunk);
  LZ_INPUT_CHECK(std::isfinite(bias_init()), "lizard.gate_bias_init: expected a finite value");
}

std::string LizardConfig::str() const {
  return str_cat("preset=", name_of(preset), " feature_dim=", feature_dim,
                 " feature_activation=", name_of(feature_activation), " gate=", name_of(gate_mode()),
                 " gate_bias_init=", bias_init(), " window=", window, " sinks=", sinks,
                 " sinks_per_head=", sinks_per_head ? "true" : "false", " combine=", name_of(combine),
                 " window_rope=", use_window_rope() ? "true" : "false", " eps=", eps,
                 " chunk=", chunk);
}

}  // namespace lizard::ops
