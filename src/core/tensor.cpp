#include "lizard/core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "lizard/core/cuda_runtime.h"
#include "lizard/core/dispatch.h"
#include "lizard/core/rng.h"
#include "lizard/cuda/copy.h"

namespace lizard {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

namespace {

int64_t wrap_dim(int64_t d, int64_t ndim, const char* what) {
  int64_t r = d < 0 ? d + ndim : d;
  LZ_CHECK(r >= 0 && r < ndim, what, ": dim ", d, " out of range for ", ndim, " dims");
  return r;
}

// Calls f(src_offset, dst_offset) for every index of `shape` (element offsets).
template <class F>
void for_each_offset2(const Shape& shape, const Shape& sa, const Shape& sb, F&& f) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (nd == 0) {
    f(0, 0);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  int64_t oa = 0, ob = 0;
  const int64_t last = nd - 1;
  for (int64_t k = 0; k < n;) {
    // inner loop over the last dim
    for (int64_t i = 0; i < shape[last]; ++i, ++k) f(oa + i * sa[last], ob + i * sb[last]);
    // carry
    int64_t d = last - 1;
    for (; d >= 0; --d) {
      ++idx[d];
      oa += sa[d];
      ob += sb[d];
      if (idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) break;
  }
}

// CPU strided copy with conversion.
void cpu_copy(const Tensor& src, Tensor& dst) {
  visit_dtype(src.dtype(), [&](auto s0) {
    using S = decltype(s0);
    visit_dtype(dst.dtype(), [&](auto d0) {
      using D = decltype(d0);
      const S* sp = static_cast<const S*>(src.raw());
      D* dp = static_cast<D*>(dst.raw());
      if constexpr (std::is_same_v<S, D>) {
        if (src.is_contiguous() && dst.is_contiguous()) {
          std::memcpy(dp, sp, src.nbytes());
          return;
        }
        for_each_offset2(src.shape(), src.strides(), dst.strides(),
                         [&](int64_t a, int64_t b) { dp[b] = sp[a]; });
      } else {
        for_each_offset2(src.shape(), src.strides(), dst.strides(),
                         [&](int64_t a, int64_t b) { dp[b] = from_double<D>(to_double(sp[a])); });
      }
    });
  });
}

[[maybe_unused]] cuda::StridedLayout make_layout(const Tensor& src, const Tensor& dst) {
  LZ_CHECK(src.dim() <= cuda::kMaxDims, "copy: more than ", cuda::kMaxDims, " dims");
  cuda::StridedLayout l;
  l.ndim = static_cast<int>(src.dim());
  for (int i = 0; i < l.ndim; ++i) {
    l.shape[i] = src.shape()[i];
    l.src_stride[i] = src.strides()[i];
    l.dst_stride[i] = dst.strides()[i];
  }
  return l;
}

}  // namespace

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "size")]; }

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

std::string Tensor::desc() const {
  if (!defined()) return "Tensor(undefined)";
  return str_cat("Tensor", shape_str(shape_), " ", dtype_name(dtype_), " ", device().str());
}

void* Tensor::raw() const {
  LZ_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LZ_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype),
                                         device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  LZ_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
           values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(t.raw());
    for (size_t i = 0; i < values.size(); ++i) p[i] = from_double<T>(values[i]);
  });
  return t;
}

namespace {
Tensor rng_tensor(const Shape& shape, bool normal, double a, double b, uint64_t seed,
                  uint64_t offset, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  const int64_t n = t.numel();
  if (device.is_cuda()) {
    LZ_CUDA_ONLY(cuda::rng_fill(t.raw(), dtype, n, normal, a, b, seed, offset,
                                cuda::context(device.index).stream));
    return t;
  }
  visit_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(t.raw());
    for (int64_t i = 0; i < n; ++i) {
      float r = normal ? static_cast<float>(a) + static_cast<float>(b) * rng_normal(seed, offset, i)
                       : static_cast<float>(a) +
                             static_cast<float>(b - a) * rng_uniform(seed, offset, i);
      p[i] = from_double<T>(r);
    }
  });
  return t;
}
}  // namespace

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, uint64_t seed, uint64_t offset,
                       DType dtype, Device device) {
  return rng_tensor(shape, false, lo, hi, seed, offset, dtype, device);
}

Tensor Tensor::normal(const Shape& shape, double mean, double std, uint64_t seed, uint64_t offset,
                      DType dtype, Device device) {
  return rng_tensor(shape, true, mean, std, seed, offset, dtype, device);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), 0.0);
  return from_vector(v, {n}, dtype).to(device);
}

Tensor Tensor::view(const Shape& shape_in) const {
  LZ_CHECK(is_contiguous(), "view ", shape_str(shape_in), " of a non-contiguous ", desc(),
           " (use reshape)");
  Shape shape = shape_in;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LZ_CHECK(infer < 0, "view: two -1 dims in ", shape_str(shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    LZ_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in ", shape_str(shape_in),
             " for ", desc());
    shape[infer] = numel() / known;
  }
  LZ_CHECK(shape_numel(shape) == numel(), "view: shape ", shape_str(shape_in), " does not match ",
           desc());
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  const int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  LZ_CHECK(step >= 1, "slice: step must be >= 1");
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] *= step;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += shape_[d];
  LZ_CHECK(index >= 0 && index < shape_[d], "select: index ", index, " out of range for dim ", d,
           " of ", desc());
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  LZ_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(), " dims for ",
           desc());
  std::vector<bool> seen(dim(), false);
  Tensor t = *this;
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    LZ_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Tensor t = *this;
  int64_t st = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, st);
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  LZ_CHECK(shape_[d] == 1, "squeeze: dim ", d, " of ", desc(), " is not 1");
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  LZ_CHECK(static_cast<int64_t>(shape.size()) >= dim(), "expand: ", desc(), " to ",
           shape_str(shape));
  Tensor t = *this;
  const size_t lead = shape.size() - shape_.size();
  t.shape_ = shape;
  t.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (shape_[i] == shape[lead + i]) {
      t.strides_[lead + i] = strides_[i];
    } else {
      LZ_CHECK(shape_[i] == 1, "expand: ", desc(), " to ", shape_str(shape));
    }
  }
  return t;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_(*this);
  return t;
}

Tensor Tensor::to(Device d) const { return to(d, dtype_); }
Tensor Tensor::to(DType t) const { return to(device(), t); }
Tensor Tensor::to(Device d, DType t) const {
  if (d == device() && t == dtype_) return *this;
  Tensor r = empty(shape_, t, d);
  r.copy_(*this);
  return r;
}

void Tensor::copy_(const Tensor& src) {
  LZ_CHECK(src.shape() == shape_, "copy_: source ", src.desc(), " into ", desc());
  if (numel() == 0) return;
  const Device sd = src.device(), dd = device();
  if (sd.is_cpu() && dd.is_cpu()) {
    cpu_copy(src, *this);
    return;
  }
  if (sd.is_cuda() && dd.is_cuda()) {
    LZ_CHECK(sd.index == dd.index, "copy_ between GPUs ", sd.str(), " and ", dd.str(),
             " is not supported");
    if (src.dtype() == dtype_ && src.is_contiguous() && is_contiguous()) {
      cuda::memcpy_d2d(raw(), src.raw(), nbytes(), dd.index);
      return;
    }
    LZ_CUDA_ONLY(cuda::strided_copy(src.raw(), src.dtype(), raw(), dtype_,
                                    make_layout(src, *this), numel(),
                                    cuda::context(dd.index).stream));
    return;
  }
  if (sd.is_cpu()) {  // host -> device: convert on the host, then one transfer
    Tensor staged = (src.dtype() == dtype_ && src.is_contiguous()) ? src : src.to(dtype_).contiguous();
    if (is_contiguous()) {
      cuda::memcpy_h2d(raw(), staged.raw(), nbytes(), dd.index);
    } else {
      Tensor tmp = empty(shape_, dtype_, dd);
      cuda::memcpy_h2d(tmp.raw(), staged.raw(), nbytes(), dd.index);
      copy_(tmp);
    }
    return;
  }
  // device -> host: make contiguous on the device, one transfer, convert on the host
  Tensor staged = src.contiguous();
  if (dtype_ == src.dtype() && is_contiguous()) {
    cuda::memcpy_d2h(raw(), staged.raw(), nbytes(), sd.index);
  } else {
    Tensor tmp = empty(shape_, src.dtype());
    cuda::memcpy_d2h(tmp.raw(), staged.raw(), tmp.nbytes(), sd.index);
    copy_(tmp);
  }
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  if (is_cuda()) {
    if (is_contiguous()) {
      LZ_CUDA_ONLY(cuda::fill(raw(), dtype_, numel(), value, cuda::context(device().index).stream));
    } else {
      copy_(full(shape_, value, dtype_, device()));
    }
    return;
  }
  visit_dtype(dtype_, [&](auto z) {
    using T = decltype(z);
    T v = from_double<T>(value);
    T* p = static_cast<T*>(raw());
    for_each_offset2(shape_, strides_, strides_, [&](int64_t a, int64_t) { p[a] = v; });
  });
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).contiguous();
  std::vector<double> out(static_cast<size_t>(c.numel()));
  visit_dtype(c.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* p = static_cast<const T*>(c.raw());
    for (size_t i = 0; i < out.size(); ++i) out[i] = to_double(p[i]);
  });
  return out;
}

std::vector<float> Tensor::to_float_vector() const {
  Tensor c = to(Device::cpu(), DType::F32).contiguous();
  const float* p = c.data<float>();
  return std::vector<float>(p, p + c.numel());
}

double Tensor::item() const {
  LZ_CHECK(numel() == 1, "item() on ", desc());
  return to_vector()[0];
}

}  // namespace lizard
