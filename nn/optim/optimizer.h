#pragma once
// Optimizer base (torch.optim.Optimizer): parameter groups with their own hyperparameters,
// zero_grad, and a state_dict laid out as PyTorch's (per-parameter state by integer id, plus
// one entry of hyperparameters per group). Optimizers take tensors, not modules.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace kiln::optim {

// A snapshot of an optimizer, as torch.optim's state_dict():
//   state[id]          named tensors of parameter `id` ("momentum_buffer", "exp_avg", "step", ...)
//   param_groups[g]    the group's hyperparameters by PyTorch's names (flags as 0/1, Adam's betas
//                      as "beta1"/"beta2", "initial_lr" once a scheduler attached) and the ids of
//                      its parameters. Ids number the parameters of all groups in order, from 0.
// Tensors are copies: the snapshot does not change as training goes on (PyTorch's aliases).
struct OptimizerStateDict {
  struct ParamGroup {
    std::map<std::string, double> options;
    std::vector<int64_t> params;
  };
  std::map<int64_t, std::map<std::string, Tensor>> state;
  std::vector<ParamGroup> param_groups;
};

// A flat form of a snapshot for kiln::save (safetensors): "state.<id>.<name>" holds the state
// tensors, "param_groups.<g>.params" the ids (int64, 1-d) and "param_groups.<g>.<option>" each
// hyperparameter (float64, 0-dim). The inverse validates names and shapes.
std::map<std::string, Tensor> to_tensors(const OptimizerStateDict& state_dict);
OptimizerStateDict state_dict_from_tensors(const std::map<std::string, Tensor>& tensors);

// The type-erased interface schedulers and training loops use.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient (others are skipped), in place, without
  // recording autograd history.
  virtual void step() = 0;
  // set_to_none: drop the gradients (the next backward allocates them); else zero them in place.
  void zero_grad(bool set_to_none = true);

  virtual size_t num_param_groups() const = 0;
  virtual const std::vector<Tensor>& params(size_t group) const = 0;
  std::vector<Tensor> parameters() const;  // all groups, in order
  virtual double lr(size_t group) const = 0;
  virtual void set_lr(size_t group, double lr) = 0;
  // Set by the first scheduler attached to this optimizer (PyTorch keeps it in the group dict).
  virtual std::optional<double> initial_lr(size_t group) const = 0;
  virtual void set_initial_lr(size_t group, double lr) = 0;

  virtual OptimizerStateDict state_dict() const = 0;
  // Restores a snapshot taken from an optimizer of the same kind over parameters of the same
  // shapes and grouping. Validates everything before changing anything.
  virtual void load_state_dict(const OptimizerStateDict& state_dict) = 0;

  virtual const char* name() const = 0;
};

namespace detail {
// Shared checks and conversions (nn/optim/optimizer.cpp).
// Each parameter defined, a leaf, and in no group yet (`taken` holds those of earlier groups).
void check_group_params(const char* opt, const std::vector<Tensor>& params, size_t group_index,
                        const std::vector<std::vector<Tensor>>& taken);
// Reads an option from a state_dict group: known keys only, booleans must be 0 or 1.
class OptionReader {
 public:
  OptionReader(const char* opt, size_t group, const std::map<std::string, double>& options)
      : opt_(opt), group_(group), options_(options) {}
  void read(const char* key, double& v);
  void read(const char* key, bool& v);
  // Raises for any key no read() asked for.
  void finish() const;

 private:
  const char* opt_;
  size_t group_;
  const std::map<std::string, double>& options_;
  std::vector<std::string> seen_;
};
// Reads named per-parameter state: shapes must match the parameter; values are cast to its
// dtype and device and copied. Raises for names no take() asked for (at finish()).
class StateReader {
 public:
  StateReader(const char* opt, int64_t id, const Tensor& param, const std::map<std::string, Tensor>& tensors)
      : opt_(opt), id_(id), param_(param), tensors_(tensors) {}
  Tensor take(const char* key, bool required);
  // PyTorch's "step": a one-element tensor holding a non-negative integer.
  int64_t take_step();
  void finish() const;

 private:
  const char* opt_;
  int64_t id_;
  const Tensor& param_;
  const std::map<std::string, Tensor>& tensors_;
  std::vector<std::string> seen_;
};
Tensor snapshot(const Tensor& t);  // detached copy for state_dict()
}  // namespace detail

// One group as given to a constructor: its parameters, and options (the optimizer's defaults
// when empty), like torch's [{"params": ..., "lr": ...}, ...].
template <class Options>
struct ParamGroup {
  std::vector<Tensor> params;
  std::optional<Options> options;
  ParamGroup(std::vector<Tensor> p) : params(std::move(p)) {}  // NOLINT: a list of tensors is a group
  ParamGroup(std::vector<Tensor> p, Options o) : params(std::move(p)), options(std::move(o)) {}
};

// The parts every concrete optimizer shares, for its `Options` (hyperparameters; must provide
// validate(name), to_map(), read(OptionReader&)) and `State` (per-parameter state; to_tensors(),
// static read(StateReader&, const Options&)).
template <class Options, class State>
class OptimizerBase : public Optimizer {
 public:
  struct Group {
    std::vector<Tensor> params;
    Options options;
    std::optional<double> initial_lr;
  };

  // Groups are public like torch's optimizer.param_groups: `opt.param_groups()[0].options.lr = 0.1`.
  std::vector<Group>& param_groups() { return groups_; }
  const std::vector<Group>& param_groups() const { return groups_; }
  const Options& defaults() const { return defaults_; }

  void add_param_group(ParamGroup<Options> group) {
    Options o = group.options ? *group.options : defaults_;
    o.validate(name());
    std::vector<std::vector<Tensor>> taken;
    for (const Group& g : groups_) taken.push_back(g.params);
    detail::check_group_params(name(), group.params, groups_.size(), taken);
    groups_.push_back(Group{std::move(group.params), std::move(o), std::nullopt});
  }

  // Per-parameter state, created at a parameter's first update.
  const State* state(const Tensor& param) const {
    auto it = state_.find(param.impl_ptr());
    return it == state_.end() ? nullptr : &it->second;
  }

  size_t num_param_groups() const override { return groups_.size(); }
  const std::vector<Tensor>& params(size_t g) const override { return group_at(g).params; }
  double lr(size_t g) const override { return group_at(g).options.lr; }
  void set_lr(size_t g, double lr) override { group_at(g).options.lr = lr; }
  std::optional<double> initial_lr(size_t g) const override { return group_at(g).initial_lr; }
  void set_initial_lr(size_t g, double lr) override { group_at(g).initial_lr = lr; }

  OptimizerStateDict state_dict() const override {
    OptimizerStateDict sd;
    int64_t id = 0;
    for (const Group& g : groups_) {
      OptimizerStateDict::ParamGroup pg;
      pg.options = g.options.to_map();
      if (g.initial_lr) pg.options["initial_lr"] = *g.initial_lr;
      for (const Tensor& p : g.params) {
        if (const State* s = state(p)) {
          std::map<std::string, Tensor> named = s->to_tensors();
          for (auto& kv : named) kv.second = detail::snapshot(kv.second);
          sd.state[id] = std::move(named);
        }
        pg.params.push_back(id++);
      }
      sd.param_groups.push_back(std::move(pg));
    }
    return sd;
  }

  void load_state_dict(const OptimizerStateDict& sd) override {
    KILN_CHECK(sd.param_groups.size() == groups_.size(), "[", name(), ".load_state_dict] loaded state dict has ",
               sd.param_groups.size(), " parameter groups but the optimizer has ", groups_.size());
    std::vector<Options> options;
    std::vector<std::optional<double>> initial_lrs;
    std::map<int64_t, std::pair<size_t, size_t>> id_to_param;  // saved id -> (group, index)
    for (size_t g = 0; g < groups_.size(); ++g) {
      const auto& saved = sd.param_groups[g];
      KILN_CHECK(saved.params.size() == groups_[g].params.size(), "[", name(), ".load_state_dict] parameter group ", g,
                 " of the loaded state dict has ", saved.params.size(), " parameters but the optimizer's has ",
                 groups_[g].params.size());
      for (size_t i = 0; i < saved.params.size(); ++i) {
        bool fresh = id_to_param.emplace(saved.params[i], std::make_pair(g, i)).second;
        KILN_CHECK(fresh, "[", name(), ".load_state_dict] parameter id ", saved.params[i],
                   " appears more than once in the loaded parameter groups");
      }
      Options o = groups_[g].options;
      detail::OptionReader reader(name(), g, saved.options);
      o.read(reader);
      std::optional<double> initial_lr;
      if (auto it = saved.options.find("initial_lr"); it != saved.options.end()) {
        double v = 0;
        reader.read("initial_lr", v);
        initial_lr = v;
      }
      reader.finish();
      o.validate(name());
      options.push_back(o);
      initial_lrs.push_back(initial_lr);
    }
    std::unordered_map<std::shared_ptr<TensorImpl>, State> state;
    for (const auto& [id, tensors] : sd.state) {
      auto it = id_to_param.find(id);
      KILN_CHECK(it != id_to_param.end(), "[", name(), ".load_state_dict] state for parameter id ", id,
                 " which is in no loaded parameter group");
      auto [g, i] = it->second;
      const Tensor& p = groups_[g].params[i];
      detail::StateReader reader(name(), id, p, tensors);
      State s = State::read(reader, options[g]);
      reader.finish();
      state.emplace(p.impl_ptr(), std::move(s));
    }
    for (size_t g = 0; g < groups_.size(); ++g) {
      groups_[g].options = options[g];
      groups_[g].initial_lr = initial_lrs[g];
    }
    state_ = std::move(state);
  }

 protected:
  explicit OptimizerBase(Options defaults) : defaults_(std::move(defaults)) {}
  // Called by the concrete constructor (name() is virtual, so not from ours).
  void init(std::vector<ParamGroup<Options>> groups) {
    defaults_.validate(name());
    KILN_CHECK(!groups.empty(), "[", name(), "] optimizer got an empty parameter list");
    for (auto& g : groups) add_param_group(std::move(g));
  }
  State& state_for(const Tensor& param) { return state_[param.impl_ptr()]; }
  Group& group_at(size_t g) {
    KILN_CHECK(g < groups_.size(), "[", name(), "] parameter group ", g, " out of range (the optimizer has ",
               groups_.size(), ")");
    return groups_[g];
  }
  const Group& group_at(size_t g) const { return const_cast<OptimizerBase*>(this)->group_at(g); }

  Options defaults_;
  std::vector<Group> groups_;
  // Keyed by the parameter itself (a strong reference, like torch's), so state follows the
  // tensor and an address is never reused while the state lives.
  std::unordered_map<std::shared_ptr<TensorImpl>, State> state_;
};

}  // namespace kiln::optim
