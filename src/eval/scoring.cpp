#include "lizard/eval/scoring.h"

#include <algorithm>

#include "lizard/autograd/variable.h"
#include "lizard/core/error.h"
#include "lizard/ops/cross_entropy.h"

namespace lizard::eval {

Device model_device(const nn::LlamaForCausalLM& model) {
  return model.model->embed_tokens->weight().device();
}

Tensor make_batch(const std::vector<std::vector<int32_t>>& rows, int32_t pad, Device device) {
  LZ_CHECK(!rows.empty(), "make_batch: no rows");
  size_t T = 0;
  for (const auto& r : rows) T = std::max(T, r.size());
  LZ_CHECK(T > 0, "make_batch: all rows are empty");
  std::vector<int32_t> flat(rows.size() * T, pad);
  for (size_t b = 0; b < rows.size(); ++b) std::copy(rows[b].begin(), rows[b].end(), flat.begin() + b * T);
  return Tensor::from_data(flat, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(T)}).to(device);
}

Tensor eval_logits(const nn::LlamaForCausalLM& model, const Tensor& ids, bool teacher) {
  autograd::NoGradGuard no_grad;
  nn::ForwardOptions opt;
  opt.teacher = teacher;
  return model.forward(ids, opt).data();
}

std::pair<double, int64_t> nll_sum(const Tensor& logits_tv, const std::vector<int32_t>& targets) {
  LZ_CHECK(logits_tv.dim() == 2 && logits_tv.size(0) == static_cast<int64_t>(targets.size()),
           "nll_sum: logits must be [T, V] with T = ", targets.size(), " targets, got ",
           logits_tv.desc());
  // The CPU reference covers f32/f64 only; half-precision logits are widened first.
  Tensor logits = logits_tv;
  if (logits.device().is_cpu() && logits.dtype() != DType::F32 && logits.dtype() != DType::F64)
    logits = logits.to(DType::F32);
  const Tensor t = Tensor::from_data(targets, {static_cast<int64_t>(targets.size())}).to(logits.device());
  const ops::CrossEntropyOut ce = ops::cross_entropy(logits, t);
  if (ce.count == 0) return {0.0, 0};
  // The op returns the mean over counted rows (accumulated in double on the CPU).
  return {ce.loss.item() * static_cast<double>(ce.count), ce.count};
}

std::vector<double> logits_row(const Tensor& logits_btv, int64_t b, int64_t t) {
  return logits_btv.select(0, b).select(0, t).to_vector();
}

int32_t argmax(const std::vector<double>& v) {
  LZ_CHECK(!v.empty(), "argmax of an empty row");
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace lizard::eval
