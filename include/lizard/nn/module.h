// Module: a named tree of parameters (Vars with tags) and sub-modules.
// Parameter names follow Hugging Face's (`model.layers.0.self_attn.q_proj.weight`), so
// safetensors checkpoints load by name.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lizard/autograd/variable.h"

namespace lizard::nn {

using autograd::ParamTag;
using autograd::Var;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Every parameter below this module, depth first, with dotted names.
  std::vector<std::pair<std::string, Var>> named_parameters() const;
  /// Only parameters whose tag is one of `tags`.
  std::vector<std::pair<std::string, Var>> named_parameters(std::initializer_list<ParamTag> tags) const;
  /// The parameter with this dotted name; throws naming it if absent.
  Var parameter(const std::string& name) const;
  /// Sets the tag of every parameter below this module.
  void set_tag_all(ParamTag tag);
  /// Moves/casts every parameter (data only; gradients are dropped).
  void to(Device device, DType dtype);
  /// Total number of elements of all parameters.
  int64_t num_parameters() const;

 protected:
  /// Registers a parameter; returns it (the Var is shared, so set_data updates the module).
  Var register_parameter(const std::string& name, Var v);
  /// Registers a child; the module owns it.
  template <class M>
  M* register_module(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    children_.emplace_back(name, std::move(m));
    return raw;
  }

 private:
  std::vector<std::pair<std::string, Var>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

}  // namespace lizard::nn
