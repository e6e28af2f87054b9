#pragma once
// nn::Module: the base of every layer (torch::nn::Module). A module owns named parameters,
// buffers and submodules; everything else (state_dict, to(), train/eval, printing) walks them.
// Modules are held by std::shared_ptr: `auto lin = std::make_shared<nn::Linear>(4, 2);`.
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "nn/ordered_dict.h"

namespace kiln::nn {

using StateDict = OrderedDict<Tensor>;

// What load_state_dict(dict, strict = false) skipped (strict loading raises instead).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  // `name` is used when printing; by default it is the class name (demangled, without namespaces).
  explicit Module(std::string name = {});
  virtual ~Module() = default;
  Module& operator=(const Module&) = delete;
  Module& operator=(Module&&) = delete;

  std::string name() const;

  // --- forward ----------------------------------------------------------------------------
  // The single-input forward; modules with other signatures (losses, attention) define their own
  // overloads and leave this one raising.
  virtual Tensor forward(const Tensor& input);
  Tensor operator()(const Tensor& input) { return forward(input); }

  // --- registration -----------------------------------------------------------------------
  // The returned handle shares the registered tensor (same TensorImpl), so a layer may keep it as
  // a member. An undefined tensor registers an absent parameter (PyTorch's None): it is skipped
  // by parameters() and state_dict(). A non-leaf tensor is detached first, so parameters are
  // always leaves.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  // Non-persistent buffers are moved by to() but left out of state_dict().
  Tensor register_buffer(const std::string& name, Tensor tensor, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    register_module_impl(name, module);
    return module;
  }
  // Replaces an existing submodule (the caller must update any member pointing to the old one).
  template <class M>
  std::shared_ptr<M> replace_module(const std::string& name, std::shared_ptr<M> module) {
    replace_module_impl(name, module);
    return module;
  }

  // --- traversal ----------------------------------------------------------------------------
  // Parameters and modules are listed once even if registered under several names.
  std::vector<Tensor> parameters(bool recurse = true) const;
  OrderedDict<Tensor> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  OrderedDict<Tensor> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  OrderedDict<std::shared_ptr<Module>> named_children() const;
  // This module first (it must be held by a std::shared_ptr), then every descendant.
  std::vector<std::shared_ptr<Module>> modules(bool include_self = true);
  OrderedDict<std::shared_ptr<Module>> named_modules(const std::string& prefix = {}, bool include_self = true);
  // Calls fn on every submodule (depth first) and then on this module, like PyTorch's apply.
  void apply(const std::function<void(Module&)>& fn);

  // Direct (non-recursive) registrations, including absent (undefined) parameters and buffers.
  const OrderedDict<Tensor>& own_parameters() const { return parameters_; }
  const OrderedDict<Tensor>& own_buffers() const { return buffers_; }

  // --- mode, dtype, device, gradients -----------------------------------------------------------
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Converts floating-point parameters and buffers (and their .grad) in place: every handle to a
  // parameter, including the layer's own members, sees the new dtype, and parameters stay leaves
  // that require grad (PyTorch's `param.data = param.data.to(...)`).
  void to(DType dtype);
  // Moves every parameter and buffer, whatever its dtype.
  void to(Device device);
  void to(Device device, DType dtype);
  // Clears (set_to_none) or zeroes the .grad of every parameter.
  void zero_grad(bool set_to_none = true);

  // --- state --------------------------------------------------------------------------------
  // Parameters then persistent buffers, module by module in registration order, with dotted
  // names ("layers.0.weight"). The tensors are detached views of the module's own storage.
  StateDict state_dict() const;
  // Copies values in (under NoGradGuard, converting dtype if needed). Shape mismatches always
  // raise; missing and unexpected keys raise when `strict`. Nothing is copied if anything raises.
  LoadStateDictResult load_state_dict(const StateDict& dict, bool strict = true);

  // --- copying and printing -------------------------------------------------------------------
  // A deep copy (new parameter storage, same values, same requires_grad and training flags).
  // Supported by the built-in layers and by any module deriving from nn::Cloneable<T>.
  virtual std::shared_ptr<Module> clone() const;
  // The text between the parentheses of this module's repr ("in_features=4, out_features=2, ...").
  virtual std::string extra_repr() const { return {}; }
  // The PyTorch-style repr, children indented by two spaces per level.
  virtual void pretty_print(std::ostream& os, int indent = 0) const;

 protected:
  // Used by Cloneable::clone: the copy starts from this module's options, then re-registers.
  Module(const Module& other);
  void clear_registrations();
  // Copies tensor values, requires_grad and training flags from `src` (same structure) into this
  // module and its children; tensors take src's dtype and device.
  void copy_state_from(const Module& src);
  // Containers override it to keep their own index in step.
  virtual void replace_module_impl(const std::string& name, std::shared_ptr<Module> module);

 private:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void collect_state(const std::string& prefix, StateDict& out, bool for_loading) const;
  void convert(const std::function<Tensor(const Tensor&)>& fn, bool floating_only);

  std::string name_;
  bool training_ = true;
  OrderedDict<Tensor> parameters_;
  OrderedDict<Tensor> buffers_;
  std::vector<std::string> non_persistent_;
  OrderedDict<std::shared_ptr<Module>> children_;
};

// Modules that can be deep-copied by re-running their construction: reset() (re)registers every
// parameter, buffer and submodule from the module's options, as the constructor does, and clone()
// then copies the current values in. Derive from Cloneable<MyModule> and call reset() from the
// constructor.
template <class Derived>
class Cloneable : public Module {
 public:
  using Module::Module;

  std::shared_ptr<Module> clone() const override {
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->clear_registrations();
    static_cast<Cloneable&>(*copy).reset();
    copy->copy_state_from(*this);
    return copy;
  }

 protected:
  Cloneable(const Cloneable&) = default;
  // Modules without parameters or submodules need not override it; for the others clone() raises
  // if reset() does not recreate what the original holds.
  virtual void reset() {}
};

// The repr: `std::cout << *model` or `to_string(*model)`.
std::ostream& operator<<(std::ostream& os, const Module& m);
std::string to_string(const Module& m);

namespace detail {
// Points every handle of `dst` at src's storage, dtype and geometry (PyTorch's `t.data = src`):
// dst keeps its identity, requires_grad and hooks; its grad is dropped. Used for to() and clone().
void set_data(const Tensor& dst, const Tensor& src);
}  // namespace detail

}  // namespace kiln::nn
