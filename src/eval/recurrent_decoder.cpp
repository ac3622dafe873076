#include "lizard/eval/recurrent_decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "lizard/autograd/functions.h"
#include "lizard/core/error.h"
#include "lizard/eval/scoring.h"
#include "lizard/nn/lizard_attention.h"
#include "lizard/ops/attention.h"
#include "lizard/ops/rope.h"

namespace lizard::eval {

namespace ag = lizard::autograd;
using autograd::Var;

RecurrentStepModel::RecurrentStepModel(const nn::LlamaForCausalLM& model, bool teacher)
    : model_(model), teacher_(teacher) {}

std::vector<float> RecurrentStepModel::prefill(const std::vector<int32_t>& prompt) {
  LZ_INPUT_CHECK(!prompt.empty(), "generate: the prompt must have at least one token");
  layers_.assign(model_.model->layers.size(), LayerState{});
  pos_ = 0;
  return run(prompt);
}

std::vector<float> RecurrentStepModel::step(int32_t token) {
  LZ_CHECK(pos_ > 0, "RecurrentStepModel::step before prefill");
  return run({token});
}

int64_t RecurrentStepModel::state_bytes() const {
  int64_t n = 0;
  for (const LayerState& s : layers_) {
    for (const Tensor* t : {&s.lz.S, &s.lz.k_ring, &s.lz.v_ring})
      if (t->defined()) n += static_cast<int64_t>(t->nbytes());
    n += static_cast<int64_t>((s.k.size() + s.v.size()) * sizeof(float));
  }
  return n;
}

Tensor RecurrentStepModel::softmax_decode(const LayerState& st, const Tensor& q) const {
  const nn::LlamaConfig& c = model_.config();
  const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
  const int64_t P = static_cast<int64_t>(st.k.size()) / (Hkv * D);
  const std::vector<float> qh = q.to_float_vector();  // [H, D]
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> out(static_cast<size_t>(H * D), 0.0), sc(static_cast<size_t>(P));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t kvh = h / (H / Hkv);
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t s = 0; s < P; ++s) {
      double dot = 0;
      for (int64_t j = 0; j < D; ++j)
        dot += static_cast<double>(qh[h * D + j]) * st.k[(s * Hkv + kvh) * D + j];
      sc[s] = dot * scale;
      mx = std::max(mx, sc[s]);
    }
    double den = 0;
    for (int64_t s = 0; s < P; ++s) {
      const double e = std::exp(sc[s] - mx);
      den += e;
      for (int64_t j = 0; j < D; ++j) out[h * D + j] += e * st.v[(s * Hkv + kvh) * D + j];
    }
    for (int64_t j = 0; j < D; ++j) out[h * D + j] /= den;
  }
  return Tensor::from_vector(out, {1, 1, H, D}).to(q.device(), q.dtype());
}

std::vector<float> RecurrentStepModel::run(const std::vector<int32_t>& tokens) {
  ag::NoGradGuard ng;
  const nn::LlamaConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t Hkv = c.num_key_value_heads, D = c.head_dim;
  const bool first = pos_ == 0;  // prefill: parallel forms over the whole prompt
  const Device dev = model_device(model_);
  std::vector<int64_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = pos_ + t;
  // RoPE rows of exactly these positions: the same angles as the full table's rows.
  const ops::RopeTable rope = ops::rope_table(c.head_dim, c.rope_theta, c.rope_scaling,
                                              Tensor::from_data(positions, {T}), dev);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  Var x = model_.model->embed_tokens->forward(make_batch({tokens}, 0, dev));  // [1, T, d]
  for (size_t l = 0; l < model_.model->layers.size(); ++l) {
    const nn::DecoderLayer* layer = model_.model->layers[l];
    LayerState& st = layers_[l];
    Var xn = layer->input_layernorm->forward(x);
    const nn::QKV qkv = layer->self_attn->project(xn);
    Tensor heads;  // [1, T, H, D]
    const auto* liz = teacher_ ? nullptr : dynamic_cast<const nn::LizardAttention*>(layer->self_attn);
    if (liz) {
      st.lizard = true;
      const ops::LizardConfig& lc = liz->lizard_config();
      ops::LizardInputs in;
      in.q = qkv.q.data().contiguous();
      in.k = qkv.k.data().contiguous();
      in.v = qkv.v.data().contiguous();
      in.x = xn.data().contiguous();
      if (lc.use_window_rope()) {
        in.cos = rope.cos;
        in.sin = rope.sin;
      }
      const autograd::LizardParamVars& pv = liz->lizard_params();
      ops::LizardParams p;
      p.wq = pv.wq.data();
      p.wk = pv.wk.data();
      p.w_g = pv.w_g.data();
      p.b_g = pv.b_g.data();
      if (pv.tau.defined()) p.tau = pv.tau.data();
      p.alpha = pv.alpha.data();
      if (first) {
        st.lz = ops::lizard_prefill(lc, in, p, &heads);
      } else {
        heads = ops::lizard_decode_step(lc, st.lz, in, p);
      }
    } else {
      const Tensor q = ops::rope_apply(qkv.q.data().contiguous(), rope);
      const Tensor k = ops::rope_apply(qkv.k.data().contiguous(), rope);
      const Tensor v = qkv.v.data().contiguous();
      if (first) heads = ops::causal_attention(q, k, v, scale, c.sliding_window).o;
      const std::vector<float> kh = k.to_float_vector(), vh = v.to_float_vector();
      st.k.insert(st.k.end(), kh.begin(), kh.end());
      st.v.insert(st.v.end(), vh.begin(), vh.end());
      if (c.sliding_window > 0) {  // the window sees the last sliding_window keys only
        const size_t keep = static_cast<size_t>(c.sliding_window * Hkv * D);
        if (st.k.size() > keep) {
          st.k.erase(st.k.begin(), st.k.end() - static_cast<std::ptrdiff_t>(keep));
          st.v.erase(st.v.begin(), st.v.end() - static_cast<std::ptrdiff_t>(keep));
        }
      }
      if (!first) heads = softmax_decode(st, q);
    }
    // The residual adds ride in o_proj's and down_proj's GEMMs (as in DecoderLayer::forward).
    Var h = layer->self_attn->output(Var(heads), x);
    x = layer->mlp->forward(layer->post_attention_layernorm->forward(h), h);
  }
  pos_ += T;
  const Var last(model_.model->norm->forward(x).data().slice(1, T - 1, T).contiguous());
  return model_.logits(last).data().reshape({c.vocab_size}).to_float_vector();
}

}  // namespace lizard::eval
