#include "lizard/core/env.h"

#include <cstdlib>
#include <string>

#include "lizard/core/error.h"

namespace lizard {

bool env_switch(const char* var, const char* dflt, const char* other) {
  const char* e = std::getenv(var);
  if (!e || !*e) return false;
  const std::string v(e);
  if (v == dflt) return false;
  if (v == other) return true;
  throw InputError(std::string(var) + "='" + v + "': expected '" + dflt + "' (the default), '" +
                   other + "' or unset");
}

}  // namespace lizard
