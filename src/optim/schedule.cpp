// LR schedules (see include/lizard/optim/schedule.h).
#include "lizard/optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "lizard/core/error.h"

namespace lizard::optim {

ScheduleKind schedule_kind(const std::string& name) {
  if (name == "cosine") return ScheduleKind::Cosine;
  if (name == "linear") return ScheduleKind::Linear;
  if (name == "constant") return ScheduleKind::Constant;
  throw InputError(str_cat("schedule '", name, "': expected cosine, linear or constant"));
}

int64_t Schedule::warmup_steps() const {
  return std::clamp<int64_t>(std::llround(warmup_fraction * total_steps), 0, total_steps);
}

double Schedule::lr_at(int64_t step) const {
  const int64_t w = warmup_steps();
  if (step < w) return peak * static_cast<double>(step + 1) / static_cast<double>(w);
  if (kind == ScheduleKind::Constant) return peak;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - 1 - w));
  const double p = std::min(1.0, static_cast<double>(step - w) / span);
  if (kind == ScheduleKind::Linear) return peak * (1.0 - (1.0 - floor) * p);
  return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(M_PI * p)));
}

}  // namespace lizard::optim
