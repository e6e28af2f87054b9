#include "nn/container.h"

#include "autograd/grad_mode.h"

namespace kiln::nn {
namespace detail {

const std::shared_ptr<Module>& ModuleListBase::operator[](int64_t index) const {
  const auto n = static_cast<int64_t>(modules_.size());
  KILN_CHECK(index >= -n && index < n, "[", name(), "] index ", index, " is out of range for ", n, " modules");
  return modules_[static_cast<size_t>(index < 0 ? index + n : index)];
}

void ModuleListBase::append(const std::string& name, std::shared_ptr<Module> module) {
  KILN_CHECK(module != nullptr, "[", this->name(), "] cannot add a null module");
  register_module(name, module);
  modules_.push_back(std::move(module));
}

void ModuleListBase::replace_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  const auto children = named_children();
  const std::shared_ptr<Module>* found = children.find(name);
  std::shared_ptr<Module> old = found ? *found : nullptr;
  Module::replace_module_impl(name, module);  // raises for an unknown name
  for (auto& m : modules_)
    if (m == old) m = module;
}

void ModuleListBase::clone_into(ModuleListBase& copy) const {
  for (const auto& [key, child] : named_children()) copy.append(key, child->clone());
  NoGradGuard no_grad;
  for (const auto& [key, t] : own_parameters())
    copy.register_parameter(key, t.defined() ? t.clone() : Tensor(), t.defined() && t.requires_grad());
  const StateDict persistent = state_dict();
  for (const auto& [key, t] : own_buffers())
    copy.register_buffer(key, t.defined() ? t.clone() : Tensor(), !t.defined() || persistent.contains(key));
  copy.train(is_training());
}

}  // namespace detail

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

Sequential::Sequential(const OrderedDict<std::shared_ptr<Module>>& named) {
  for (const auto& [key, m] : named) push_back(key, m);
}

void Sequential::push_back(std::shared_ptr<Module> module) { append(std::to_string(size()), std::move(module)); }

void Sequential::push_back(const std::string& name, std::shared_ptr<Module> module) { append(name, std::move(module)); }

Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  for (const auto& m : modules_) x = m->forward(x);
  return x;
}

std::shared_ptr<Module> Sequential::clone() const {
  auto copy = std::make_shared<Sequential>();
  clone_into(*copy);
  return copy;
}

ModuleList::ModuleList(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

void ModuleList::push_back(std::shared_ptr<Module> module) { append(std::to_string(size()), std::move(module)); }

void ModuleList::extend(const ModuleList& other) {
  for (const auto& m : other) push_back(m);
}

std::shared_ptr<Module> ModuleList::clone() const {
  auto copy = std::make_shared<ModuleList>();
  clone_into(*copy);
  return copy;
}

}  // namespace kiln::nn
