#pragma once
// BatchNorm1d, BatchNorm2d and LayerNorm.
#include <optional>
#include <vector>

#include "nn/module.h"

namespace kiln::nn {

struct BatchNormOptions {
  int64_t num_features;
  double eps = 1e-5;
  // nullopt: cumulative moving average (factor 1 / num_batches_tracked), as momentum=None in PyTorch.
  std::optional<double> momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};

// Training normalises with the batch mean and biased variance and moves running_mean /
// running_var towards the batch mean and unbiased variance; eval uses the running statistics
// (or batch statistics when track_running_stats is false). weight = 1, bias = 0, running_mean = 0,
// running_var = 1, num_batches_tracked = 0 (int64), as in PyTorch.
template <class Derived>
class BatchNormBase : public Cloneable<Derived> {
 public:
  explicit BatchNormBase(const BatchNormOptions& options);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  void reset_running_stats();
  void reset_parameters();

  BatchNormOptions options;
  Tensor weight;               // [num_features], undefined unless affine
  Tensor bias;                 // [num_features], undefined unless affine
  Tensor running_mean;         // [num_features], undefined unless track_running_stats
  Tensor running_var;          // [num_features], undefined unless track_running_stats
  Tensor num_batches_tracked;  // int64 scalar, undefined unless track_running_stats

 protected:
  BatchNormBase(const BatchNormBase&) = default;
  void reset() override;
  virtual void check_input_dim(const Tensor& input) const = 0;
};

// Input (N, C) or (N, C, L).
class BatchNorm1d : public BatchNormBase<BatchNorm1d> {
 public:
  explicit BatchNorm1d(const BatchNormOptions& options) : BatchNormBase(options) {}
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, std::optional<double> momentum = 0.1,
                       bool affine = true, bool track_running_stats = true)
      : BatchNormBase(BatchNormOptions{num_features, eps, momentum, affine, track_running_stats}) {}

 protected:
  void check_input_dim(const Tensor& input) const override;
};

// Input (N, C, H, W).
class BatchNorm2d : public BatchNormBase<BatchNorm2d> {
 public:
  explicit BatchNorm2d(const BatchNormOptions& options) : BatchNormBase(options) {}
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, std::optional<double> momentum = 0.1,
                       bool affine = true, bool track_running_stats = true)
      : BatchNormBase(BatchNormOptions{num_features, eps, momentum, affine, track_running_stats}) {}

 protected:
  void check_input_dim(const Tensor& input) const override;
};

// Normalises over the trailing dims given by normalized_shape; weight = 1, bias = 0.
class LayerNorm : public Cloneable<LayerNorm> {
 public:
  explicit LayerNorm(std::vector<int64_t> normalized_shape, double eps = 1e-5, bool elementwise_affine = true,
                     bool bias = true);
  explicit LayerNorm(int64_t normalized_shape, double eps = 1e-5, bool elementwise_affine = true, bool bias = true)
      : LayerNorm(std::vector<int64_t>{normalized_shape}, eps, elementwise_affine, bias) {}
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  void reset_parameters();

  std::vector<int64_t> normalized_shape;
  double eps;
  bool elementwise_affine;
  bool has_bias;
  Tensor weight;  // undefined unless elementwise_affine
  Tensor bias;    // undefined unless elementwise_affine and bias

 protected:
  void reset() override;
};

extern template class BatchNormBase<BatchNorm1d>;
extern template class BatchNormBase<BatchNorm2d>;

}  // namespace kiln::nn
