#include "nn/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "core/ops.h"

namespace kiln::optim {

void Optimizer::zero_grad(bool set_to_none) {
  for (size_t g = 0; g < num_param_groups(); ++g) {
    for (const Tensor& p : params(g)) {
      if (!p.grad().defined()) continue;
      Tensor handle = p;
      Tensor& grad = handle.mutable_grad();
      if (set_to_none) {
        grad = Tensor();
        continue;
      }
      // As torch: a grad produced with create_graph is cut from its graph before zeroing.
      if (grad.grad_fn())
        grad = grad.detach();
      else if (grad.requires_grad())
        grad.requires_grad_(false);
      NoGradGuard no_grad;
      grad.zero_();
    }
  }
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  for (size_t g = 0; g < num_param_groups(); ++g) {
    const auto& ps = params(g);
    out.insert(out.end(), ps.begin(), ps.end());
  }
  return out;
}

std::map<std::string, Tensor> to_tensors(const OptimizerStateDict& sd) {
  NoGradGuard no_grad;
  std::map<std::string, Tensor> out;
  for (const auto& [id, named] : sd.state)
    for (const auto& [name, t] : named) out["state." + std::to_string(id) + "." + name] = t;
  for (size_t g = 0; g < sd.param_groups.size(); ++g) {
    const std::string prefix = "param_groups." + std::to_string(g) + ".";
    out[prefix + "params"] = tensor(sd.param_groups[g].params, kInt64);
    for (const auto& [key, v] : sd.param_groups[g].options) out[prefix + key] = scalar_tensor(v, kFloat64);
  }
  return out;
}

namespace {
// "<digits>." at the start of `s` (after a prefix): the number, and the rest after the dot.
bool split_index(const std::string& s, size_t from, int64_t& index, std::string& rest) {
  size_t dot = s.find('.', from);
  if (dot == std::string::npos || dot == from || dot - from > 18) return false;
  for (size_t i = from; i < dot; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  index = std::stoll(s.substr(from, dot - from));
  rest = s.substr(dot + 1);
  return !rest.empty();
}
}  // namespace

OptimizerStateDict state_dict_from_tensors(const std::map<std::string, Tensor>& tensors) {
  OptimizerStateDict sd;
  std::map<int64_t, OptimizerStateDict::ParamGroup> groups;
  std::map<int64_t, bool> has_params;
  for (const auto& [key, t] : tensors) {
    int64_t index = 0;
    std::string rest;
    KILN_CHECK(t.defined(), "[state_dict_from_tensors] tensor '", key, "' is undefined");
    if (key.rfind("state.", 0) == 0 && split_index(key, 6, index, rest)) {
      sd.state[index][rest] = t;
    } else if (key.rfind("param_groups.", 0) == 0 && split_index(key, 13, index, rest)) {
      auto& g = groups[index];
      if (rest == "params") {
        KILN_CHECK(t.dim() == 1 && t.dtype() == kInt64, "[state_dict_from_tensors] '", key,
                   "' must be a 1-d int64 tensor of parameter ids, got ", t.dtype(), " of shape ", t.sizes());
        Tensor c = t.contiguous();
        g.params.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
        has_params[index] = true;
      } else {
        KILN_CHECK(t.numel() == 1, "[state_dict_from_tensors] option '", key,
                   "' must be a one-element tensor, got shape ", t.sizes());
        g.options[rest] = t.item<double>();
      }
    } else {
      KILN_FAIL("[state_dict_from_tensors] unexpected key '", key,
                "' (expected state.<id>.<name>, param_groups.<g>.params or param_groups.<g>.<option>)");
    }
  }
  for (auto& [index, g] : groups) {
    KILN_CHECK(index == static_cast<int64_t>(sd.param_groups.size()), "[state_dict_from_tensors] parameter group ",
               sd.param_groups.size(), " is missing (groups must be numbered from 0 without gaps, found ", index, ")");
    KILN_CHECK(has_params[index], "[state_dict_from_tensors] parameter group ", index, " lacks 'param_groups.", index,
               ".params'");
    sd.param_groups.push_back(std::move(g));
  }
  return sd;
}

namespace detail {

void check_group_params(const char* opt, const std::vector<Tensor>& params, size_t group_index,
                        const std::vector<std::vector<Tensor>>& taken) {
  KILN_CHECK(!params.empty(), "[", opt, "] parameter group ", group_index, " is empty (optimizer got an empty parameter list)");
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    KILN_CHECK(p.defined(), "[", opt, "] parameter ", i, " of group ", group_index, " is an undefined tensor");
    KILN_CHECK(p.is_leaf(), "[", opt, "] parameter ", i, " of group ", group_index,
               " is not a leaf tensor (can't optimize a non-leaf Tensor; use detach() and requires_grad_())");
    for (size_t j = 0; j < i; ++j)
      KILN_CHECK(!params[j].is_same(p), "[", opt, "] parameter group ", group_index,
                 " lists the same tensor twice (entries ", j, " and ", i, "); it would be updated twice");
    for (size_t g = 0; g < taken.size(); ++g)
      for (const Tensor& q : taken[g])
        KILN_CHECK(!q.is_same(p), "[", opt, "] parameter ", i, " of group ", group_index,
                   " already appears in parameter group ", g, " (some parameters appear in more than one parameter group)");
  }
}

void OptionReader::read(const char* key, double& v) {
  seen_.emplace_back(key);
  auto it = options_.find(key);
  if (it != options_.end()) v = it->second;  // a key missing from an older snapshot keeps its value
}

void OptionReader::read(const char* key, bool& v) {
  seen_.emplace_back(key);
  auto it = options_.find(key);
  if (it == options_.end()) return;
  KILN_CHECK(it->second == 0.0 || it->second == 1.0, "[", opt_, ".load_state_dict] option '", key, "' of parameter group ",
             group_, " is a flag and must be 0 or 1, got ", it->second);
  v = it->second != 0.0;
}

void OptionReader::finish() const {
  for (const auto& [key, value] : options_)
    KILN_CHECK(std::find(seen_.begin(), seen_.end(), key) != seen_.end(), "[", opt_,
               ".load_state_dict] unknown option '", key, "' in parameter group ", group_);
}

Tensor StateReader::take(const char* key, bool required) {
  seen_.emplace_back(key);
  auto it = tensors_.find(key);
  if (it == tensors_.end()) {
    KILN_CHECK(!required, "[", opt_, ".load_state_dict] state of parameter ", id_, " lacks '", key, "'");
    return Tensor();
  }
  const Tensor& t = it->second;
  KILN_CHECK(t.defined(), "[", opt_, ".load_state_dict] state '", key, "' of parameter ", id_, " is an undefined tensor");
  KILN_CHECK(t.sizes() == param_.sizes(), "[", opt_, ".load_state_dict] state '", key, "' of parameter ", id_,
             " has shape ", t.sizes(), " but the parameter has shape ", param_.sizes());
  NoGradGuard no_grad;
  return t.detach().to(param_.device(), param_.dtype(), /*copy=*/true).contiguous();
}

int64_t StateReader::take_step() {
  seen_.emplace_back("step");
  auto it = tensors_.find("step");
  KILN_CHECK(it != tensors_.end(), "[", opt_, ".load_state_dict] state of parameter ", id_, " lacks 'step'");
  const Tensor& t = it->second;
  KILN_CHECK(t.defined() && t.numel() == 1, "[", opt_, ".load_state_dict] state 'step' of parameter ", id_,
             " must be a one-element tensor, got shape ", t.defined() ? t.sizes().vec() : Shape{});
  double v = t.item<double>();
  KILN_CHECK(std::isfinite(v) && v >= 0 && v == std::floor(v) && v < 9.0e15, "[", opt_,
             ".load_state_dict] state 'step' of parameter ", id_, " must be a non-negative integer, got ", v);
  return static_cast<int64_t>(v);
}

void StateReader::finish() const {
  for (const auto& [key, value] : tensors_)
    KILN_CHECK(std::find(seen_.begin(), seen_.end(), key) != seen_.end(), "[", opt_,
               ".load_state_dict] unknown state '", key, "' for parameter ", id_);
}

Tensor snapshot(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().clone();
}

}  // namespace detail
}  // namespace kiln::optim
