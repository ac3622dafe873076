// Tiny models with known outputs for the evaluation tests.
#pragma once
#include <cmath>
#include <memory>
#include <vector>

#include "lizard/eval/synthetic_vocab.h"
#include "lizard/nn/llama.h"

namespace lizard::test {

/// A 2-layer GQA model (2 query heads, 1 kv head) over `vocab` tokens; all weights zero until
/// loaded or initialised, so logits are exactly 0 (a uniform model).
inline nn::LlamaConfig tiny_config(int64_t vocab, int64_t hidden = 16, int64_t layers = 2) {
  nn::LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = 24;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.max_position_embeddings = 4096;
  return c;
}

/// A bigram model: attention and MLP weights zero (each layer is the identity on the residual),
/// one-hot embeddings (hidden = vocab) and an LM head with W[next(i), i] = 1, so the logits at a
/// position holding token i are sqrt(V) at next(i) and 0 elsewhere: argmax is next(i).
inline std::unique_ptr<nn::LlamaForCausalLM> bigram_model(int64_t V, const std::vector<int32_t>& next) {
  auto m = std::make_unique<nn::LlamaForCausalLM>(tiny_config(V, V, 1));
  std::vector<double> emb(static_cast<size_t>(V * V), 0.0), head(static_cast<size_t>(V * V), 0.0);
  for (int64_t i = 0; i < V; ++i) {
    emb[static_cast<size_t>(i * V + i)] = 1.0;
    head[static_cast<size_t>(next[static_cast<size_t>(i)] * V + i)] = 1.0;
  }
  autograd::Var e = m->model->embed_tokens->weight(), h = m->lm_head->weight();  // share state
  e.set_data(Tensor::from_vector(emb, {V, V}));
  h.set_data(Tensor::from_vector(head, {V, V}));
  return m;
}

/// log softmax(row)[target] in double: the independent oracle of the scorers.
inline double log_prob(const std::vector<double>& row, int64_t target) {
  double m = row[0];
  for (double x : row) m = std::max(m, x);
  double z = 0;
  for (double x : row) z += std::exp(x - m);
  return row[static_cast<size_t>(target)] - m - std::log(z);
}

/// Logits of one sequence (batch 1) as host rows [T][V].
inline std::vector<std::vector<double>> logits_of(const nn::LlamaForCausalLM& m,
                                                  const std::vector<int32_t>& ids) {
  autograd::NoGradGuard ng;
  const int64_t T = static_cast<int64_t>(ids.size());
  Tensor l = m.forward(Tensor::from_data(ids, {1, T})).data();
  const int64_t V = l.size(2);
  std::vector<double> flat = l.to_vector();
  std::vector<std::vector<double>> rows(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) rows[static_cast<size_t>(t)].assign(flat.begin() + t * V, flat.begin() + (t + 1) * V);
  return rows;
}

}  // namespace lizard::test
