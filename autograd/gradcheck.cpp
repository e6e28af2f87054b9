#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/autograd.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

// Address of element `linear` (row-major over sizes) of a float64 tensor, honouring strides.
double* element(const Tensor& t, int64_t linear) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    int64_t s = t.size(d);
    off += (linear % s) * t.stride(d);
    linear /= s;
  }
  return static_cast<double*>(t.impl()->data()) + off;
}

double read(const Tensor& t, int64_t linear) {
  Tensor c = t.detach().to(DType::Float64).contiguous();
  return c.data_ptr<double>()[linear];
}

TensorList float_outputs(const std::function<TensorList(const TensorList&)>& f, const TensorList& inputs) {
  TensorList out;
  for (Tensor& t : f(inputs))
    if (t.defined() && t.is_floating_point()) out.push_back(t);
  return out;
}

}  // namespace

GradcheckResult gradcheck(const std::function<TensorList(const TensorList&)>& f, const TensorList& inputs,
                          const GradcheckOptions& opt) {
  GradcheckResult res;
  std::vector<size_t> diff;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    KILN_CHECK(inputs[i].dtype() == DType::Float64, "[gradcheck] input ", i, " requires grad but has dtype ",
               inputs[i].dtype(), "; gradcheck needs float64");
    diff.push_back(i);
  }
  KILN_CHECK(!diff.empty(), "[gradcheck] no input requires grad");
  TensorList outs = float_outputs(f, inputs);
  TensorList diff_inputs;
  for (size_t i : diff) diff_inputs.push_back(inputs[i]);

  for (size_t o = 0; o < outs.size(); ++o) {
    const Tensor& out = outs[o];
    // An output outside the graph must then have zero numerical derivatives (analytical = 0).
    for (int64_t k = 0; k < out.numel(); ++k) {
      // Analytical row: d out[k] / d inputs, by backward with a one-hot seed.
      TensorList analytical(diff.size());
      if (out.requires_grad()) {
        // A float64 one-hot (element() writes doubles); backward casts it to out's dtype.
        Tensor seed = zeros(out.sizes(), TensorOptions().dtype(DType::Float64));
        *element(seed, k) = 1.0;
        analytical = grad({out}, diff_inputs, {seed}, /*retain_graph=*/true, false, /*allow_unused=*/true);
      }
      for (size_t j = 0; j < diff.size(); ++j) {
        const Tensor& x = inputs[diff[j]];
        for (int64_t e = 0; e < x.numel(); ++e) {
          double* p = element(x, e);
          double orig = *p;
          *p = orig + opt.eps;
          double plus;
          double minus;
          {
            NoGradGuard no_grad;
            plus = read(float_outputs(f, inputs)[o], k);
            *p = orig - opt.eps;
            minus = read(float_outputs(f, inputs)[o], k);
          }
          *p = orig;
          double num = (plus - minus) / (2 * opt.eps);
          double ana = analytical[j].defined() ? read(analytical[j], e) : 0.0;
          if (!(std::abs(num - ana) <= opt.atol + opt.rtol * std::abs(num))) {
            std::ostringstream ss;
            ss << "Jacobian mismatch for output " << o << " element " << k << " with respect to input " << diff[j]
               << " element " << e << ": numerical " << num << ", analytical " << ana;
            res.ok = false;
            res.message = ss.str();
            return res;
          }
        }
      }
    }
  }
  return res;
}

}  // namespace kiln::autograd
