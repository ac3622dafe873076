// Where a tensor's storage lives.
#pragma once
#include <cstdint>
#include <string>

namespace lizard {

enum class DeviceType : uint8_t { CPU, CUDA };

/// A device: the CPU, or one CUDA GPU by ordinal.
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  /// "cpu" or "cuda:N".
  std::string str() const;
  /// Parses "cpu", "cuda", "cuda:N"; throws InputError otherwise.
  static Device parse(const std::string& s);
};

/// True when the binary was built with CUDA and at least one GPU is visible.
bool cuda_available();
/// Number of visible GPUs (0 without CUDA).
int cuda_device_count();

}  // namespace lizard
