#pragma once
// torch.optim.lr_scheduler: StepLR and CosineAnnealingLR. A scheduler writes each group's lr
// into the optimizer at construction (epoch 0) and at every step(); it uses PyTorch's chainable
// recurrences, so an lr changed by hand between steps is carried forward as in PyTorch.
#include <cstdint>
#include <vector>

#include "nn/optim/optimizer.h"

namespace kiln::optim {

// A scheduler's counters, to resume it (PyTorch's scheduler.state_dict()).
struct LRSchedulerState {
  int64_t last_epoch = 0;
  int64_t step_count = 0;
  std::vector<double> base_lrs;
  std::vector<double> last_lr;
};

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch and writes the new learning rates into the optimizer's groups.
  void step();
  // The learning rates written by the latest step (or by the constructor).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }

  // Resuming: build the scheduler over the restored optimizer, then load its counters. The
  // optimizer's lr is left as restored (as in PyTorch).
  LRSchedulerState state_dict() const { return {last_epoch_, step_count_, base_lrs_, last_lr_}; }
  void load_state_dict(const LRSchedulerState& state);

 protected:
  // last_epoch == -1 starts fresh: each group's current lr becomes its initial_lr (unless a
  // scheduler set one before). Resuming (last_epoch >= 0) needs initial_lr in every group, e.g.
  // from a loaded optimizer state_dict.
  LRScheduler(Optimizer& optimizer, int64_t last_epoch, const char* name);
  // The derived constructor calls this once its fields are set (get_lr is virtual).
  void initial_step() { step(); }
  // Learning rates for last_epoch_, from the groups' current lr (PyTorch's get_lr()).
  virtual std::vector<double> get_lr() const = 0;

  Optimizer& optimizer_;
  const char* name_;
  int64_t last_epoch_;
  int64_t step_count_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
};

// lr = initial_lr * gamma ^ (epoch / step_size)   (integer division)
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1, int64_t last_epoch = -1);

 protected:
  std::vector<double> get_lr() const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, continued past
// T_max as the same cosine (rising back after T_max, as PyTorch's recurrence does).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0, int64_t last_epoch = -1);

 protected:
  std::vector<double> get_lr() const override;

 private:
  int64_t T_max_;
  double eta_min_;
};

}  // namespace kiln::optim
