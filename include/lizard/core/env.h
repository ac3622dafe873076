// Switches read from the environment (A/B timing and bisection of alternative code paths).
#pragma once

namespace lizard {

/// A two-valued switch read from the environment at each call: false when `var` is unset,
/// empty or `dflt`, true when it is `other`; any other value throws InputError naming `var`
/// and both accepted values (a typo must not silently run, or time, the wrong path). The
/// Lizard attention's kernel switches (LIZARD_ATTENTION_KERNELS, LIZARD_{OUT,STATE,GRAD}_KERNEL),
/// LIZARD_STREAMS and LIZARD_LORA_FUSED use it.
bool env_switch(const char* var, const char* dflt, const char* other);

}  // namespace lizard
