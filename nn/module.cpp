#include "nn/module.h"

#include <cxxabi.h>

#include <cstdlib>
#include <sstream>
#include <typeinfo>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/ops.h"

namespace kiln::nn {
namespace {

std::string demangled_class_name(const std::type_info& ti) {
  int status = 0;
  char* raw = abi::__cxa_demangle(ti.name(), nullptr, nullptr, &status);
  std::string full = (status == 0 && raw) ? raw : ti.name();
  std::free(raw);
  // Drop namespace qualifiers (but not those inside template arguments).
  const size_t angle = full.find('<');
  const size_t colons = full.rfind("::", angle);
  return colons == std::string::npos ? full : full.substr(colons + 2);
}

void check_name(const char* what, const Module& m, const std::string& name) {
  KILN_CHECK(!name.empty(), "[", what, "] ", m.name(), ": the name must not be empty");
  KILN_CHECK(name.find('.') == std::string::npos, "[", what, "] ", m.name(), ": the name '", name,
             "' must not contain '.'");
}

std::string quoted_list(const std::vector<std::string>& keys) {
  std::string s;
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", \"" : "\"") + keys[i] + "\"";
  return s;
}

}  // namespace

namespace detail {

void set_data(const Tensor& dst, const Tensor& src) {
  KILN_CHECK(dst.defined() && src.defined(), "[set_data] both tensors must be defined");
  if (dst.is_same(src)) return;
  TensorImpl& d = *dst.impl();
  const bool requires_grad = d.requires_grad();
  std::shared_ptr<autograd::AutogradMeta> old = d.autograd_meta();
  d = *src.impl();  // storage, dtype, geometry; the TensorImpl object (hence every handle) stays
  d.autograd_meta().reset();
  d.set_wrapped_number(false);
  d.set_requires_grad(false);
  // A fresh meta: an accumulator of an old graph keeps the old dtype and must not write here.
  if (old && !old->leaf_hooks.empty()) {
    auto m = std::make_shared<autograd::AutogradMeta>();
    m->leaf_hooks = old->leaf_hooks;
    d.autograd_meta() = std::move(m);
  }
  d.set_requires_grad(requires_grad);
}

}  // namespace detail

Module::Module(std::string name) : name_(std::move(name)) {}

// The copy keeps options and flags; Cloneable::clone then clears and re-registers.
Module::Module(const Module& other)
    : std::enable_shared_from_this<Module>(),
      name_(other.name_),
      training_(other.training_),
      parameters_(other.parameters_),
      buffers_(other.buffers_),
      non_persistent_(other.non_persistent_),
      children_(other.children_) {}

// Not cached: during construction typeid(*this) is still a base class.
std::string Module::name() const { return name_.empty() ? demangled_class_name(typeid(*this)) : name_; }

Tensor Module::forward(const Tensor& input) {
  KILN_FAIL("[", name(),
            "] has no single-input forward(input); modules with other signatures (losses, attention) "
            "define their own forward overloads");
}

// --- registration ---------------------------------------------------------------------------

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_name("register_parameter", *this, name);
  KILN_CHECK(!parameters_.contains(name) && !buffers_.contains(name) && !children_.contains(name),
             "[register_parameter] ", this->name(), " already has a member named '", name, "'");
  if (tensor.defined()) {
    if (!tensor.is_leaf()) tensor = tensor.detach();
    KILN_CHECK(!requires_grad || tensor.is_floating_point(), "[register_parameter] ", this->name(), ": parameter '",
               name, "' has dtype ", tensor.dtype(), "; only floating point parameters can require grad");
    tensor.requires_grad_(requires_grad);
  }
  parameters_.insert(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor, bool persistent) {
  check_name("register_buffer", *this, name);
  KILN_CHECK(!parameters_.contains(name) && !buffers_.contains(name) && !children_.contains(name), "[register_buffer] ",
             this->name(), " already has a member named '", name, "'");
  if (tensor.defined() && tensor.requires_grad()) tensor = tensor.detach();
  buffers_.insert(name, tensor);
  if (!persistent) non_persistent_.push_back(name);
  return tensor;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  check_name("register_module", *this, name);
  KILN_CHECK(module != nullptr, "[register_module] ", this->name(), ": submodule '", name, "' is null");
  KILN_CHECK(module.get() != this, "[register_module] ", this->name(), " cannot be its own submodule");
  KILN_CHECK(!parameters_.contains(name) && !buffers_.contains(name) && !children_.contains(name), "[register_module] ",
             this->name(), " already has a member named '", name, "'");
  children_.insert(name, std::move(module));
}

void Module::replace_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  KILN_CHECK(children_.contains(name), "[replace_module] ", this->name(), " has no submodule named '", name, "'");
  KILN_CHECK(module != nullptr, "[replace_module] ", this->name(), ": submodule '", name, "' is null");
  children_.at(name) = std::move(module);
}

void Module::clear_registrations() {
  parameters_.clear();
  buffers_.clear();
  non_persistent_.clear();
  children_.clear();
}

// --- traversal --------------------------------------------------------------------------------

OrderedDict<Tensor> Module::named_parameters(bool recurse) const {
  OrderedDict<Tensor> out;
  std::unordered_set<const TensorImpl*> seen_tensors;
  std::unordered_set<const Module*> seen_modules;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& prefix) {
    if (!seen_modules.insert(&m).second) return;
    for (const auto& [name, t] : m.parameters_)
      if (t.defined() && seen_tensors.insert(t.impl()).second) out.insert(prefix + name, t);
    if (!recurse) return;
    for (const auto& [name, child] : m.children_) walk(*child, prefix + name + ".");
  };
  walk(*this, "");
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const { return named_parameters(recurse).values(); }

OrderedDict<Tensor> Module::named_buffers(bool recurse) const {
  OrderedDict<Tensor> out;
  std::unordered_set<const TensorImpl*> seen_tensors;
  std::unordered_set<const Module*> seen_modules;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& prefix) {
    if (!seen_modules.insert(&m).second) return;
    for (const auto& [name, t] : m.buffers_)
      if (t.defined() && seen_tensors.insert(t.impl()).second) out.insert(prefix + name, t);
    if (!recurse) return;
    for (const auto& [name, child] : m.children_) walk(*child, prefix + name + ".");
  };
  walk(*this, "");
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const { return named_buffers(recurse).values(); }

std::vector<std::shared_ptr<Module>> Module::children() const { return children_.values(); }

OrderedDict<std::shared_ptr<Module>> Module::named_children() const { return children_; }

OrderedDict<std::shared_ptr<Module>> Module::named_modules(const std::string& prefix, bool include_self) {
  OrderedDict<std::shared_ptr<Module>> out;
  std::unordered_set<const Module*> seen;
  if (include_self) {
    std::shared_ptr<Module> self = weak_from_this().lock();
    KILN_CHECK(self != nullptr, "[modules] ", name(),
               " is not held by a std::shared_ptr (create it with std::make_shared), so it cannot list itself; "
               "pass include_self = false");
    out.insert(prefix, self);
    seen.insert(this);
  }
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& pre) {
    for (const auto& [name, child] : m.children_) {
      if (!seen.insert(child.get()).second) continue;
      std::string full = pre.empty() ? name : pre + "." + name;
      out.insert(full, child);
      walk(*child, full);
    }
  };
  walk(*this, prefix);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::modules(bool include_self) {
  return named_modules({}, include_self).values();
}

void Module::apply(const std::function<void(Module&)>& fn) {
  for (const auto& [name, child] : children_) child->apply(fn);
  fn(*this);
}

// --- mode, dtype, device, gradients -----------------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  for (const auto& [name, child] : children_) child->train(on);
}

void Module::convert(const std::function<Tensor(const Tensor&)>& fn, bool floating_only) {
  NoGradGuard no_grad;
  std::unordered_set<const TensorImpl*> seen;
  auto visit = [&](const Tensor& t) {
    if (!t.defined() || !seen.insert(t.impl()).second) return;
    if (floating_only && !t.is_floating_point()) return;
    Tensor converted = fn(t);
    if (converted.is_same(t)) return;
    Tensor grad = t.grad();
    detail::set_data(t, converted);
    if (grad.defined()) Tensor(t).set_grad(fn(grad));
  };
  std::unordered_set<const Module*> seen_modules;
  std::function<void(Module&)> walk = [&](Module& m) {
    if (!seen_modules.insert(&m).second) return;
    for (auto& [name, t] : m.parameters_) visit(t);
    for (auto& [name, t] : m.buffers_) visit(t);
    for (auto& [name, child] : m.children_) walk(*child);
  };
  walk(*this);
}

void Module::to(DType dtype) {
  KILN_CHECK(is_floating_point(dtype), "[Module::to] ", name(), ": only floating point dtypes are accepted, got ",
             dtype);
  convert([dtype](const Tensor& t) { return t.to(dtype); }, true);
}

void Module::to(Device device) {
  convert([device](const Tensor& t) { return t.to(device); }, false);
}

void Module::to(Device device, DType dtype) {
  to(device);
  to(dtype);
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor p : parameters()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      Tensor& g = p.mutable_grad();
      // A grad that is part of a graph (create_graph) is detached before zeroing, as in PyTorch.
      if (g.grad_fn()) g = g.detach();
      g.zero_();
    }
  }
}

// --- state ------------------------------------------------------------------------------------

void Module::collect_state(const std::string& prefix, StateDict& out, bool for_loading) const {
  for (const auto& [name, t] : parameters_)
    if (t.defined()) out.insert(prefix + name, for_loading ? t : t.detach());
  for (const auto& [name, t] : buffers_) {
    if (!t.defined()) continue;
    bool persistent = true;
    for (const auto& n : non_persistent_) persistent = persistent && n != name;
    if (persistent) out.insert(prefix + name, for_loading ? t : t.detach());
  }
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out, for_loading);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect_state("", out, false);
  return out;
}

LoadStateDictResult Module::load_state_dict(const StateDict& dict, bool strict) {
  // A submodule registered under two names (shared weights) appears under both keys, as in PyTorch.
  StateDict own;
  collect_state("", own, true);
  LoadStateDictResult result;
  std::vector<std::string> mismatches;
  for (const auto& [key, dst] : own) {
    const Tensor* src = dict.find(key);
    if (!src) {
      result.missing_keys.push_back(key);
      continue;
    }
    KILN_CHECK(src->defined(), "[load_state_dict] ", name(), ": the state dict holds an undefined tensor for '", key,
               "'");
    if (src->sizes() != dst.sizes()) {
      std::ostringstream os;
      os << "size mismatch for " << key << ": copying a tensor of shape " << src->sizes()
         << " from the state dict, but the shape in the current model is " << dst.sizes();
      mismatches.push_back(os.str());
    }
  }
  for (const auto& [key, value] : dict)
    if (!own.contains(key)) result.unexpected_keys.push_back(key);

  std::vector<std::string> errors = mismatches;
  if (strict) {
    if (!result.missing_keys.empty())
      errors.insert(errors.begin(), "missing key(s): " + quoted_list(result.missing_keys));
    if (!result.unexpected_keys.empty())
      errors.insert(errors.begin() + (result.missing_keys.empty() ? 0 : 1),
                    "unexpected key(s): " + quoted_list(result.unexpected_keys));
  }
  if (!errors.empty()) {
    std::string msg = "[load_state_dict] error(s) in loading the state dict for " + name() + ": ";
    for (size_t i = 0; i < errors.size(); ++i) msg += (i ? "; " : "") + errors[i];
    KILN_FAIL(msg);
  }

  NoGradGuard no_grad;
  for (const auto& [key, dst] : own)
    if (const Tensor* src = dict.find(key)) const_cast<Tensor&>(dst).copy_(*src);
  return result;
}

// --- copying and printing ---------------------------------------------------------------------

std::shared_ptr<Module> Module::clone() const {
  KILN_FAIL("[clone] ", name(), " does not support clone(); derive it from nn::Cloneable<", name(),
            "> and register its members in reset()");
}

void Module::copy_state_from(const Module& src) {
  NoGradGuard no_grad;
  training_ = src.training_;
  auto copy_tensors = [&](const char* kind, OrderedDict<Tensor>& dst, const OrderedDict<Tensor>& from) {
    for (auto& [key, t] : dst) {
      const Tensor* s = from.find(key);
      KILN_CHECK(s != nullptr, "[clone] ", name(), ": reset() registered ", kind, " '", key,
                 "' that the original does not have");
      KILN_CHECK(s->defined() == t.defined(), "[clone] ", name(), ": ", kind, " '", key,
                 "' is absent in one of the original and the copy made by reset()");
      if (!t.defined()) continue;
      detail::set_data(t, s->clone());
      t.impl()->set_requires_grad(s->requires_grad());
    }
    KILN_CHECK(dst.size() == from.size(), "[clone] ", name(), ": reset() registered ", dst.size(), " ", kind,
               "s but the original has ", from.size());
  };
  copy_tensors("parameter", parameters_, src.parameters_);
  copy_tensors("buffer", buffers_, src.buffers_);
  KILN_CHECK(children_.size() == src.children_.size(), "[clone] ", name(), ": reset() registered ", children_.size(),
             " submodules but the original has ", src.children_.size());
  for (auto& [key, child] : children_) {
    const std::shared_ptr<Module>* s = src.children_.find(key);
    KILN_CHECK(s != nullptr, "[clone] ", name(), ": reset() registered submodule '", key,
               "' that the original does not have");
    child->copy_state_from(**s);
  }
}

void Module::pretty_print(std::ostream& os, int indent) const {
  const std::string extra = extra_repr();
  os << name() << "(";
  if (children_.empty()) {
    os << extra << ")";
    return;
  }
  const std::string pad(static_cast<size_t>(indent) + 2, ' ');
  if (!extra.empty()) os << "\n" << pad << extra;
  for (const auto& [key, child] : children_) {
    os << "\n" << pad << "(" << key << "): ";
    child->pretty_print(os, indent + 2);
  }
  os << "\n" << std::string(static_cast<size_t>(indent), ' ') << ")";
}

std::ostream& operator<<(std::ostream& os, const Module& m) {
  m.pretty_print(os);
  return os;
}

std::string to_string(const Module& m) {
  std::ostringstream os;
  os << m;
  return os.str();
}

}  // namespace kiln::nn
