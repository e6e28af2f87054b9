#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>
#include <vector>

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

// A tensor's values as float64, row-major over its logical shape.
std::vector<double> values(const Tensor& t) {
  Tensor c = t.detach().to(DType::Float64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
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

  // Numerical Jacobian by columns: two evaluations of f per input element give the central
  // difference of every output element. numerical[o][j][k * numel(x_j) + e] = d out_o[k] / d x_j[e].
  std::vector<std::vector<std::vector<double>>> numerical(outs.size(), std::vector<std::vector<double>>(diff.size()));
  for (size_t j = 0; j < diff.size(); ++j) {
    const Tensor& x = inputs[diff[j]];
    const int64_t n = x.numel();
    for (size_t o = 0; o < outs.size(); ++o) numerical[o][j].resize(static_cast<size_t>(outs[o].numel() * n));
    for (int64_t e = 0; e < n; ++e) {
      double* p = element(x, e);
      struct Restore {  // the input keeps its value even if f raises
        double* p;
        double v;
        ~Restore() { *p = v; }
      } restore{p, *p};
      // Values are read at once: an output may be a view of the input being perturbed.
      auto evaluate = [&](double v) {
        NoGradGuard no_grad;
        *p = v;
        std::vector<std::vector<double>> r;
        for (const Tensor& t : float_outputs(f, inputs)) r.push_back(values(t));
        KILN_CHECK(r.size() == outs.size(), "[gradcheck] f returned ", outs.size(), " floating outputs, then ", r.size());
        return r;
      };
      std::vector<std::vector<double>> plus = evaluate(restore.v + opt.eps), minus = evaluate(restore.v - opt.eps);
      for (size_t o = 0; o < outs.size(); ++o) {
        const std::vector<double>& a = plus[o];
        const std::vector<double>& b = minus[o];
        KILN_CHECK(a.size() * static_cast<size_t>(n) == numerical[o][j].size(), "[gradcheck] output ", o,
                   " changed its number of elements when input ", diff[j], " was perturbed");
        for (size_t k = 0; k < a.size(); ++k)
          numerical[o][j][k * static_cast<size_t>(n) + static_cast<size_t>(e)] = (a[k] - b[k]) / (2 * opt.eps);
      }
    }
  }

  for (size_t o = 0; o < outs.size(); ++o) {
    const Tensor& out = outs[o];
    for (int64_t k = 0; k < out.numel(); ++k) {
      // Analytical row: d out[k] / d inputs, by backward with a one-hot seed. An output outside
      // the graph has analytical derivatives 0, so its numerical ones must be 0 too.
      TensorList analytical(diff.size());
      if (out.requires_grad()) {
        // A float64 one-hot (element() writes doubles); backward casts it to out's dtype.
        Tensor seed = zeros(out.sizes(), TensorOptions().dtype(DType::Float64));
        *element(seed, k) = 1.0;
        analytical = grad({out}, diff_inputs, {seed}, /*retain_graph=*/true, false, /*allow_unused=*/true);
      }
      for (size_t j = 0; j < diff.size(); ++j) {
        const size_t n = static_cast<size_t>(inputs[diff[j]].numel());
        std::vector<double> ana = analytical[j].defined() ? values(analytical[j]) : std::vector<double>(n, 0.0);
        for (size_t e = 0; e < n; ++e) {
          double num = numerical[o][j][static_cast<size_t>(k) * n + e];
          if (!(std::abs(num - ana[e]) <= opt.atol + opt.rtol * std::abs(num))) {
            std::ostringstream ss;
            ss << "Jacobian mismatch for output " << o << " element " << k << " with respect to input " << diff[j]
               << " element " << e << ": numerical " << num << ", analytical " << ana[e];
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
