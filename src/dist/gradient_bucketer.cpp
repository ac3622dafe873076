// GradientBucketer: bucket assignment, flatten/launch/scatter.
#include "lizard/dist/gradient_bucketer.h"

#include <exception>

#include "lizard/core/error.h"
#include "lizard/ops/elementwise.h"

namespace lizard::dist {

namespace {

// The buffer dtype of a parameter's bucket: its own where the communicator reduces it natively,
// else f32 (CPU ops have no bf16/f16 arithmetic; the MPI path sums bf16 in f32 anyway).
DType buffer_dtype(const autograd::Var& p) {
  const DType d = p.dtype();
  if (d == DType::F64) return DType::F64;
  if (d == DType::BF16 && p.device().is_cuda()) return DType::BF16;
  LZ_CHECK(dtype_is_float(d), "GradientBucketer: parameter '", p.name(), "' has dtype ",
           dtype_name(d), "; only floating-point parameters have gradients");
  return DType::F32;
}

}  // namespace

GradientBucketer::GradientBucketer(Communicator& comm, std::vector<autograd::Var> params,
                                   size_t bucket_bytes)
    : comm_(comm) {
  LZ_CHECK(bucket_bytes > 0, "GradientBucketer: bucket_bytes must be positive");
  for (auto& p : params) {
    LZ_CHECK(p.defined(), "GradientBucketer: undefined parameter");
    if (!p.requires_grad()) continue;
    LZ_CHECK(p.is_leaf(), "GradientBucketer: '", p.name(), "' is not a leaf");
    LZ_CHECK(p.device() == comm.device(), "GradientBucketer: parameter '", p.name(), "' is on ",
             p.device().str(), " but the ", comm.backend(), " communicator reduces on ",
             comm.device().str());
    params_.push_back(p);
  }
  bucket_of_.assign(params_.size(), 0);
  marked_.assign(params_.size(), false);
  // Reverse registration order: backward finishes the last parameters first.
  size_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const DType d = buffer_dtype(params_[k]);
    const size_t pbytes = static_cast<size_t>(params_[k].data().numel()) * dtype_size(d);
    const bool fresh = buckets_.empty() || buckets_.back().dtype != d ||
                       (bytes > 0 && bytes + pbytes > bucket_bytes);
    if (fresh) {
      buckets_.emplace_back();
      buckets_.back().dtype = d;
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += params_[k].data().numel();
    bytes += pbytes;
    bucket_of_[k] = buckets_.size() - 1;
  }
}

GradientBucketer::~GradientBucketer() {
  // An in-flight all-reduce still writes into a bucket buffer: order its end before the
  // buffers go back to the allocator. Not while an exception unwinds: the caller is ending
  // the job (abort_job), and waiting could block on a peer until the timeout.
  if (std::uncaught_exceptions() > 0) return;
  for (auto& b : buckets_)
    if (b.work) b.work->wait();
}

const std::vector<size_t>& GradientBucketer::bucket_params(size_t b) const {
  LZ_CHECK(b < buckets_.size(), "bucket ", b, " of ", buckets_.size());
  return buckets_[b].params;
}
int64_t GradientBucketer::bucket_numel(size_t b) const {
  LZ_CHECK(b < buckets_.size(), "bucket ", b, " of ", buckets_.size());
  return buckets_[b].numel;
}
DType GradientBucketer::bucket_dtype(size_t b) const {
  LZ_CHECK(b < buckets_.size(), "bucket ", b, " of ", buckets_.size());
  return buckets_[b].dtype;
}

namespace {

// True when `g` is the very slice `part` of a bucket buffer (a gradient view made by
// attach_grad_views): the data already sits in the buffer, nothing to copy either way.
bool same_memory(const Tensor& g, const Tensor& part) {
  return g.defined() && g.dtype() == part.dtype() && g.numel() == part.numel() &&
         g.is_contiguous() && g.device() == part.device() && g.raw() == part.raw();
}

}  // namespace

Tensor& GradientBucketer::buffer(Bucket& bk) {
  if (!bk.flat.defined()) bk.flat = Tensor::empty({bk.numel}, bk.dtype, comm_.device());
  return bk.flat;
}

size_t GradientBucketer::attach_grad_views() {
  size_t attached = 0;
  for (Bucket& bk : buckets_) {
    LZ_CHECK(!bk.work, "GradientBucketer::attach_grad_views: a bucket's all-reduce is in flight");
    bool any = false;
    for (size_t i : bk.params)
      any = any || (params_[i].dtype() == bk.dtype && !params_[i].grad().defined());
    if (!any) continue;
    // One fill per bucket: the first backward then adds into zeros (0 + g == g exactly).
    Tensor& flat = buffer(bk);
    flat.fill_(0.0);
    for (size_t j = 0; j < bk.params.size(); ++j) {
      autograd::Var& p = params_[bk.params[j]];
      if (p.dtype() != bk.dtype || p.grad().defined()) continue;
      const int64_t n = p.data().numel();
      p.set_grad(flat.slice(0, bk.offsets[j], bk.offsets[j] + n).view(p.shape()));
      ++attached;
    }
  }
  return attached;
}

Tensor GradientBucketer::flatten(size_t b) {
  LZ_CHECK(b < buckets_.size(), "flatten: bucket ", b, " of ", buckets_.size());
  Bucket& bk = buckets_[b];
  Tensor& flat = buffer(bk);
  for (size_t j = 0; j < bk.params.size(); ++j) {
    const autograd::Var& p = params_[bk.params[j]];
    const int64_t n = p.data().numel();
    Tensor dst = flat.slice(0, bk.offsets[j], bk.offsets[j] + n);
    const Tensor& g = p.grad();
    if (!g.defined()) {
      dst.fill_(0.0);
      continue;
    }
    LZ_CHECK(g.shape() == p.shape(), "GradientBucketer: gradient of '", p.name(), "' is ",
             g.desc(), ", expected shape ", shape_str(p.shape()));
    if (same_memory(g, dst)) continue;  // a gradient view: backward wrote it in place
    dst.copy_(g.reshape({n}));
  }
  return flat;
}

void GradientBucketer::unflatten(size_t b, const Tensor& flat, double scale) {
  LZ_CHECK(b < buckets_.size(), "unflatten: bucket ", b, " of ", buckets_.size());
  Bucket& bk = buckets_[b];
  LZ_CHECK(flat.shape() == Shape{bk.numel}, "unflatten: buffer ", flat.desc(),
           " for a bucket of ", bk.numel, " elements");
  // One pass over the whole buffer for the scale, in the buffer's precision (fp32 math on GPU).
  Tensor src = scale == 1.0 ? flat : ops::affine(flat, scale);
  for (size_t j = 0; j < bk.params.size(); ++j) {
    autograd::Var& p = params_[bk.params[j]];
    const int64_t n = p.data().numel();
    Tensor part = src.slice(0, bk.offsets[j], bk.offsets[j] + n).view(p.shape());
    if (same_memory(p.grad(), part)) continue;  // a gradient view of `flat` at scale 1
    if (p.grad().defined() && p.grad().is_contiguous()) {
      Tensor g = p.grad();
      g.copy_(part);
    } else {
      p.set_grad(part.to(p.dtype()).contiguous().clone());
    }
  }
}

void GradientBucketer::start(double divisor) {
  LZ_CHECK(divisor > 0, "GradientBucketer::start: divisor must be positive, got ", divisor);
  for (auto& b : buckets_) {
    LZ_CHECK(!b.work, "GradientBucketer::start: the previous step was not waited");
    b.ready = 0;
    b.launched = false;
  }
  marked_.assign(params_.size(), false);
  next_launch_ = 0;
  divisor_ = divisor;
  started_ = true;
}

void GradientBucketer::mark_ready(size_t i) {
  LZ_CHECK(started_, "GradientBucketer::mark_ready before start()");
  LZ_CHECK(i < params_.size(), "mark_ready: parameter ", i, " of ", params_.size());
  LZ_CHECK(!marked_[i], "mark_ready: parameter '", params_[i].name(), "' (", i,
           ") marked twice in one step");
  marked_[i] = true;
  ++buckets_[bucket_of_[i]].ready;
  launch_ready();
}

void GradientBucketer::mark_all_ready() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (!marked_[i]) mark_ready(i);
}

void GradientBucketer::launch_ready() {
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready == buckets_[next_launch_].params.size())
    launch(next_launch_++);
}

void GradientBucketer::launch(size_t b) {
  Bucket& bk = buckets_[b];
  Tensor flat = flatten(b);
  bk.work = comm_.all_reduce_sum_async(flat);
  bk.launched = true;
}

void GradientBucketer::wait() {
  LZ_CHECK(started_, "GradientBucketer::wait before start()");
  for (size_t i = 0; i < params_.size(); ++i)
    LZ_CHECK(marked_[i], "GradientBucketer::wait: parameter '", params_[i].name(), "' (", i,
             ") was never marked ready in this step");
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bk = buckets_[b];
    LZ_CHECK(bk.launched, "GradientBucketer::wait: bucket ", b, " was not launched");
    bk.work->wait();
    bk.work.reset();
    unflatten(b, bk.flat, 1.0 / divisor_);
  }
  started_ = false;
}

void GradientBucketer::all_reduce(double divisor) {
  start(divisor);
  mark_all_ready();
  wait();
}

}  // namespace lizard::dist
