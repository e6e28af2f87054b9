#include "nn/optim/lr_scheduler.h"

#include <cmath>
#include <numbers>

namespace kiln::optim {

LRScheduler::LRScheduler(Optimizer& optimizer, int64_t last_epoch, const char* name)
    : optimizer_(optimizer), name_(name), last_epoch_(last_epoch) {
  KILN_CHECK(last_epoch >= -1, "[", name_, "] last_epoch must be >= -1, got ", last_epoch);
  for (size_t g = 0; g < optimizer.num_param_groups(); ++g) {
    if (last_epoch == -1) {
      if (!optimizer.initial_lr(g)) optimizer.set_initial_lr(g, optimizer.lr(g));
    } else {
      KILN_CHECK(optimizer.initial_lr(g).has_value(), "[", name_, "] param 'initial_lr' is not specified in param_groups[",
                 g, "] when resuming an optimizer (last_epoch ", last_epoch, ")");
    }
    base_lrs_.push_back(*optimizer.initial_lr(g));
  }
}

void LRScheduler::step() {
  KILN_CHECK(optimizer_.num_param_groups() == base_lrs_.size(), "[", name_, "] the optimizer has ",
             optimizer_.num_param_groups(), " parameter groups but the scheduler was created for ", base_lrs_.size());
  ++step_count_;
  ++last_epoch_;
  std::vector<double> lrs = get_lr();
  for (size_t g = 0; g < lrs.size(); ++g) optimizer_.set_lr(g, lrs[g]);
  last_lr_ = std::move(lrs);
}

void LRScheduler::load_state_dict(const LRSchedulerState& state) {
  KILN_CHECK(state.base_lrs.size() == base_lrs_.size() && state.last_lr.size() == base_lrs_.size(), "[", name_,
             ".load_state_dict] the state has ", state.base_lrs.size(), " base lrs and ", state.last_lr.size(),
             " last lrs but the scheduler has ", base_lrs_.size(), " parameter groups");
  KILN_CHECK(state.last_epoch >= -1 && state.step_count >= 0, "[", name_, ".load_state_dict] invalid counters: last_epoch ",
             state.last_epoch, ", step_count ", state.step_count);
  last_epoch_ = state.last_epoch;
  step_count_ = state.step_count;
  base_lrs_ = state.base_lrs;
  last_lr_ = state.last_lr;
}

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch, "StepLR"), step_size_(step_size), gamma_(gamma) {
  KILN_CHECK(step_size > 0, "[StepLR] step_size must be positive, got ", step_size);
  initial_step();
}

std::vector<double> StepLR::get_lr() const {
  std::vector<double> out;
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    double lr = optimizer_.lr(g);
    out.push_back(last_epoch_ == 0 || last_epoch_ % step_size_ != 0 ? lr : lr * gamma_);
  }
  return out;
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch, "CosineAnnealingLR"), T_max_(T_max), eta_min_(eta_min) {
  KILN_CHECK(T_max > 0, "[CosineAnnealingLR] T_max must be positive, got ", T_max);
  initial_step();
}

std::vector<double> CosineAnnealingLR::get_lr() const {
  constexpr double pi = std::numbers::pi;
  const double e = static_cast<double>(last_epoch_), T = static_cast<double>(T_max_);
  std::vector<double> out;
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    const double lr = optimizer_.lr(g), base = base_lrs_[g];
    if (last_epoch_ == 0) {
      out.push_back(lr);
    } else if (step_count_ == 1 && last_epoch_ > 0) {
      // Resuming: the closed form (the recurrence has no previous value to start from).
      out.push_back(eta_min_ + (base - eta_min_) * (1 + std::cos(e * pi / T)) / 2);
    } else if ((last_epoch_ - 1 - T_max_) % (2 * T_max_) == 0) {
      // The step leaving a minimum, where the ratio below would divide by zero.
      out.push_back(lr + (base - eta_min_) * (1 - std::cos(pi / T)) / 2);
    } else {
      out.push_back((1 + std::cos(pi * e / T)) / (1 + std::cos(pi * (e - 1) / T)) * (lr - eta_min_) + eta_min_);
    }
  }
  return out;
}

}  // namespace kiln::optim
