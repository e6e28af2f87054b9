#pragma once
// torch.optim.Adam and torch.optim.AdamW: one update, with weight decay either added to the
// gradient (Adam, L2) or applied to the parameter (AdamW, decoupled).
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// Defaults as PyTorch. `Adam(params, {.lr = 3e-4, .betas = {0.9, 0.95}, .amsgrad = true})`.
struct AdamOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;

  void validate(const char* opt) const;
  std::map<std::string, double> to_map() const;
  void read(detail::OptionReader& r);
};

// The same fields; only weight_decay's default differs (1e-2, as torch.optim.AdamW).
struct AdamWOptions {
  double lr = 1e-3;
  std::pair<double, double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;

  void validate(const char* opt) const;
  std::map<std::string, double> to_map() const;
  void read(detail::OptionReader& r);
};

struct AdamParamState {
  int64_t step = 0;        // updates of this parameter so far (bias correction uses it)
  Tensor exp_avg;          // first moment
  Tensor exp_avg_sq;       // second moment
  Tensor max_exp_avg_sq;   // running max of exp_avg_sq (amsgrad only)

  // "step" is a 0-dim float32 tensor, as PyTorch stores it.
  std::map<std::string, Tensor> to_tensors() const;
  static AdamParamState read(detail::StateReader& r, const AdamOptions& o) { return read(r, o.amsgrad); }
  static AdamParamState read(detail::StateReader& r, const AdamWOptions& o) { return read(r, o.amsgrad); }
  static AdamParamState read(detail::StateReader& r, bool amsgrad);
};

// Per parameter, with g its gradient (negated when maximize) and t its step count:
//   g += weight_decay * p                         (Adam)      p *= 1 - lr * weight_decay   (AdamW)
//   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g;  amsgrad: vmax = max(vmax, v)
//   p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)
class Adam : public OptimizerBase<AdamOptions, AdamParamState> {
 public:
  Adam(std::vector<ParamGroup<AdamOptions>> groups, AdamOptions defaults = {});
  Adam(std::vector<Tensor> params, AdamOptions defaults = {});
  void step() override;
  const char* name() const override { return "Adam"; }
};

class AdamW : public OptimizerBase<AdamWOptions, AdamParamState> {
 public:
  AdamW(std::vector<ParamGroup<AdamWOptions>> groups, AdamWOptions defaults = {});
  AdamW(std::vector<Tensor> params, AdamWOptions defaults = {});
  void step() override;
  const char* name() const override { return "AdamW"; }
};

}  // namespace kiln::optim
