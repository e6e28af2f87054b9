#pragma once
// torch.optim.SGD: momentum (with dampening), Nesterov momentum, L2 weight decay, maximize.
#include <map>
#include <string>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Defaults as PyTorch 2.x (lr 1e-3). Build with designated initializers:
// `SGD(params, {.lr = 0.1, .momentum = 0.9, .nesterov = true})`.
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
  bool maximize = false;

  void validate(const char* opt) const;
  std::map<std::string, double> to_map() const;
  void read(detail::OptionReader& r);
};

struct SGDParamState {
  Tensor momentum_buffer;  // created at the first step when momentum != 0

  std::map<std::string, Tensor> to_tensors() const;
  static SGDParamState read(detail::StateReader& r, const SGDOptions& options);
};

class SGD : public OptimizerBase<SGDOptions, SGDParamState> {
 public:
  SGD(std::vector<ParamGroup<SGDOptions>> groups, SGDOptions defaults = {});
  SGD(std::vector<Tensor> params, SGDOptions defaults = {});

  // Per parameter, with g its gradient (negated when maximize):
  //   g += weight_decay * p
  //   momentum != 0: buf = g at the first step, else buf = momentum * buf + (1 - dampening) * g;
  //                  g = nesterov ? g + momentum * buf : buf
  //   p -= lr * g
  void step() override;
  const char* name() const override { return "SGD"; }
};

}  // namespace kiln::optim
