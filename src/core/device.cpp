#include "lizard/core/device.h"

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/error.h"

namespace lizard {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda" || s == "gpu") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      return cuda(std::stoi(s.substr(5)));
    } catch (const std::exception&) {
    }
  }
  throw InputError("unknown device '" + s + "' (expected cpu, cuda or cuda:N)");
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace lizard
