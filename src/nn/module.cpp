#include "lizard/nn/module.h"

#include <functional>

namespace lizard::nn {

std::vector<std::pair<std::string, Var>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m,
                                                                    const std::string& prefix) {
    for (const auto& [n, v] : m.params_) out.emplace_back(prefix + n, v);
    for (const auto& [n, c] : m.children_) walk(*c, prefix + n + ".");
  };
  walk(*this, "");
  return out;
}

std::vector<std::pair<std::string, Var>> Module::named_parameters(
    std::initializer_list<ParamTag> tags) const {
  std::vector<std::pair<std::string, Var>> out;
  for (auto& p : named_parameters())
    for (ParamTag t : tags)
      if (p.second.tag() == t) {
        out.push_back(p);
        break;
      }
  return out;
}

Var Module::parameter(const std::string& name) const {
  for (auto& p : named_parameters())
    if (p.first == name) return p.second;
  throw Error(str_cat("no parameter named '", name, "'"));
}

void Module::set_tag_all(ParamTag tag) {
  for (auto& p : named_parameters()) p.second.set_tag(tag);
}

void Module::to(Device device, DType dtype) {
  for (auto& p : named_parameters()) {
    p.second.set_data(p.second.data().to(device, dtype));
    p.second.zero_grad();
  }
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.second.data().numel();
  return n;
}

Var Module::register_parameter(const std::string& name, Var v) {
  v.set_name(name);
  params_.emplace_back(name, std::move(v));
  return params_.back().second;  // a handle sharing the state
}

}  // namespace lizard::nn
