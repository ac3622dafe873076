// safetensors: the Hugging Face tensor container. Layout: u64 little-endian header length N,
// N bytes of JSON {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [b, e]}},
// then the data buffer (offsets are relative to its start).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lizard/core/tensor.h"

namespace lizard::io {

/// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string name;
  std::string dtype_str;  ///< as in the file: "BF16", "F32", "I64", "F8_E4M3", ...
  Shape shape;
  uint64_t begin = 0, end = 0;  ///< byte offsets into the data buffer
  /// The lizard dtype, or false in `loadable` when the file dtype has no lizard equivalent
  /// (BOOL, I8, U16, F8...): listed, validated, but load() refuses it by name.
  DType dtype = DType::F32;
  bool loadable = true;
};

/// Bytes per element of a safetensors dtype name; throws InputError for unknown names.
size_t safetensors_dtype_size(const std::string& dtype_str);
/// The safetensors dtype name of a lizard dtype ("F32", "BF16", "F16", "I32", "I64", "F64", "U8").
const char* safetensors_dtype_name(DType t);

/// A memory-mapped safetensors file. Opening validates the whole header against the file size:
/// header length within the file, JSON well-formed, every dtype known, shape * dtype size equal
/// to the offset span, offsets inside the data buffer and not overlapping. Every error is an
/// InputError naming the file and the problem. Movable, not copyable; unmaps on destruction.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  /// Tensor names in header order.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  /// The entry of `name`; InputError naming file and tensor when absent.
  const TensorInfo& info(const std::string& name) const;
  /// The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Raw bytes of a tensor inside the mapping (valid while this object lives).
  const void* data(const std::string& name) const;
  /// Copies tensor `name` into a new contiguous tensor on `device`, converted to `dtype`
  /// (the file's dtype when `dtype` is not given).
  Tensor load(const std::string& name, Device device = Device::cpu()) const;
  Tensor load(const std::string& name, Device device, DType dtype) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const unsigned char* data_ = nullptr;  // start of the data buffer
  std::vector<TensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint directory or file: a single `.safetensors` file, a directory holding
/// `model.safetensors`, or a sharded `model.safetensors.index.json` (its "weight_map" names the
/// shard of every tensor; shards are opened lazily). A path to an `.index.json` file works too.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& path);

  /// All tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return shard_of_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor load(const std::string& name, Device device = Device::cpu()) const;
  Tensor load(const std::string& name, Device device, DType dtype) const;
  /// Checks the checkpoint against the expected name -> shape map and throws one InputError
  /// listing every missing, unexpected (unless `allow_unexpected`) and mis-shaped tensor.
  void check(const std::map<std::string, Shape>& expected, bool allow_unexpected = false) const;
  /// check(), then loads every expected tensor.
  std::map<std::string, Tensor> load_all(const std::map<std::string, Shape>& expected,
                                         Device device, DType dtype,
                                         bool allow_unexpected = false) const;

 private:
  const SafetensorsFile& shard(const std::string& name) const;

  std::string source_;                             // what error messages call this checkpoint
  std::map<std::string, std::string> shard_of_;    // tensor name -> shard path
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;  // opened lazily
};

/// Writes `tensors` (any device/layout; saved in their own dtype, in the given order) to `path`
/// as safetensors, with the header padded by spaces to a multiple of 8 bytes (as HF does).
/// Writes `path`.tmp-<pid> first and renames it, so a crash never leaves a half-written file.
/// Names must be unique and non-empty; InputError otherwise.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Writes `tensors` into `dir` as one `model.safetensors` when their total size is at most
/// `max_shard_bytes`, else as `model-0000i-of-0000n.safetensors` shards plus
/// `model.safetensors.index.json` ({"metadata": {"total_size"}, "weight_map"}), as HF does.
/// Returns the files written.
std::vector<std::string> write_safetensors_sharded(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    size_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

}  // namespace lizard::io
