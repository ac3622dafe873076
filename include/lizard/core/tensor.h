// Tensor: a typed, strided view of a Storage on one device.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "lizard/core/device.h"
#include "lizard/core/dtype.h"
#include "lizard/core/error.h"
#include "lizard/core/storage.h"

namespace lizard {

using Shape = std::vector<int64_t>;

/// Number of elements of a shape (1 for a scalar shape {}).
int64_t shape_numel(const Shape& s);
/// "[2, 3, 4]".
std::string shape_str(const Shape& s);
/// Row-major strides of a contiguous tensor of this shape.
Shape contiguous_strides(const Shape& s);

class Tensor {
 public:
  /// An undefined tensor (no storage); `defined()` is false.
  Tensor() = default;

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
    return full(shape, 1.0, dtype, device);
  }
  /// Copies `values` (converted to `dtype`) into a new CPU tensor of `shape`.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::F32);
  template <class T>
  static Tensor from_data(const std::vector<T>& values, const Shape& shape);
  /// Uniform in [lo, hi) from the stream (seed, offset); identical on every device.
  static Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed, uint64_t offset,
                        DType dtype = DType::F32, Device device = Device::cpu());
  /// Normal(mean, std) from the stream (seed, offset).
  static Tensor normal(const Shape& shape, double mean, double std, uint64_t seed, uint64_t offset,
                       DType dtype = DType::F32, Device device = Device::cpu());
  /// 0, 1, ..., n-1.
  static Tensor arange(int64_t n, DType dtype = DType::I64, Device device = Device::cpu());

  // ---- metadata ----
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  /// Size of dimension d (negative d counts from the end).
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  int64_t offset() const { return offset_; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  /// "Tensor[2, 3] f32 cpu".
  std::string desc() const;

  // ---- raw access ----
  /// Pointer to the first element of this view (any device).
  void* raw() const;
  /// Typed pointer to the first element; checks the dtype.
  template <class T>
  T* data() const {
    LZ_CHECK(dtype_ == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value),
             ">() on a ", dtype_name(dtype_), " tensor");
    return static_cast<T*>(raw());
  }

  // ---- views (share storage) ----
  /// Same elements, new shape; one dim may be -1. Requires a contiguous tensor (else use reshape).
  Tensor view(const Shape& shape) const;
  /// view() when possible, else a contiguous copy.
  Tensor reshape(const Shape& shape) const;
  /// Elements start..end-1 (step) along dim; negative indices count from the end.
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /// Selects one index along dim and drops the dim.
  Tensor select(int64_t dim, int64_t index) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  /// Broadcast view (stride 0) to `shape`.
  Tensor expand(const Shape& shape) const;

  // ---- copies ----
  /// This tensor if contiguous, else a contiguous copy.
  Tensor contiguous() const;
  /// A contiguous copy.
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor to(Device device, DType dtype) const;
  /// Copies src into this tensor (same shape; converts dtype; any devices).
  void copy_(const Tensor& src);
  /// Sets every element to value.
  void fill_(double value);
  /// All elements as doubles, in row-major order (any device, any dtype).
  std::vector<double> to_vector() const;
  /// All elements as float.
  std::vector<float> to_float_vector() const;
  /// The only element of a one-element tensor.
  double item() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::F32;
};

template <class T>
Tensor Tensor::from_data(const std::vector<T>& values, const Shape& shape) {
  LZ_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_data: ",
           values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t;
}

}  // namespace lizard
