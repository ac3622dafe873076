// Learning-rate schedules: linear warm-up from 0, then cosine, linear or constant decay to
// floor x peak at the last step (the paper: cosine, 10% warm-up, floor 0.1).
#pragma once
#include <cstdint>
#include <string>

namespace lizard::optim {

enum class ScheduleKind : uint8_t { Cosine, Linear, Constant };

/// Parses "cosine" | "linear" | "constant" (InputError otherwise).
ScheduleKind schedule_kind(const std::string& name);

struct Schedule {
  ScheduleKind kind = ScheduleKind::Cosine;
  double peak = 1e-3;
  int64_t total_steps = 1;
  double warmup_fraction = 0.1;  ///< warm-up steps = round(fraction * total_steps)
  double floor = 0.1;            ///< final LR / peak

  int64_t warmup_steps() const;
  /// LR of optimizer step `step` (0-based). Warm-up: peak * (step + 1) / W for step < W, so
  /// the first step already moves; then with p = (step - W) / max(1, total - 1 - W) in [0, 1]:
  /// cosine: peak * (floor + (1 - floor) * (1 + cos(pi p)) / 2); linear: peak * (1 - (1 -
  /// floor) p); constant: peak. Steps past the end stay at the floor.
  double lr_at(int64_t step) const;
};

}  // namespace lizard::optim
