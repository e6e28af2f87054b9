#pragma once
// Sequential (chains single-input forwards) and ModuleList (an indexable list of submodules).
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace kiln::nn {

namespace detail {
// Shared by Sequential and ModuleList: children named "0", "1", ... in order.
class ModuleListBase : public Module {
 public:
  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  // A negative index counts from the end, as in Python.
  const std::shared_ptr<Module>& operator[](int64_t index) const;
  std::shared_ptr<Module> ptr(int64_t index) const { return (*this)[index]; }
  // The module at `index` as its concrete type; raises if it is another type.
  template <class M>
  std::shared_ptr<M> at(int64_t index) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[index]);
    KILN_CHECK(m != nullptr, "[", name(), "] module ", index, " is a ", (*this)[index]->name(),
               ", not the requested type");
    return m;
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return modules_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return modules_.end(); }

 protected:
  void append(const std::string& name, std::shared_ptr<Module> module);
  // Deep-copies the children (and any own tensors) into `copy`.
  void clone_into(ModuleListBase& copy) const;
  void replace_module_impl(const std::string& name, std::shared_ptr<Module> module) override;

  std::vector<std::shared_ptr<Module>> modules_;
};
}  // namespace detail

class Sequential : public detail::ModuleListBase {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  template <class M, class... Ms>
  explicit Sequential(std::shared_ptr<M> first, std::shared_ptr<Ms>... rest) {
    push_back(std::move(first));
    (push_back(std::move(rest)), ...);
  }
  // Children with given names, in the dict's order.
  explicit Sequential(const OrderedDict<std::shared_ptr<Module>>& named);

  // Named by its position ("0", "1", ...).
  void push_back(std::shared_ptr<Module> module);
  void push_back(const std::string& name, std::shared_ptr<Module> module);

  // Applies each module in turn (the input itself when empty).
  Tensor forward(const Tensor& input) override;
  std::shared_ptr<Module> clone() const override;
};

class ModuleList : public detail::ModuleListBase {
 public:
  ModuleList() = default;
  ModuleList(std::initializer_list<std::shared_ptr<Module>> modules);

  void push_back(std::shared_ptr<Module> module);
  void extend(const ModuleList& other);
  std::shared_ptr<Module> clone() const override;
};

}  // namespace kiln::nn
