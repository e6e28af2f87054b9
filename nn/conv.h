#pragma once
// Conv2d, MaxPool2d, AvgPool2d over (N, C, H, W) or unbatched (C, H, W) inputs.
#include <optional>

#include "nn/expanding_array.h"
#include "nn/module.h"

namespace kiln::nn {

struct Conv2dOptions {
  int64_t in_channels;
  int64_t out_channels;
  ExpandingArray<2> kernel_size;
  ExpandingArray<2> stride = 1;
  ExpandingArray<2> padding = 0;
  ExpandingArray<2> dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};

// weight [out, in / groups, kH, kW] and bias [out], initialised as PyTorch does
// (kaiming_uniform_(a = sqrt(5)); bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))). Zero padding.
class Conv2d : public Cloneable<Conv2d> {
 public:
  explicit Conv2d(const Conv2dOptions& options);
  Conv2d(int64_t in_channels, int64_t out_channels, ExpandingArray<2> kernel_size, ExpandingArray<2> stride = 1,
         ExpandingArray<2> padding = 0, ExpandingArray<2> dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  void reset_parameters();

  Conv2dOptions options;
  Tensor weight;
  Tensor bias;  // undefined without bias

 protected:
  void reset() override;
};

struct MaxPool2dOptions {
  ExpandingArray<2> kernel_size;
  std::optional<ExpandingArray<2>> stride = std::nullopt;  // default: kernel_size
  ExpandingArray<2> padding = 0;
  ExpandingArray<2> dilation = 1;
  bool ceil_mode = false;
};

class MaxPool2d : public Cloneable<MaxPool2d> {
 public:
  explicit MaxPool2d(const MaxPool2dOptions& options);
  explicit MaxPool2d(ExpandingArray<2> kernel_size, std::optional<ExpandingArray<2>> stride = std::nullopt,
                     ExpandingArray<2> padding = 0, ExpandingArray<2> dilation = 1, bool ceil_mode = false);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  MaxPool2dOptions options;
};

struct AvgPool2dOptions {
  ExpandingArray<2> kernel_size;
  std::optional<ExpandingArray<2>> stride = std::nullopt;  // default: kernel_size
  ExpandingArray<2> padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;
};

class AvgPool2d : public Cloneable<AvgPool2d> {
 public:
  explicit AvgPool2d(const AvgPool2dOptions& options);
  explicit AvgPool2d(ExpandingArray<2> kernel_size, std::optional<ExpandingArray<2>> stride = std::nullopt,
                     ExpandingArray<2> padding = 0, bool ceil_mode = false, bool count_include_pad = true);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  AvgPool2dOptions options;
};

}  // namespace kiln::nn
