#include "lizard/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "lizard/io/json.h"

namespace lizard::io {

namespace fs = std::filesystem;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

struct DTypeEntry {
  const char* name;
  size_t size;
  bool loadable;
  DType dtype;
};

// Every dtype the safetensors spec names; the ones lizard has no type for are listed and
// validated but not loadable.
const DTypeEntry kDTypes[] = {
    {"F32", 4, true, DType::F32},   {"BF16", 2, true, DType::BF16}, {"F16", 2, true, DType::F16},
    {"I32", 4, true, DType::I32},   {"I64", 8, true, DType::I64},   {"F64", 8, true, DType::F64},
    {"U8", 1, true, DType::U8},     {"BOOL", 1, false, DType::U8},  {"I8", 1, false, DType::U8},
    {"I16", 2, false, DType::U8},   {"U16", 2, false, DType::U8},   {"U32", 4, false, DType::U8},
    {"U64", 8, false, DType::U8},   {"F8_E4M3", 1, false, DType::U8},
    {"F8_E5M2", 1, false, DType::U8},
};

const DTypeEntry* find_dtype(const std::string& s) {
  for (const auto& e : kDTypes)
    if (s == e.name) return &e;
  return nullptr;
}

std::string known_dtypes() {
  std::string r;
  for (const auto& e : kDTypes) r += (r.empty() ? "" : ", ") + std::string(e.name);
  return r;
}

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype_str) {
  const DTypeEntry* e = find_dtype(dtype_str);
  LZ_INPUT_CHECK(e, "safetensors: unknown dtype \"", dtype_str, "\" (known: ", known_dtypes(), ")");
  return e->size;
}

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F64: return "F64";
    case DType::U8: return "U8";
  }
  return "?";
}

// ---------------------------------------------------------------- reader

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto bad = [&](const std::string& what) {
    return InputError(str_cat(path_, ": not a valid safetensors file: ", what));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LZ_INPUT_CHECK(fd >= 0, path, ": cannot open safetensors file (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw InputError(str_cat(path, ": cannot stat (", std::strerror(errno), ")"));
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    throw bad(str_cat("file is ", map_size_, " bytes, shorter than the 8-byte header length"));
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw InputError(str_cat(path, ": mmap failed (", std::strerror(errno), ")"));
  }
  try {
    const auto* bytes = static_cast<const unsigned char*>(map_);
    uint64_t n = 0;
    std::memcpy(&n, bytes, 8);
    if (n > map_size_ - 8)
      throw bad(str_cat("header length ", n, " runs past the end of the file (", map_size_,
                        " bytes): truncated or not safetensors"));
    if (n > kMaxHeader) throw bad(str_cat("header length ", n, " exceeds 100 MB"));
    if (n < 2 || bytes[8] != '{') throw bad("header does not start with a JSON object");
    data_ = bytes + 8 + n;
    const uint64_t data_size = map_size_ - 8 - n;
    const std::string header(reinterpret_cast<const char*>(bytes + 8), n);
    Json j;
    try {
      j = parse_json(header, path_ + " (safetensors header)");
    } catch (const InputError& e) {
      throw bad(e.what());
    }
    const auto& keys = j.keys();
    const auto& vals = j.values();
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string& name = keys[k];
      const Json& v = vals[k];
      if (name == "__metadata__") {
        if (!v.is_object()) throw bad("\"__metadata__\" is not an object");
        for (size_t m = 0; m < v.keys().size(); ++m) {
          if (!v.values()[m].is_string())
            throw bad(str_cat("metadata \"", v.keys()[m], "\" is not a string"));
          metadata_[v.keys()[m]] = v.values()[m].as_string();
        }
        continue;
      }
      if (index_.count(name)) throw bad(str_cat("tensor \"", name, "\" appears twice"));
      auto field = [&](const char* f) -> const Json& {
        const Json* p = v.is_object() ? v.find(f) : nullptr;
        if (!p) throw bad(str_cat("tensor \"", name, "\" has no \"", f, "\""));
        return *p;
      };
      TensorInfo ti;
      ti.name = name;
      const Json& dt = field("dtype");
      if (!dt.is_string()) throw bad(str_cat("tensor \"", name, "\": dtype is not a string"));
      ti.dtype_str = dt.as_string();
      const DTypeEntry* e = find_dtype(ti.dtype_str);
      if (!e)
        throw bad(str_cat("tensor \"", name, "\" has unknown dtype \"", ti.dtype_str,
                          "\" (known: ", known_dtypes(), ")"));
      ti.dtype = e->dtype;
      ti.loadable = e->loadable;
      const Json& sh = field("shape");
      if (!sh.is_array()) throw bad(str_cat("tensor \"", name, "\": shape is not an array"));
      uint64_t numel = 1;
      for (const Json& d : sh.items()) {
        if (!d.is_int() || d.as_int() < 0)
          throw bad(str_cat("tensor \"", name, "\": shape has a non-integer or negative entry"));
        ti.shape.push_back(d.as_int());
        const uint64_t dd = static_cast<uint64_t>(d.as_int());
        if (dd && numel > UINT64_MAX / dd) throw bad(str_cat("tensor \"", name, "\": shape overflows"));
        numel *= dd;
      }
      const Json& off = field("data_offsets");
      if (!off.is_array() || off.size() != 2 || !off[0].is_int() || !off[1].is_int() ||
          off[0].as_int() < 0 || off[1].as_int() < off[0].as_int())
        throw bad(str_cat("tensor \"", name, "\": data_offsets must be [begin, end] with 0 <= begin <= end"));
      ti.begin = static_cast<uint64_t>(off[0].as_int());
      ti.end = static_cast<uint64_t>(off[1].as_int());
      if (ti.end > data_size)
        throw bad(str_cat("tensor \"", name, "\" ends at byte ", ti.end,
                          " of the data buffer but the buffer has only ", data_size,
                          " bytes (truncated file?)"));
      if (numel > UINT64_MAX / e->size || ti.end - ti.begin != numel * e->size)
        throw bad(str_cat("tensor \"", name, "\": shape ", shape_str(ti.shape), " of ", ti.dtype_str,
                          " needs ", numel * e->size, " bytes but data_offsets span ",
                          ti.end - ti.begin));
      index_[name] = infos_.size();
      infos_.push_back(std::move(ti));
    }
    // Non-overlapping: sort the spans and compare neighbours (empty tensors overlap nothing).
    std::vector<const TensorInfo*> order;
    for (const auto& ti : infos_)
      if (ti.end > ti.begin) order.push_back(&ti);
    std::sort(order.begin(), order.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < order.size(); ++i)
      if (order[i]->begin < order[i - 1]->end)
        throw bad(str_cat("tensors \"", order[i - 1]->name, "\" [", order[i - 1]->begin, ", ",
                          order[i - 1]->end, ") and \"", order[i]->name, "\" [", order[i]->begin,
                          ", ", order[i]->end, ") overlap"));
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept { *this = std::move(o); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_size_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_size_ = o.map_size_;
    data_ = o.data_;
    infos_ = std::move(o.infos_);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.data_ = nullptr;
  }
  return *this;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> r;
  for (const auto& ti : infos_) r.push_back(ti.name);
  return r;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  LZ_INPUT_CHECK(it != index_.end(), path_, ": no tensor named \"", name, "\"");
  return infos_[it->second];
}

const void* SafetensorsFile::data(const std::string& name) const {
  return data_ + info(name).begin;
}

Tensor SafetensorsFile::load(const std::string& name, Device device) const {
  return load(name, device, info(name).dtype);
}

Tensor SafetensorsFile::load(const std::string& name, Device device, DType dtype) const {
  const TensorInfo& ti = info(name);
  LZ_INPUT_CHECK(ti.loadable, path_, ": tensor \"", name, "\" has dtype ", ti.dtype_str,
                 ", which lizard cannot load (supported: F32, BF16, F16, I32, I64, F64, U8)");
  Tensor host = Tensor::empty(ti.shape, ti.dtype);
  if (ti.end > ti.begin) std::memcpy(host.raw(), data_ + ti.begin, ti.end - ti.begin);
  if (dtype == ti.dtype && device.is_cpu()) return host;
  return host.to(device, dtype);
}

// ---------------------------------------------------------------- checkpoints

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) : source_(path) {
  fs::path p(path);
  std::error_code ec;
  fs::path index_path;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors.index.json")) {
      index_path = p / "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      p = p / "model.safetensors";
    } else {
      throw InputError(str_cat(path, ": no model.safetensors or model.safetensors.index.json in "
                                     "this directory"));
    }
  } else if (p.string().size() >= 5 && p.string().substr(p.string().size() - 5) == ".json") {
    index_path = p;
  }
  if (!index_path.empty()) {
    const Json idx = load_json_file(index_path.string());
    const Json* wm = idx.find("weight_map");
    LZ_INPUT_CHECK(wm && wm->is_object(), index_path.string(),
                   ": expected an object \"weight_map\" (tensor name -> shard file)");
    const fs::path dir = index_path.parent_path();
    for (size_t i = 0; i < wm->keys().size(); ++i) {
      const Json& f = wm->values()[i];
      LZ_INPUT_CHECK(f.is_string(), index_path.string(), ": weight_map[\"", wm->keys()[i],
                     "\"] is not a file name");
      shard_of_[wm->keys()[i]] = (dir / f.as_string()).string();
    }
    source_ = index_path.string();
    return;
  }
  auto file = std::make_unique<SafetensorsFile>(p.string());
  for (const auto& n : file->names()) shard_of_[n] = p.string();
  source_ = p.string();
  files_[p.string()] = std::move(file);
}

const SafetensorsFile& SafetensorsCheckpoint::shard(const std::string& name) const {
  auto it = shard_of_.find(name);
  LZ_INPUT_CHECK(it != shard_of_.end(), source_, ": no tensor named \"", name, "\"");
  auto& f = files_[it->second];
  if (!f) f = std::make_unique<SafetensorsFile>(it->second);
  LZ_INPUT_CHECK(f->contains(name), source_, ": the index maps \"", name, "\" to ", it->second,
                 ", which does not contain it");
  return *f;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> r;
  for (const auto& kv : shard_of_) r.push_back(kv.first);
  return r;
}

const TensorInfo& SafetensorsCheckpoint::info(const std::string& name) const {
  return shard(name).info(name);
}

Tensor SafetensorsCheckpoint::load(const std::string& name, Device device) const {
  return shard(name).load(name, device);
}

Tensor SafetensorsCheckpoint::load(const std::string& name, Device device, DType dtype) const {
  return shard(name).load(name, device, dtype);
}

void SafetensorsCheckpoint::check(const std::map<std::string, Shape>& expected,
                                  bool allow_unexpected) const {
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& kv : expected) {
    if (!contains(kv.first)) {
      missing.push_back(kv.first);
      continue;
    }
    const Shape& got = info(kv.first).shape;
    if (got != kv.second)
      misshaped.push_back(str_cat(kv.first, " (expected ", shape_str(kv.second), ", file has ",
                                  shape_str(got), ")"));
  }
  if (!allow_unexpected)
    for (const auto& kv : shard_of_)
      if (!expected.count(kv.first)) unexpected.push_back(kv.first);
  if (missing.empty() && unexpected.empty() && misshaped.empty()) return;
  std::string msg = str_cat(source_, ": checkpoint does not match the model:");
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    msg += str_cat("\n  ", v.size(), " ", what, ":");
    for (const auto& s : v) msg += "\n    " + s;
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("with the wrong shape", misshaped);
  throw InputError(msg);
}

std::map<std::string, Tensor> SafetensorsCheckpoint::load_all(
    const std::map<std::string, Shape>& expected, Device device, DType dtype,
    bool allow_unexpected) const {
  check(expected, allow_unexpected);
  std::map<std::string, Tensor> out;
  for (const auto& kv : expected) out[kv.first] = load(kv.first, device, dtype);
  return out;
}

// ---------------------------------------------------------------- writer

namespace {

void write_all(std::FILE* f, const void* p, size_t n, const std::string& path) {
  if (n && std::fwrite(p, 1, n, f) != n)
    throw Error(str_cat(path, ": write failed (", std::strerror(errno), ")"));
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  Json header = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& kv : metadata) m.set(kv.first, kv.second);
    header.set("__metadata__", m);
  }
  std::map<std::string, int> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    LZ_INPUT_CHECK(!name.empty() && name != "__metadata__", path,
                   ": invalid tensor name \"", name, "\"");
    LZ_INPUT_CHECK(seen[name]++ == 0, path, ": tensor \"", name, "\" given twice");
    LZ_INPUT_CHECK(t.defined(), path, ": tensor \"", name, "\" is undefined");
    Tensor h = t.device().is_cpu() ? t.contiguous() : t.to(Device::cpu()).contiguous();
    Json e = Json::object();
    e.set("dtype", safetensors_dtype_name(h.dtype()));
    Json shape = Json::array();
    for (int64_t d : h.shape()) shape.push_back(d);
    e.set("shape", shape);
    e.set("data_offsets", Json::array({Json(offset), Json(offset + h.nbytes())}));
    offset += h.nbytes();
    header.set(name, e);
    host.push_back(h);
  }
  std::string hs = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned (valid JSON whitespace).
  while ((8 + hs.size()) % 8) hs += ' ';
  const uint64_t n = hs.size();

  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  const std::string tmp = str_cat(path, ".tmp-", ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  LZ_INPUT_CHECK(f, tmp, ": cannot create (", std::strerror(errno), ")");
  try {
    write_all(f, &n, 8, tmp);
    write_all(f, hs.data(), hs.size(), tmp);
    for (const Tensor& h : host) write_all(f, h.raw(), h.nbytes(), tmp);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      throw Error(str_cat(tmp, ": flush failed (", std::strerror(errno), ")"));
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    throw Error(str_cat(tmp, ": close failed (", std::strerror(errno), ")"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(str_cat(path, ": rename from ", tmp, " failed (", std::strerror(err), ")"));
  }
}

std::vector<std::string> write_safetensors_sharded(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    size_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  fs::create_directories(dir);
  // Greedy packing in the given order; a tensor larger than the limit gets its own shard.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  size_t cur = 0, total = 0;
  for (const auto& nt : tensors) {
    const size_t b = nt.second.nbytes();
    if (cur > 0 && cur + b > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(nt);
    cur += b;
    total += b;
  }
  std::vector<std::string> written;
  if (shards.size() == 1) {
    const std::string p = (fs::path(dir) / "model.safetensors").string();
    write_safetensors(p, tensors, metadata);
    return {p};
  }
  Json weight_map = Json::object();
  char buf[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    const std::string p = (fs::path(dir) / buf).string();
    write_safetensors(p, shards[i], metadata);
    for (const auto& nt : shards[i]) weight_map.set(nt.first, std::string(buf));
    written.push_back(p);
  }
  Json index = Json::object();
  Json meta = Json::object();
  meta.set("total_size", static_cast<int64_t>(total));
  index.set("metadata", meta);
  index.set("weight_map", weight_map);
  // The index goes last, through a temp file too: it is what makes the shards a checkpoint.
  const std::string ip = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string tmp = str_cat(ip, ".tmp-", ::getpid());
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    LZ_INPUT_CHECK(f, tmp, ": cannot create (", std::strerror(errno), ")");
    const std::string s = index.dump(2) + "\n";
    const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size();
    if (std::fclose(f) != 0 || !ok) {
      std::remove(tmp.c_str());
      throw Error(str_cat(tmp, ": write failed"));
    }
  }
  if (std::rename(tmp.c_str(), ip.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(str_cat(ip, ": rename failed (", std::strerror(errno), ")"));
  }
  written.push_back(ip);
  return written;
}

}  // namespace lizard::io
