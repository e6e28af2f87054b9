#include "nn/optim/sgd.h"

#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "nn/optim/update.h"

namespace kiln::optim {

void SGDOptions::validate(const char* opt) const {
  KILN_CHECK(lr >= 0, "[", opt, "] invalid learning rate: ", lr, " (must be >= 0)");
  KILN_CHECK(momentum >= 0, "[", opt, "] invalid momentum value: ", momentum, " (must be >= 0)");
  KILN_CHECK(weight_decay >= 0, "[", opt, "] invalid weight_decay value: ", weight_decay, " (must be >= 0)");
  KILN_CHECK(dampening == dampening, "[", opt, "] invalid dampening value: ", dampening);
  KILN_CHECK(!nesterov || (momentum > 0 && dampening == 0), "[", opt,
             "] Nesterov momentum requires a momentum and zero dampening, got momentum ", momentum, " and dampening ",
             dampening);
}

std::map<std::string, double> SGDOptions::to_map() const {
  return {{"lr", lr},
          {"momentum", momentum},
          {"dampening", dampening},
          {"weight_decay", weight_decay},
          {"nesterov", nesterov ? 1.0 : 0.0},
          {"maximize", maximize ? 1.0 : 0.0}};
}

void SGDOptions::read(detail::OptionReader& r) {
  r.read("lr", lr);
  r.read("momentum", momentum);
  r.read("dampening", dampening);
  r.read("weight_decay", weight_decay);
  r.read("nesterov", nesterov);
  r.read("maximize", maximize);
}

std::map<std::string, Tensor> SGDParamState::to_tensors() const {
  if (!momentum_buffer.defined()) return {};
  return {{"momentum_buffer", momentum_buffer}};
}

SGDParamState SGDParamState::read(detail::StateReader& r, const SGDOptions&) {
  // A missing buffer is recreated at the next step, as in PyTorch.
  return SGDParamState{r.take("momentum_buffer", /*required=*/false)};
}

SGD::SGD(std::vector<ParamGroup<SGDOptions>> groups, SGDOptions defaults) : OptimizerBase(defaults) {
  init(std::move(groups));
}

SGD::SGD(std::vector<Tensor> params, SGDOptions defaults) : OptimizerBase(defaults) {
  init({ParamGroup<SGDOptions>(std::move(params))});
}

void SGD::step() {
  NoGradGuard no_grad;
  detail::StepOps ops;
  for (Group& group : groups_) {
    const SGDOptions& o = group.options;
    detail::guard_hyperparameters(o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, o.maximize);
    // The sign is carried into scalars instead of negating the gradient: -a * -g == a * g exactly.
    const double sign = o.maximize ? -1.0 : 1.0;
    for (Tensor& p : group.params) {
      const Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      // `d` is the direction d_p when it differs from sign * grad (then undefined).
      Tensor d;
      if (o.weight_decay != 0) {
        d = ops.mul(p, o.weight_decay);
        ops.axpy_(d, grad, sign);
      }
      if (o.momentum != 0) {
        Tensor& buf = state_for(p).momentum_buffer;
        if (!buf.defined()) {
          buf = d.defined() ? d : (o.maximize ? neg(grad) : grad.clone());
        } else {
          ops.mul_(buf, o.momentum);
          if (d.defined())
            ops.axpy_(buf, d, 1 - o.dampening);
          else
            ops.axpy_(buf, grad, sign * (1 - o.dampening));
        }
        if (o.nesterov) {
          Tensor t = ops.mul(buf, o.momentum);
          if (d.defined())
            t.add_(d);
          else
            ops.axpy_(t, grad, sign);
          d = std::move(t);
        } else {
          d = buf;
        }
      }
      if (d.defined())
        ops.axpy_(p, d, -o.lr);
      else
        ops.axpy_(p, grad, -o.lr * sign);
    }
  }
}

}  // namespace kiln::optim
