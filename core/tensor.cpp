// Tensor methods: thin forwards to the op front end (core/ops.h), plus data access and copies.
#include "core/tensor.h"

#include <cstring>
#include <sstream>

#include "autograd/grad_mode.h"
#include "autograd/record.h"
#include "core/op.h"
#include "core/trace_hook.h"
#include "core/ops.h"
#include "core/shape.h"

namespace kiln {

TensorImpl* Tensor::checked() const {
  KILN_CHECK(impl_ != nullptr, "[Tensor] operation on an undefined tensor");
  return impl_.get();
}

int64_t Tensor::size(int64_t d) const {
  KILN_CHECK(dim() > 0, "[size] dimension specified as ", d, " but tensor has no dimensions");
  return checked()->sizes()[wrap_dim("size", d, dim())];
}
int64_t Tensor::stride(int64_t d) const {
  KILN_CHECK(dim() > 0, "[stride] dimension specified as ", d, " but tensor has no dimensions");
  return checked()->strides()[wrap_dim("stride", d, dim())];
}

void* Tensor::data_ptr() const {
  TensorImpl* t = checked();
  if (auto* hook = detail::trace_hook()) [[unlikely]]
    hook->note_host_read(*this);
  return t->data();
}

Scalar Tensor::item() const {
  KILN_CHECK(numel() == 1, "[item] a Tensor with ", numel(), " elements cannot be converted to Scalar");
  detail::note_data_access("item()");
  Tensor c = is_cpu() ? *this : to(Device(kCPU));
  Scalar out;
  KILN_DISPATCH_ALL_TYPES(c.dtype(), "item", {
    scalar_t v = *static_cast<const scalar_t*>(c.data_ptr());
    if constexpr (std::is_same_v<scalar_t, bool>) out = Scalar(v);
    else if constexpr (std::is_integral_v<scalar_t>) out = Scalar(static_cast<int64_t>(v));
    else out = Scalar(static_cast<double>(static_cast<opmath_t<scalar_t>>(v)));
  });
  return out;
}

// --- conversion ---------------------------------------------------------------------------------

Tensor Tensor::to(DType dt, bool copy) const { return to(device(), dt, copy); }
Tensor Tensor::to(Device dev, bool copy) const { return to(dev, dtype(), copy); }
Tensor Tensor::to(Device dev, DType dt, bool copy) const {
  if (!copy && dt == dtype() && dev == device()) return *this;
  Tensor out = empty(sizes(), dt, dev);
  out.copy_(*this);
  return out;
}

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor out = empty(sizes(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor& Tensor::copy_(const Tensor& src) {
  KILN_CHECK(src.defined(), "[copy_] source is an undefined tensor");
  Shape b = broadcast_shapes("copy_", sizes(), src.sizes());
  KILN_CHECK(IntArrayRef(b) == sizes(), "[copy_] source of shape ", src.sizes(),
             " cannot be broadcast to the destination shape ", sizes());
  const OpDef& op = KILN_ROW("copy");
  auto rec = autograd::begin_inplace(op, *this, {src}, Attrs{dtype()});
  auto* hook = detail::trace_hook();
  if (hook && device() == src.device() && hook->record_mutation(op, *this, {src}, Attrs{dtype()}, dtype())) {
    impl_->storage()->bump_version();  // captured: the graph runs the copy
  } else {
    NoGradGuard no_grad;
    Tensor s = src;
    if (s.impl()->storage() == impl_->storage() && !s.is_same(*this)) s = s.clone();  // overlapping views
    if (device() != s.device()) {
      // Cross-device copies go through the device backend's copy hook on contiguous buffers.
      const DeviceAllocator* a = device_allocator(device().is_cpu() ? s.device().type() : device().type());
      KILN_CHECK(a && a->copy, "[copy_] no backend to copy from ", s.device(), " to ", device());
      Tensor staged = s.expand(sizes()).contiguous().to(s.device(), dtype());
      Tensor dst = is_contiguous() ? *this : empty(sizes(), dtype(), device());
      a->copy(dst.data_ptr(), device(), staged.data_ptr(), staged.device(), nbytes());
      if (!dst.is_same(*this)) copy_(dst);
    } else {
      TensorList outs{*this};
      op.kernels[static_cast<int>(device().type())](op, {s}, outs, Attrs{dtype()});
    }
    impl_->storage()->bump_version();
  }
  autograd::finish_inplace(rec.get(), *this);
  return *this;
}

Tensor& Tensor::fill_(const Scalar& value) {
  const OpDef& op = KILN_ROW("fill");
  KernelFn k = op.kernels[static_cast<int>(device().type())];
  KILN_CHECK(k != nullptr, "[fill_] has no implementation for ", device());
  Attrs attrs{value, sizes().vec(), dtype()};
  auto rec = autograd::begin_inplace(op, *this, {}, attrs);
  auto* hook = detail::trace_hook();
  if (!hook || !hook->record_mutation(op, *this, {}, attrs, dtype())) {
    TensorList outs{*this};
    k(op, {}, outs, attrs);
  }
  impl_->storage()->bump_version();
  autograd::finish_inplace(rec.get(), *this);
  return *this;
}
Tensor& Tensor::fill_(const Tensor& value) {
  KILN_CHECK(value.dim() == 0, "[fill_] only supports 0-dimension value tensor but got tensor with ", value.dim(),
             " dimensions");
  return fill_(value.item());
}
Tensor& Tensor::zero_() { return fill_(Scalar(0)); }

// --- views ----------------------------------------------------------------------------------------

Tensor Tensor::view(IntArrayRef shape) const { return call_op1(KILN_ROW("view"), {*this}, {shape.vec()}); }
Tensor Tensor::reshape(IntArrayRef shape) const {
  Shape sizes = infer_size("reshape", shape, numel());
  // The view keeps the caller's -1, so a captured graph stays valid when a batch dim varies.
  if (view_strides(this->sizes(), strides(), sizes)) return view(shape);
  return clone().view(shape);  // copies only when no view can express it
}
Tensor Tensor::permute(IntArrayRef dims) const { return call_op1(KILN_ROW("permute"), {*this}, {dims.vec()}); }
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return call_op1(KILN_ROW("transpose"), {*this}, {d0, d1}); }
Tensor Tensor::t() const {
  KILN_CHECK(dim() <= 2, "[t] expects a tensor with <= 2 dimensions, but self is ", dim(), "D");
  return dim() < 2 ? call_op1(KILN_ROW("alias"), {*this}) : transpose(0, 1);  // a new view, as PyTorch
}
Tensor Tensor::unsqueeze(int64_t d) const { return call_op1(KILN_ROW("unsqueeze"), {*this}, {d}); }
Tensor Tensor::squeeze() const { return call_op1(KILN_ROW("squeeze"), {*this}, {Shape{}}); }
Tensor Tensor::squeeze(int64_t d) const {
  if (dim() == 0) { wrap_dim("squeeze", d, 0); return call_op1(KILN_ROW("alias"), {*this}); }
  return call_op1(KILN_ROW("squeeze"), {*this}, {Shape{d}});
}
Tensor Tensor::flatten(int64_t start, int64_t end) const {
  int64_t s = wrap_dim("flatten", start, dim()), e = wrap_dim("flatten", end, dim());
  KILN_CHECK(s <= e, "[flatten] start_dim (", start, ") cannot come after end_dim (", end, ")");
  if (dim() == 0) return reshape({1});
  Shape shape;
  for (int64_t d = 0; d < s; ++d) shape.push_back(size(d));
  int64_t m = 1;
  for (int64_t d = s; d <= e; ++d) m *= size(d);
  shape.push_back(numel() > 0 ? -1 : m);  // -1: the size follows the input (see reshape)
  for (int64_t d = e + 1; d < dim(); ++d) shape.push_back(size(d));
  return reshape(shape);
}
Tensor Tensor::unflatten(int64_t d, IntArrayRef sizes_) const {
  int64_t w = wrap_dim("unflatten", d, dim());
  KILN_CHECK(!sizes_.empty(), "[unflatten] sizes must be non-empty");
  Shape inner = infer_size("unflatten", sizes_, size(w));
  Shape shape;
  for (int64_t i = 0; i < w; ++i) shape.push_back(size(i));
  shape.insert(shape.end(), inner.begin(), inner.end());
  for (int64_t i = w + 1; i < dim(); ++i) shape.push_back(size(i));
  return view(shape);
}
Tensor Tensor::expand(IntArrayRef s) const { return call_op1(KILN_ROW("expand"), {*this}, {s.vec()}); }
Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  return call_op1(KILN_ROW("narrow"), {*this}, {d, start, length});
}
Tensor Tensor::select(int64_t d, int64_t index) const { return call_op1(KILN_ROW("select"), {*this}, {d, index}); }
Tensor Tensor::slice(int64_t d, std::optional<int64_t> start, std::optional<int64_t> end, int64_t step) const {
  Attrs a{d, start ? Attr(*start) : Attr(), end ? Attr(*end) : Attr(), step};
  return call_op1(KILN_ROW("slice"), {*this}, a);
}
Tensor Tensor::unfold(int64_t d, int64_t size_, int64_t step) const {
  return call_op1(KILN_ROW("unfold"), {*this}, {d, size_, step});
}
Tensor Tensor::as_strided(IntArrayRef s, IntArrayRef st, std::optional<int64_t> off) const {
  return call_op1(KILN_ROW("as_strided"), {*this}, {s.vec(), st.vec(), off.value_or(storage_offset())});
}
Tensor Tensor::diagonal(int64_t off, int64_t d1, int64_t d2) const {
  return call_op1(KILN_ROW("diagonal"), {*this}, {off, d1, d2});
}
std::vector<Tensor> Tensor::split(int64_t s, int64_t d) const { return kiln::split(*this, s, d); }
std::vector<Tensor> Tensor::chunk(int64_t c, int64_t d) const { return kiln::chunk(*this, c, d); }
std::vector<Tensor> Tensor::unbind(int64_t d) const { return kiln::unbind(*this, d); }

// --- pointwise forwards -------------------------------------------------------------------------

#define KILN_FWD0(FN) \
  Tensor Tensor::FN() const { return kiln::FN(*this); }
KILN_FWD0(neg) KILN_FWD0(abs) KILN_FWD0(sign) KILN_FWD0(exp) KILN_FWD0(exp2) KILN_FWD0(log) KILN_FWD0(log2)
KILN_FWD0(log10) KILN_FWD0(log1p) KILN_FWD0(expm1) KILN_FWD0(sqrt) KILN_FWD0(rsqrt) KILN_FWD0(reciprocal)
KILN_FWD0(square) KILN_FWD0(sin) KILN_FWD0(cos) KILN_FWD0(tan) KILN_FWD0(tanh) KILN_FWD0(sigmoid)
KILN_FWD0(relu) KILN_FWD0(silu) KILN_FWD0(erf) KILN_FWD0(floor) KILN_FWD0(ceil) KILN_FWD0(round)
KILN_FWD0(trunc) KILN_FWD0(logical_not)
#undef KILN_FWD0

Tensor Tensor::add(const Tensor& o, const Scalar& alpha) const { return kiln::add(*this, o, alpha); }
Tensor Tensor::add(const Scalar& o, const Scalar& alpha) const { return kiln::add(*this, o, alpha); }
Tensor Tensor::sub(const Tensor& o, const Scalar& alpha) const { return kiln::sub(*this, o, alpha); }
Tensor Tensor::sub(const Scalar& o, const Scalar& alpha) const { return kiln::sub(*this, o, alpha); }
#define KILN_FWD2(FN)                                                          \
  Tensor Tensor::FN(const Tensor& o) const { return kiln::FN(*this, o); }
#define KILN_FWD2S(FN)                                                         \
  KILN_FWD2(FN)                                                                \
  Tensor Tensor::FN(const Scalar& o) const { return kiln::FN(*this, o); }
KILN_FWD2S(mul) KILN_FWD2S(div) KILN_FWD2S(pow) KILN_FWD2S(fmod) KILN_FWD2S(remainder)
KILN_FWD2(maximum) KILN_FWD2(minimum) KILN_FWD2(logical_and) KILN_FWD2(logical_or)
KILN_FWD2(matmul) KILN_FWD2(mm) KILN_FWD2(bmm)
#undef KILN_FWD2S
#undef KILN_FWD2

#define KILN_CMP(FN)                                                                       \
  Tensor Tensor::FN(const Tensor& o) const { return kiln::FN(*this, o); }                   \
  Tensor Tensor::FN(const Scalar& o) const { return kiln::FN(*this, wrap_scalar(o)); }
KILN_CMP(eq) KILN_CMP(ne) KILN_CMP(lt) KILN_CMP(le) KILN_CMP(gt) KILN_CMP(ge)
#undef KILN_CMP

Tensor Tensor::clamp(std::optional<Scalar> lo, std::optional<Scalar> hi) const { return kiln::clamp(*this, lo, hi); }
Tensor Tensor::clamp_min(const Scalar& lo) const { return kiln::clamp(*this, lo, std::nullopt); }
Tensor Tensor::clamp_max(const Scalar& hi) const { return kiln::clamp(*this, std::nullopt, hi); }
Tensor Tensor::masked_fill(const Tensor& mask, const Scalar& v) const { return kiln::masked_fill(*this, mask, v); }

// In-place ops run their row in place (call_op_out handles aliasing and casts).

Tensor& Tensor::add_(const Tensor& o, const Scalar& alpha) {
  if (alpha == Scalar(1)) return call_op_inplace(KILN_ROW("add"), *this, {*this, o});
  return call_op_inplace(KILN_ROW("add"), *this, {*this, kiln::mul(o, alpha)});
}
Tensor& Tensor::add_(const Scalar& o, const Scalar& alpha) {
  return call_op_inplace(KILN_ROW("add"), *this, {*this, wrap_scalar(alpha == Scalar(1) ? o : scalar_mul(o, alpha))});
}
Tensor& Tensor::sub_(const Tensor& o, const Scalar& alpha) {
  if (alpha == Scalar(1)) return call_op_inplace(KILN_ROW("sub"), *this, {*this, o});
  return call_op_inplace(KILN_ROW("sub"), *this, {*this, kiln::mul(o, alpha)});
}
Tensor& Tensor::sub_(const Scalar& o, const Scalar& alpha) {
  return call_op_inplace(KILN_ROW("sub"), *this, {*this, wrap_scalar(alpha == Scalar(1) ? o : scalar_mul(o, alpha))});
}
Tensor& Tensor::mul_(const Tensor& o) { return call_op_inplace(KILN_ROW("mul"), *this, {*this, o}); }
Tensor& Tensor::mul_(const Scalar& o) { return call_op_inplace(KILN_ROW("mul"), *this, {*this, wrap_scalar(o)}); }
Tensor& Tensor::div_(const Tensor& o) { return call_op_inplace(KILN_ROW("div"), *this, {*this, o}); }
Tensor& Tensor::div_(const Scalar& o) { return call_op_inplace(KILN_ROW("div"), *this, {*this, wrap_scalar(o)}); }
#define KILN_INPLACE1(FN, NAME) \
  Tensor& Tensor::FN() { return call_op_inplace(KILN_ROW(NAME), *this, {*this}); }
KILN_INPLACE1(neg_, "neg") KILN_INPLACE1(abs_, "abs") KILN_INPLACE1(exp_, "exp") KILN_INPLACE1(log_, "log")
KILN_INPLACE1(sqrt_, "sqrt") KILN_INPLACE1(relu_, "relu") KILN_INPLACE1(sigmoid_, "sigmoid") KILN_INPLACE1(tanh_, "tanh")
#undef KILN_INPLACE1

// --- reductions and the rest ---------------------------------------------------------------------

Tensor Tensor::sum(std::optional<DType> dt) const { return kiln::sum(*this, {}, false, dt); }
Tensor Tensor::sum(IntArrayRef dims, bool keepdim, std::optional<DType> dt) const { return kiln::sum(*this, dims, keepdim, dt); }
Tensor Tensor::mean(std::optional<DType> dt) const { return kiln::mean(*this, {}, false, dt); }
Tensor Tensor::mean(IntArrayRef dims, bool keepdim, std::optional<DType> dt) const { return kiln::mean(*this, dims, keepdim, dt); }
Tensor Tensor::prod(std::optional<DType> dt) const { return kiln::prod(*this, {}, false, dt); }
Tensor Tensor::prod(int64_t d, bool keepdim, std::optional<DType> dt) const { return kiln::prod(*this, {d}, keepdim, dt); }
Tensor Tensor::max() const { return kiln::max(*this); }
Tensor Tensor::min() const { return kiln::min(*this); }
std::tuple<Tensor, Tensor> Tensor::max(int64_t d, bool k) const { return kiln::max(*this, d, k); }
std::tuple<Tensor, Tensor> Tensor::min(int64_t d, bool k) const { return kiln::min(*this, d, k); }
Tensor Tensor::amax(IntArrayRef dims, bool k) const { return kiln::amax(*this, dims, k); }
Tensor Tensor::amin(IntArrayRef dims, bool k) const { return kiln::amin(*this, dims, k); }
Tensor Tensor::argmax(std::optional<int64_t> d, bool k) const { return kiln::argmax(*this, d, k); }
Tensor Tensor::argmin(std::optional<int64_t> d, bool k) const { return kiln::argmin(*this, d, k); }
Tensor Tensor::var(IntArrayRef dims, int64_t c, bool k) const { return kiln::var(*this, dims, c, k); }
Tensor Tensor::std(IntArrayRef dims, int64_t c, bool k) const { return kiln::std(*this, dims, c, k); }
Tensor Tensor::logsumexp(IntArrayRef dims, bool k) const { return kiln::logsumexp(*this, dims, k); }
Tensor Tensor::all() const { return kiln::all(*this); }
Tensor Tensor::all(int64_t d, bool k) const { return kiln::all(*this, {d}, k); }
Tensor Tensor::any() const { return kiln::any(*this); }
Tensor Tensor::any(int64_t d, bool k) const { return kiln::any(*this, {d}, k); }
Tensor Tensor::softmax(int64_t d, std::optional<DType> dt) const { return kiln::softmax(*this, d, dt); }
Tensor Tensor::log_softmax(int64_t d, std::optional<DType> dt) const { return kiln::log_softmax(*this, d, dt); }
Tensor Tensor::cumsum(int64_t d, std::optional<DType> dt) const { return kiln::cumsum(*this, d, dt); }
Tensor Tensor::index_select(int64_t d, const Tensor& i) const { return kiln::index_select(*this, d, i); }
Tensor Tensor::gather(int64_t d, const Tensor& i) const { return kiln::gather(*this, d, i); }
Tensor Tensor::scatter(int64_t d, const Tensor& i, const Tensor& s) const { return kiln::scatter(*this, d, i, s); }
Tensor Tensor::scatter_add(int64_t d, const Tensor& i, const Tensor& s) const { return kiln::scatter_add(*this, d, i, s); }
Tensor Tensor::tril(int64_t k) const { return kiln::tril(*this, k); }
Tensor Tensor::triu(int64_t k) const { return kiln::triu(*this, k); }

// --- operators -------------------------------------------------------------------------------------

Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator+(const Tensor& a, const Scalar& b) { return add(a, b); }
Tensor operator+(const Scalar& a, const Tensor& b) { return add(b, a); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator-(const Tensor& a, const Scalar& b) { return sub(a, b); }
Tensor operator-(const Scalar& a, const Tensor& b) { return sub(wrap_scalar(a), b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator*(const Tensor& a, const Scalar& b) { return mul(a, b); }
Tensor operator*(const Scalar& a, const Tensor& b) { return mul(b, a); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator/(const Tensor& a, const Scalar& b) { return div(a, b); }
Tensor operator/(const Scalar& a, const Tensor& b) { return div(wrap_scalar(a), b); }
Tensor operator%(const Tensor& a, const Tensor& b) { return remainder(a, b); }
Tensor operator%(const Tensor& a, const Scalar& b) { return remainder(a, b); }
Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator==(const Tensor& a, const Scalar& b) { return a.eq(b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator!=(const Tensor& a, const Scalar& b) { return a.ne(b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<(const Tensor& a, const Scalar& b) { return a.lt(b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator<=(const Tensor& a, const Scalar& b) { return a.le(b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>(const Tensor& a, const Scalar& b) { return a.gt(b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator>=(const Tensor& a, const Scalar& b) { return a.ge(b); }
Tensor operator&&(const Tensor& a, const Tensor& b) { return logical_and(a, b); }
Tensor operator||(const Tensor& a, const Tensor& b) { return logical_or(a, b); }
Tensor operator!(const Tensor& a) { return logical_not(a); }
Tensor& operator+=(Tensor& a, const Tensor& b) { return a.add_(b); }
Tensor& operator+=(Tensor& a, const Scalar& b) { return a.add_(b); }
Tensor& operator-=(Tensor& a, const Tensor& b) { return a.sub_(b); }
Tensor& operator-=(Tensor& a, const Scalar& b) { return a.sub_(b); }
Tensor& operator*=(Tensor& a, const Tensor& b) { return a.mul_(b); }
Tensor& operator*=(Tensor& a, const Scalar& b) { return a.mul_(b); }
Tensor& operator/=(Tensor& a, const Tensor& b) { return a.div_(b); }
Tensor& operator/=(Tensor& a, const Scalar& b) { return a.div_(b); }

std::string to_string(const Tensor& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

}  // namespace kiln
