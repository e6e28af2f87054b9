#include "nn/optim/adam.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "nn/optim/update.h"

namespace kiln::optim {

namespace {

template <class O>
void validate_adam(const O& o, const char* opt) {
  KILN_CHECK(o.lr >= 0, "[", opt, "] invalid learning rate: ", o.lr, " (must be >= 0)");
  KILN_CHECK(o.eps >= 0, "[", opt, "] invalid epsilon value: ", o.eps, " (must be >= 0)");
  KILN_CHECK(o.betas.first >= 0 && o.betas.first < 1, "[", opt, "] invalid beta parameter at index 0: ", o.betas.first,
             " (must be in [0, 1))");
  KILN_CHECK(o.betas.second >= 0 && o.betas.second < 1, "[", opt, "] invalid beta parameter at index 1: ",
             o.betas.second, " (must be in [0, 1))");
  KILN_CHECK(o.weight_decay >= 0, "[", opt, "] invalid weight_decay value: ", o.weight_decay, " (must be >= 0)");
}

template <class O>
std::map<std::string, double> adam_map(const O& o) {
  return {{"lr", o.lr},
          {"beta1", o.betas.first},
          {"beta2", o.betas.second},
          {"eps", o.eps},
          {"weight_decay", o.weight_decay},
          {"amsgrad", o.amsgrad ? 1.0 : 0.0},
          {"maximize", o.maximize ? 1.0 : 0.0}};
}

template <class O>
void read_adam(O& o, detail::OptionReader& r) {
  r.read("lr", o.lr);
  r.read("beta1", o.betas.first);
  r.read("beta2", o.betas.second);
  r.read("eps", o.eps);
  r.read("weight_decay", o.weight_decay);
  r.read("amsgrad", o.amsgrad);
  r.read("maximize", o.maximize);
}

// One parameter's update; `decoupled` selects AdamW's weight decay. The only allocation is one
// scratch tensor (plus the decayed gradient for Adam with weight decay).
template <class O>
void adam_update(detail::StepOps& ops, Tensor& p, AdamParamState& s, const O& o, bool decoupled) {
  const Tensor& grad = p.grad();
  const auto [beta1, beta2] = o.betas;
  detail::guard_hyperparameters(o.lr, o.betas.first, o.betas.second, o.eps, o.weight_decay, o.amsgrad, o.maximize, s.step);
  Tensor g = grad;
  if (o.weight_decay != 0 && !decoupled) {
    g = ops.mul(p, o.weight_decay);
    ops.axpy_(g, grad, o.maximize ? -1.0 : 1.0);
  } else if (o.maximize) {
    g = neg(grad);
  }
  if (o.weight_decay != 0 && decoupled) ops.mul_(p, 1 - o.lr * o.weight_decay);

  if (!s.exp_avg.defined()) {
    s.exp_avg = zeros_like(p);
    s.exp_avg_sq = zeros_like(p);
  }
  if (o.amsgrad && !s.max_exp_avg_sq.defined()) s.max_exp_avg_sq = zeros_like(p);
  s.step += 1;

  // m.lerp_(g, w) with torch's two-sided formula (exact at both ends of w).
  const double w = 1 - beta1;
  Tensor scratch = sub(g, s.exp_avg);
  if (w < 0.5) {
    ops.mul_(scratch, w);
    s.exp_avg.add_(scratch);
  } else {
    ops.mul_(scratch, 1 - w);
    ops.assign_(s.exp_avg, KILN_ROW("sub"), {g, scratch});
  }
  // v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
  ops.assign_(scratch, KILN_ROW("mul"), {g, ops.number(1 - beta2, g)});
  scratch.mul_(g);
  ops.mul_(s.exp_avg_sq, beta2);
  s.exp_avg_sq.add_(scratch);

  const double t = static_cast<double>(s.step);
  const double bias_correction1 = 1 - std::pow(beta1, t);
  const double bias_correction2 = 1 - std::pow(beta2, t);
  const double step_size = o.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const Tensor* second = &s.exp_avg_sq;
  if (o.amsgrad) {
    ops.assign_(s.max_exp_avg_sq, KILN_ROW("maximum"), {s.max_exp_avg_sq, s.exp_avg_sq});
    second = &s.max_exp_avg_sq;
  }
  // denom = sqrt(v) / sqrt(bc2) + eps;  p.addcdiv_(m, denom, value=-step_size)
  ops.assign_(scratch, KILN_ROW("sqrt"), {*second});
  ops.div_(scratch, bias_correction2_sqrt);
  ops.add_(scratch, o.eps);
  ops.assign_(scratch, KILN_ROW("div"), {s.exp_avg, scratch});
  ops.mul_(scratch, step_size);
  p.sub_(scratch);
}

}  // namespace

void AdamOptions::validate(const char* opt) const { validate_adam(*this, opt); }
std::map<std::string, double> AdamOptions::to_map() const { return adam_map(*this); }
void AdamOptions::read(detail::OptionReader& r) { read_adam(*this, r); }
void AdamWOptions::validate(const char* opt) const { validate_adam(*this, opt); }
std::map<std::string, double> AdamWOptions::to_map() const { return adam_map(*this); }
void AdamWOptions::read(detail::OptionReader& r) { read_adam(*this, r); }

std::map<std::string, Tensor> AdamParamState::to_tensors() const {
  std::map<std::string, Tensor> out{{"step", scalar_tensor(static_cast<double>(step), kFloat32)},
                                    {"exp_avg", exp_avg},
                                    {"exp_avg_sq", exp_avg_sq}};
  if (max_exp_avg_sq.defined()) out["max_exp_avg_sq"] = max_exp_avg_sq;
  return out;
}

AdamParamState AdamParamState::read(detail::StateReader& r, bool amsgrad) {
  AdamParamState s;
  s.step = r.take_step();
  s.exp_avg = r.take("exp_avg", true);
  s.exp_avg_sq = r.take("exp_avg_sq", true);
  s.max_exp_avg_sq = r.take("max_exp_avg_sq", amsgrad);
  return s;
}

Adam::Adam(std::vector<ParamGroup<AdamOptions>> groups, AdamOptions defaults) : OptimizerBase(defaults) {
  init(std::move(groups));
}
Adam::Adam(std::vector<Tensor> params, AdamOptions defaults) : OptimizerBase(defaults) {
  init({ParamGroup<AdamOptions>(std::move(params))});
}
void Adam::step() {
  NoGradGuard no_grad;
  detail::StepOps ops;
  for (Group& group : groups_)
    for (Tensor& p : group.params)
      if (p.grad().defined()) adam_update(ops, p, state_for(p), group.options, /*decoupled=*/false);
}

AdamW::AdamW(std::vector<ParamGroup<AdamWOptions>> groups, AdamWOptions defaults) : OptimizerBase(defaults) {
  init(std::move(groups));
}
AdamW::AdamW(std::vector<Tensor> params, AdamWOptions defaults) : OptimizerBase(defaults) {
  init({ParamGroup<AdamWOptions>(std::move(params))});
}
void AdamW::step() {
  NoGradGuard no_grad;
  detail::StepOps ops;
  for (Group& group : groups_)
    for (Tensor& p : group.params)
      if (p.grad().defined()) adam_update(ops, p, state_for(p), group.options, /*decoupled=*/true);
}

}  // namespace kiln::optim
