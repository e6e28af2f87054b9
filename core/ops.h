#pragma once
// The public op front end (kiln::add, kiln::sum, kiln::matmul, ...). Each function checks its
// arguments, packs attributes and dispatches the op's registry row (core/op.h).
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/tensor.h"

namespace kiln {

// --- factories ------------------------------------------------------------------------------
struct TensorOptions {
  DType dtype_ = DType::Float32;
  bool has_dtype_ = false;
  Device device_ = Device(kCPU);
  bool requires_grad_ = false;
  TensorOptions() = default;
  TensorOptions(DType d) : dtype_(d), has_dtype_(true) {}  // NOLINT
  TensorOptions(Device d) : device_(d) {}                  // NOLINT
  TensorOptions(DeviceType d) : device_(d) {}              // NOLINT
  TensorOptions dtype(DType d) const { auto o = *this; o.dtype_ = d; o.has_dtype_ = true; return o; }
  TensorOptions device(Device d) const { auto o = *this; o.device_ = d; return o; }
  TensorOptions requires_grad(bool r = true) const { auto o = *this; o.requires_grad_ = r; return o; }
  DType dtype_or(DType fallback) const { return has_dtype_ ? dtype_ : fallback; }
};
inline TensorOptions dtype(DType d) { return TensorOptions(d); }
inline TensorOptions device(Device d) { return TensorOptions(d); }

Tensor empty(IntArrayRef sizes, DType dtype, Device device = Device(kCPU));
Tensor empty(IntArrayRef sizes, const TensorOptions& opts = {});
Tensor empty_strided(IntArrayRef sizes, IntArrayRef strides, const TensorOptions& opts = {});
Tensor zeros(IntArrayRef sizes, const TensorOptions& opts = {});
Tensor ones(IntArrayRef sizes, const TensorOptions& opts = {});
Tensor full(IntArrayRef sizes, const Scalar& value, const TensorOptions& opts = {});
Tensor full(IntArrayRef sizes, const Scalar& value, DType dtype, Device device);
Tensor empty_like(const Tensor& t, std::optional<DType> dtype = std::nullopt);
Tensor zeros_like(const Tensor& t, std::optional<DType> dtype = std::nullopt);
Tensor ones_like(const Tensor& t, std::optional<DType> dtype = std::nullopt);
Tensor full_like(const Tensor& t, const Scalar& value, std::optional<DType> dtype = std::nullopt);
Tensor rand_like(const Tensor& t);
Tensor randn_like(const Tensor& t);
Tensor arange(const Scalar& end, const TensorOptions& opts = {});
Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step = 1, const TensorOptions& opts = {});
Tensor linspace(double start, double end, int64_t steps, const TensorOptions& opts = {});
Tensor eye(int64_t n, std::optional<int64_t> m = std::nullopt, const TensorOptions& opts = {});
// Wraps external memory without copying; `deleter` (optional) is called when the last view dies.
Tensor from_blob(void* data, IntArrayRef sizes, DType dtype, std::function<void(void*)> deleter = nullptr);
Tensor from_blob(void* data, IntArrayRef sizes, IntArrayRef strides, DType dtype,
                 std::function<void(void*)> deleter = nullptr);

// tensor({1, 2, 3}), tensor({{1, 2}, {3, 4}}): nested braces give the shape; ints make int64,
// floating values the default dtype, bools bool (as torch.tensor does).
class NestedList {
 public:
  NestedList(double v) : scalar_(v), kind_(Scalar::Kind::Float) {}            // NOLINT
  NestedList(float v) : scalar_(static_cast<double>(v)), kind_(Scalar::Kind::Float) {}  // NOLINT
  NestedList(int v) : scalar_(static_cast<int64_t>(v)), kind_(Scalar::Kind::Int) {}  // NOLINT
  NestedList(int64_t v) : scalar_(v), kind_(Scalar::Kind::Int) {}             // NOLINT
  NestedList(bool v) : scalar_(v), kind_(Scalar::Kind::Bool) {}               // NOLINT
  NestedList(std::initializer_list<NestedList> l) : children_(l), is_list_(true) {}  // NOLINT
  bool is_list() const { return is_list_; }
  const std::vector<NestedList>& children() const { return children_; }
  const Scalar& scalar() const { return scalar_; }
  Scalar::Kind kind() const { return kind_; }

 private:
  Scalar scalar_;
  Scalar::Kind kind_ = Scalar::Kind::Int;
  std::vector<NestedList> children_;
  bool is_list_ = false;
};
Tensor tensor(const NestedList& values, const TensorOptions& opts = {});
template <class T>
Tensor tensor(const std::vector<T>& values, const TensorOptions& opts = {}) {
  DType dt = opts.dtype_or(std::is_floating_point_v<T> ? default_dtype() : dtype_of<T>);
  Tensor cpu = empty({static_cast<int64_t>(values.size())}, dtype_of<T>);
  std::copy(values.begin(), values.end(), cpu.data_ptr<T>());
  return cpu.to(opts.device_, dt);
}
Tensor scalar_tensor(const Scalar& s, const TensorOptions& opts = {});

// --- RNG ------------------------------------------------------------------------------------
void manual_seed(uint64_t seed);
Tensor rand(IntArrayRef sizes, const TensorOptions& opts = {});
Tensor randn(IntArrayRef sizes, const TensorOptions& opts = {});
Tensor randint(int64_t low, int64_t high, IntArrayRef sizes, const TensorOptions& opts = {});
Tensor randint(int64_t high, IntArrayRef sizes, const TensorOptions& opts = {});
Tensor randperm(int64_t n, const TensorOptions& opts = {});
Tensor bernoulli(const Tensor& p);
Tensor normal(double mean, double std, IntArrayRef sizes, const TensorOptions& opts = {});

// --- pointwise ------------------------------------------------------------------------------
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor exp2(const Tensor& x);
Tensor log(const Tensor& x);
Tensor log2(const Tensor& x);
Tensor log10(const Tensor& x);
Tensor log1p(const Tensor& x);
Tensor expm1(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor tan(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x, const std::string& approximate = "none");  // "none" (erf) | "tanh"
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);
Tensor erf(const Tensor& x);
Tensor floor(const Tensor& x);
Tensor ceil(const Tensor& x);
Tensor round(const Tensor& x);
Tensor trunc(const Tensor& x);
Tensor logical_not(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b, const Scalar& alpha = 1);
Tensor add(const Tensor& a, const Scalar& b, const Scalar& alpha = 1);
Tensor sub(const Tensor& a, const Tensor& b, const Scalar& alpha = 1);
Tensor sub(const Tensor& a, const Scalar& b, const Scalar& alpha = 1);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Scalar& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Scalar& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Scalar& b);
Tensor pow(const Scalar& a, const Tensor& b);
Tensor fmod(const Tensor& a, const Tensor& b);
Tensor fmod(const Tensor& a, const Scalar& b);
Tensor remainder(const Tensor& a, const Tensor& b);
Tensor remainder(const Tensor& a, const Scalar& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Scalar& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b);
Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max = std::nullopt);
Tensor clamp(const Tensor& x, const std::optional<Tensor>& min, const std::optional<Tensor>& max);
Tensor masked_fill(const Tensor& x, const Tensor& mask, const Scalar& value);
Tensor masked_fill(const Tensor& x, const Tensor& mask, const Tensor& value);
// Pointwise op by registry name on tensors (used by tests and the JIT); scalars must be wrapped.
Tensor pointwise(const std::string& op_name, const TensorList& inputs);

// --- reductions -----------------------------------------------------------------------------
Tensor sum(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false, std::optional<DType> dtype = std::nullopt);
Tensor mean(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false, std::optional<DType> dtype = std::nullopt);
Tensor prod(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false, std::optional<DType> dtype = std::nullopt);
Tensor amax(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false);
Tensor amin(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false);
Tensor max(const Tensor& x);
Tensor min(const Tensor& x);
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);  // values, indices
std::tuple<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor var(const Tensor& x, IntArrayRef dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor std(const Tensor& x, IntArrayRef dims = {}, int64_t correction = 1, bool keepdim = false);
std::tuple<Tensor, Tensor> var_mean(const Tensor& x, IntArrayRef dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor logsumexp(const Tensor& x, IntArrayRef dims, bool keepdim = false);
Tensor all(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false);
Tensor any(const Tensor& x, IntArrayRef dims = {}, bool keepdim = false);
Tensor softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype = std::nullopt);
Tensor log_softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype = std::nullopt);
Tensor cumsum(const Tensor& x, int64_t dim, std::optional<DType> dtype = std::nullopt);
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8, bool equal_nan = false);
bool equal(const Tensor& a, const Tensor& b);

// --- linear algebra -------------------------------------------------------------------------
Tensor mm(const Tensor& a, const Tensor& b);
Tensor bmm(const Tensor& a, const Tensor& b);
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias = std::nullopt);

// --- structure and indexing -----------------------------------------------------------------
Tensor cat(const TensorList& tensors, int64_t dim = 0);
Tensor stack(const TensorList& tensors, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
std::vector<Tensor> split_with_sizes(const Tensor& x, IntArrayRef sizes, int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
std::vector<Tensor> unbind(const Tensor& x, int64_t dim = 0);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Scalar& value);
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx = std::nullopt);
Tensor one_hot(const Tensor& indices, int64_t num_classes = -1);
Tensor tril(const Tensor& x, int64_t diagonal = 0);
Tensor triu(const Tensor& x, int64_t diagonal = 0);

// --- neural network -------------------------------------------------------------------------
Tensor conv2d(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias = std::nullopt,
              IntArrayRef stride = {1, 1}, IntArrayRef padding = {0, 0}, IntArrayRef dilation = {1, 1},
              int64_t groups = 1);
Tensor max_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride = {},
                  IntArrayRef padding = {0, 0}, IntArrayRef dilation = {1, 1}, bool ceil_mode = false);
Tensor avg_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride = {},
                  IntArrayRef padding = {0, 0}, bool ceil_mode = false, bool count_include_pad = true);
Tensor layer_norm(const Tensor& input, IntArrayRef normalized_shape,
                  const std::optional<Tensor>& weight = std::nullopt,
                  const std::optional<Tensor>& bias = std::nullopt, double eps = 1e-5);
Tensor dropout(const Tensor& input, double p = 0.5, bool train = true);
enum class Reduction { None, Mean, Sum };
Tensor cross_entropy(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight = std::nullopt,
                     Reduction reduction = Reduction::Mean, int64_t ignore_index = -100,
                     double label_smoothing = 0.0);
Tensor nll_loss(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight = std::nullopt,
                Reduction reduction = Reduction::Mean, int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);

// --- backward ops ---------------------------------------------------------------------------
// The kernels behind the vjps of conv2d and the pools (autograd/vjp_conv.cpp), public so that
// they can be tested, traced and differentiated again. Each takes the forward's arguments and the
// size of the tensor it produces.
Tensor conv2d_backward_input(const Tensor& grad_output, const Tensor& weight, IntArrayRef input_size,
                             IntArrayRef stride = {1, 1}, IntArrayRef padding = {0, 0},
                             IntArrayRef dilation = {1, 1}, int64_t groups = 1);
Tensor conv2d_backward_weight(const Tensor& grad_output, const Tensor& input, IntArrayRef weight_size,
                              IntArrayRef stride = {1, 1}, IntArrayRef padding = {0, 0},
                              IntArrayRef dilation = {1, 1}, int64_t groups = 1);
// The flat position (h * W + w) in its plane of each max_pool2d window's maximum (int64): the
// first maximum on ties, a NaN if present, as PyTorch's return_indices; -1 where a dilated window
// misses the input entirely.
Tensor max_pool2d_indices(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride = {},
                          IntArrayRef padding = {0, 0}, IntArrayRef dilation = {1, 1}, bool ceil_mode = false);
// Zeros of input_size with each grad_output value added at its window's index (-1: none).
Tensor max_pool2d_backward(const Tensor& grad_output, const Tensor& indices, IntArrayRef input_size);
Tensor avg_pool2d_backward(const Tensor& grad_output, IntArrayRef input_size, IntArrayRef kernel_size,
                           IntArrayRef stride = {}, IntArrayRef padding = {0, 0}, bool ceil_mode = false,
                           bool count_include_pad = true);

// --- threads --------------------------------------------------------------------------------
// Governs OpenMP (our kernels) and oneDNN alike.
void set_num_threads(int n);
int get_num_threads();

}  // namespace kiln
