// HDF5 file wrapper (see include/lizard/io/hdf5_file.h).
#include "lizard/io/hdf5_file.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "lizard/core/error.h"

namespace lizard::io {

namespace {

/// Closes an HDF5 handle at scope exit.
struct Handle {
  hid_t id;
  herr_t (*closer)(hid_t);
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), closer(c) {}
  ~Handle() {
    if (id >= 0) closer(id);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
};

/// The library's automatic error printing is replaced by our exceptions.
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

hid_t native_type(DType t) {
  switch (t) {
    case DType::F32: return H5T_NATIVE_FLOAT;
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
    case DType::U8: return H5T_NATIVE_UINT8;
    case DType::BF16:
    case DType::F16: return H5T_NATIVE_UINT16;
  }
  return -1;
}

/// The dtype of a stored dataset from its HDF5 type (and our "dtype" tag for 16-bit floats).
DType stored_dtype(hid_t ds, const std::string& file, const std::string& name) {
  Handle type(H5Dget_type(ds), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.id);
  const size_t size = H5Tget_size(type.id);
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_FLOAT && size == 8) return DType::F64;
  if (cls == H5T_INTEGER) {
    const H5T_sign_t sign = H5Tget_sign(type.id);
    if (size == 4 && sign == H5T_SGN_2) return DType::I32;
    if (size == 8 && sign == H5T_SGN_2) return DType::I64;
    if (size == 1 && sign == H5T_SGN_NONE) return DType::U8;
    if (size == 2 && sign == H5T_SGN_NONE && H5Aexists(ds, "dtype") > 0) {
      Handle a(H5Aopen(ds, "dtype", H5P_DEFAULT), H5Aclose);
      Handle at(H5Aget_type(a.id), H5Tclose);
      std::string s(H5Tget_size(at.id), '\0');
      H5Aread(a.id, at.id, s.data());
      s.resize(std::strlen(s.c_str()));
      if (s == "bf16") return DType::BF16;
      if (s == "f16") return DType::F16;
    }
  }
  throw InputError(str_cat("hdf5 file ", file, ": dataset '", name,
                           "' has an unsupported element type"));
}

void write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.id, std::max<size_t>(value.size(), 1));
  H5Tset_strpad(type.id, H5T_STR_NULLPAD);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, name.c_str(), type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  LZ_CHECK(a.id >= 0, "hdf5: cannot create attribute ", name);
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  LZ_CHECK(H5Awrite(a.id, type.id, buf.data()) >= 0, "hdf5: cannot write attribute ", name);
}

}  // namespace

H5File H5File::create(const std::string& path) {
  silence_hdf5();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  LZ_INPUT_CHECK(id >= 0, "hdf5 file ", path, ": cannot create (directory missing or not writable?)");
  return H5File(id, path);
}

H5File H5File::open(const std::string& path) {
  silence_hdf5();
  LZ_INPUT_CHECK(std::filesystem::exists(path), "hdf5 file ", path, ": not found");
  LZ_INPUT_CHECK(H5Fis_hdf5(path.c_str()) > 0, "hdf5 file ", path,
                 ": not an HDF5 file (corrupt or truncated?)");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  LZ_INPUT_CHECK(id >= 0, "hdf5 file ", path, ": cannot open (corrupt or truncated?)");
  return H5File(id, path);
}

H5File::H5File(H5File&& o) noexcept : id_(o.id_), path_(std::move(o.path_)) { o.id_ = -1; }

H5File& H5File::operator=(H5File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = o.id_;
    path_ = std::move(o.path_);
    o.id_ = -1;
  }
  return *this;
}

H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

void H5File::close() {
  if (id_ < 0) return;
  const herr_t f = H5Fflush(id_, H5F_SCOPE_GLOBAL);
  const herr_t c = H5Fclose(id_);
  id_ = -1;
  LZ_CHECK(f >= 0 && c >= 0, "hdf5 file ", path_, ": flush/close failed (disk full?)");
}

void H5File::write(const std::string& name, const Tensor& t) {
  LZ_CHECK(id_ >= 0, "hdf5 file ", path_, ": closed");
  Tensor c = t.to(Device::cpu()).contiguous();
  std::vector<hsize_t> dims(c.shape().begin(), c.shape().end());
  Handle space(c.dim() == 0 ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.id, 1);
  const hid_t type = native_type(c.dtype());
  Handle ds(H5Dcreate2(id_, name.c_str(), type, space.id, lcpl.id, H5P_DEFAULT, H5P_DEFAULT),
            H5Dclose);
  LZ_CHECK(ds.id >= 0, "hdf5 file ", path_, ": cannot create dataset '", name, "'");
  if (c.numel() > 0)
    LZ_CHECK(H5Dwrite(ds.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.raw()) >= 0, "hdf5 file ",
             path_, ": cannot write dataset '", name, "'");
  if (c.dtype() == DType::BF16 || c.dtype() == DType::F16)
    write_string_attr(ds.id, "dtype", dtype_name(c.dtype()));
}

bool H5File::has(const std::string& name) const {
  // H5Lexists fails on a missing intermediate group, so walk the path.
  size_t pos = 0;
  while (true) {
    const size_t slash = name.find('/', pos);
    const std::string prefix = name.substr(0, slash);
    if (H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  Handle obj(H5Oopen(id_, name.c_str(), H5P_DEFAULT), H5Oclose);
  return obj.id >= 0 && H5Iget_type(obj.id) == H5I_DATASET;
}

Shape H5File::shape_of(const std::string& name) const {
  LZ_INPUT_CHECK(has(name), "hdf5 file ", path_, ": dataset '", name, "' is missing");
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  Handle space(H5Dget_space(ds.id), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> dims(std::max(nd, 0));
  if (nd > 0) H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return Shape(dims.begin(), dims.end());
}

Tensor H5File::read(const std::string& name) const {
  const Shape shape = shape_of(name);
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  const DType dt = stored_dtype(ds.id, path_, name);
  // A corrupt or hostile file can declare billions of elements it does not store (HDF5 would
  // return fill values): contiguous storage (what lizard writes) must hold every element
  // before anything is allocated for them.
  uint64_t need = dtype_size(dt);
  for (int64_t d : shape) {
    LZ_INPUT_CHECK(d == 0 || need <= UINT64_MAX / static_cast<uint64_t>(d), "hdf5 file ", path_,
                   ": dataset '", name, "' has an impossible shape ", shape_str(shape));
    need *= static_cast<uint64_t>(d);
  }
  Handle dcpl(H5Dget_create_plist(ds.id), H5Pclose);
  if (dcpl.id >= 0 && H5Pget_layout(dcpl.id) == H5D_CONTIGUOUS) {
    const uint64_t stored = H5Dget_storage_size(ds.id);
    LZ_INPUT_CHECK(stored >= need, "hdf5 file ", path_, ": dataset '", name, "' of shape ",
                   shape_str(shape), " needs ", need, " bytes but the file stores ", stored,
                   " (corrupt or truncated?)");
  }
  Tensor t = Tensor::empty(shape, dt);
  if (t.numel() > 0)
    LZ_INPUT_CHECK(H5Dread(ds.id, native_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) >= 0,
                   "hdf5 file ", path_, ": cannot read dataset '", name, "' (corrupt?)");
  return t;
}

Tensor H5File::read_range(const std::string& name, int64_t start, int64_t count) const {
  const Shape shape = shape_of(name);
  LZ_CHECK(shape.size() == 1, "read_range: dataset '", name, "' is not 1-D");
  LZ_CHECK(start >= 0 && count >= 0 && start + count <= shape[0], "read_range: [", start, ", ",
           start + count, ") outside dataset '", name, "' of ", shape[0], " elements");
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  const DType dt = stored_dtype(ds.id, path_, name);
  Tensor t = Tensor::empty({count}, dt);
  if (count == 0) return t;
  Handle fspace(H5Dget_space(ds.id), H5Sclose);
  const hsize_t off = static_cast<hsize_t>(start), cnt = static_cast<hsize_t>(count);
  H5Sselect_hyperslab(fspace.id, H5S_SELECT_SET, &off, nullptr, &cnt, nullptr);
  Handle mspace(H5Screate_simple(1, &cnt, nullptr), H5Sclose);
  LZ_INPUT_CHECK(H5Dread(ds.id, native_type(dt), mspace.id, fspace.id, H5P_DEFAULT, t.raw()) >= 0,
                 "hdf5 file ", path_, ": cannot read dataset '", name, "' (corrupt?)");
  return t;
}

namespace {
#if H5_VERSION_GE(1, 12, 0)
using LinkInfo = H5L_info2_t;
#else
using LinkInfo = H5L_info_t;
#endif
herr_t collect_dataset(hid_t group, const char* name, const LinkInfo*, void* out) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  if (H5Oget_info_by_name3(group, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return 0;
#else
  H5O_info_t info;
  if (H5Oget_info_by_name2(group, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return 0;
#endif
  if (info.type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> H5File::datasets() const {
  std::vector<std::string> out;
  H5Lvisit(id_, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &out);
  std::sort(out.begin(), out.end());
  return out;
}

void H5File::set_attr(const std::string& name, const std::string& value) {
  write_string_attr(id_, name, value);
}

void H5File::set_attr(const std::string& name, int64_t value) {
  if (H5Aexists(id_, name.c_str()) > 0) H5Adelete(id_, name.c_str());
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(id_, name.c_str(), H5T_NATIVE_INT64, space.id, H5P_DEFAULT, H5P_DEFAULT),
           H5Aclose);
  LZ_CHECK(a.id >= 0 && H5Awrite(a.id, H5T_NATIVE_INT64, &value) >= 0, "hdf5 file ", path_,
           ": cannot write attribute ", name);
}

bool H5File::has_attr(const std::string& name) const { return H5Aexists(id_, name.c_str()) > 0; }

std::string H5File::attr_string(const std::string& name) const {
  LZ_INPUT_CHECK(has_attr(name), "hdf5 file ", path_, ": attribute '", name, "' is missing");
  Handle a(H5Aopen(id_, name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(a.id), H5Tclose);
  LZ_INPUT_CHECK(H5Tget_class(type.id) == H5T_STRING, "hdf5 file ", path_, ": attribute '", name,
                 "' is not a string");
  LZ_INPUT_CHECK(H5Tis_variable_str(type.id) <= 0, "hdf5 file ", path_, ": attribute '", name,
                 "' is a variable-length string (not written by lizard)");
  std::string s(H5Tget_size(type.id), '\0');
  H5Aread(a.id, type.id, s.data());
  s.resize(std::strlen(s.c_str()));
  return s;
}

int64_t H5File::attr_int(const std::string& name) const {
  LZ_INPUT_CHECK(has_attr(name), "hdf5 file ", path_, ": attribute '", name, "' is missing");
  Handle a(H5Aopen(id_, name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(a.id), H5Tclose);
  LZ_INPUT_CHECK(H5Tget_class(type.id) == H5T_INTEGER, "hdf5 file ", path_, ": attribute '", name,
                 "' is not an integer");
  int64_t v = 0;
  H5Aread(a.id, H5T_NATIVE_INT64, &v);
  return v;
}

}  // namespace lizard::io
