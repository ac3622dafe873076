// A small RAII layer over the HDF5 C API: named tensors and scalar/string attributes in one
// file. Used by token datasets and checkpoints. Failures are InputErrors naming the file
// and the object (missing file, not HDF5, missing dataset, wrong dtype).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::io {

class H5File {
 public:
  /// Creates (truncates) a file for writing.
  static H5File create(const std::string& path);
  /// Opens an existing file read-only; InputError when missing or not HDF5.
  static H5File open(const std::string& path);

  H5File(H5File&& o) noexcept;
  H5File& operator=(H5File&& o) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();
  /// Flushes and closes (errors surface here rather than in the destructor).
  void close();

  const std::string& path() const { return path_; }

  /// Writes a CPU or GPU tensor (copied to the CPU) as dataset `name` (slashes make groups).
  /// f32, f64, i32, i64, u8 map to native HDF5 types; bf16/f16 are stored as uint16 with a
  /// "dtype" attribute so they read back bit-exactly.
  void write(const std::string& name, const Tensor& t);
  /// Reads dataset `name` as a CPU tensor of its stored dtype and shape.
  Tensor read(const std::string& name) const;
  /// Reads elements [start, start+count) of a 1-D dataset.
  Tensor read_range(const std::string& name, int64_t start, int64_t count) const;
  /// The shape of dataset `name`.
  Shape shape_of(const std::string& name) const;
  bool has(const std::string& name) const;
  /// Every dataset path in the file ("a/b" for nested groups), sorted.
  std::vector<std::string> datasets() const;

  /// Root attributes.
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, int64_t value);
  bool has_attr(const std::string& name) const;
  std::string attr_string(const std::string& name) const;
  int64_t attr_int(const std::string& name) const;

 private:
  H5File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  int64_t id_ = -1;  // hid_t
  std::string path_;
};

}  // namespace lizard::io
