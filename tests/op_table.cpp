#include "op_table.h"

#include <cmath>
#include <random>

namespace kiln::optable {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::Transposed: return "transposed";
    case Layout::Sliced: return "sliced";
    case Layout::Broadcast: return "broadcast";
  }
  return "?";
}

std::pair<double, double> tolerance(DType r, double s) {
  switch (r) {
    case DType::Float64: return {1e-10 * s, 1e-12 * s};
    case DType::Float32: return {1e-5 * s, 1e-6 * s};
    case DType::Float16: return {2e-3 * s, 1e-3 * s};
    case DType::BFloat16: return {1.6e-2 * s, 1e-2 * s};
    default: return {0.0, 0.0};
  }
}

Tensor random_input(const Shape& shape, DType dtype, Domain d, uint64_t seed) {
  std::mt19937_64 gen(seed);
  Tensor t = empty(shape, kFloat64);
  double* p = t.data_ptr<double>();
  if (is_floating_point(dtype)) {
    std::uniform_real_distribution<double> u(d.lo, d.hi);
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(gen);
  } else if (dtype == DType::Bool) {
    std::bernoulli_distribution b(0.5);
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = b(gen) ? 1.0 : 0.0;
  } else {
    int64_t lo = static_cast<int64_t>(std::ceil(d.lo)), hi = static_cast<int64_t>(std::floor(d.hi));
    if (dtype == DType::UInt8) lo = std::max<int64_t>(lo, 0);
    if (hi < lo) hi = lo;
    std::uniform_int_distribution<int64_t> u(lo, hi);
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<double>(u(gen));
  }
  return t.to(dtype);
}

Tensor apply_layout(const Tensor& t, Layout l) {
  switch (l) {
    case Layout::Contiguous: return t;
    case Layout::Transposed: {
      if (t.dim() < 2) return t;
      Shape s = t.sizes().vec();
      std::swap(s[s.size() - 1], s[s.size() - 2]);
      Tensor v = empty(s, t.dtype()).transpose(-1, -2);
      v.copy_(t);
      return v;
    }
    case Layout::Sliced: {
      if (t.dim() < 1) return t;
      Shape s = t.sizes().vec();
      s.back() = s.back() * 2 + 1;
      Tensor v = zeros(s, t.dtype()).slice(-1, 1, std::nullopt, 2);
      v.copy_(t);
      return v;
    }
    case Layout::Broadcast: {
      if (t.dim() < 1 || t.size(0) < 2) return t;
      return t.narrow(0, 0, 1).expand(t.sizes());
    }
  }
  return t;
}

void check_case(const OpCase& c) {
  uint64_t seed = 1234;
  for (const auto& shapes : c.shape_sets) {
    for (DType dt : c.dtypes) {
      for (Layout layout : {Layout::Contiguous, Layout::Transposed, Layout::Sliced, Layout::Broadcast}) {
        if (!c.layouts && layout != Layout::Contiguous) continue;
        TensorList in;
        for (size_t i = 0; i < shapes.size(); ++i) {
          Tensor t = c.make_input ? c.make_input(i, shapes[i], dt) : random_input(shapes[i], dt, c.domain, ++seed);
          bool fixed = std::find(c.fixed_dtype_inputs.begin(), c.fixed_dtype_inputs.end(), static_cast<int>(i)) !=
                       c.fixed_dtype_inputs.end();
          // Index-like inputs keep their layout contiguous: their values must stay valid.
          in.push_back(fixed ? t : apply_layout(t, layout));
        }
        std::ostringstream where;
        where << c.name << " dtype=" << dt << " layout=" << layout_name(layout) << " shapes=";
        for (const auto& s : shapes) where << IntArrayRef(s);
        SCOPED_TRACE(where.str());
        TensorList f64;
        for (const Tensor& t : in) f64.push_back(t.to(kFloat64).contiguous());
        Tensor expected = c.ref(f64);
        Tensor actual;
        try {
          actual = c.run(in);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "threw: " << e.what();
          continue;
        }
        if (c.out_dtype) EXPECT_EQ(actual.dtype(), c.out_dtype(dt));
        auto [rtol, atol] = tolerance(actual.dtype(), c.tol_scale);
        // Low-precision inputs: the reference saw the rounded inputs, but intermediate rounding
        // in the op may still differ by an ulp of the result dtype.
        EXPECT_TRUE(kiln::testing::close(actual, expected, rtol, atol));
      }
    }
  }
}

namespace {
Shape bshape(const TensorList& in) {
  Shape s;
  for (const Tensor& t : in) s = broadcast_shapes("ref", s, t.sizes());
  return s;
}
}  // namespace

Tensor ref_pointwise(const TensorList& in, const std::function<double(const std::vector<double>&)>& f) {
  Shape out_shape = bshape(in);
  Tensor out = empty(out_shape, kFloat64);
  double* o = out.data_ptr<double>();
  const int64_t nd = static_cast<int64_t>(out_shape.size());
  std::vector<int64_t> idx(nd, 0);
  std::vector<double> args(in.size());
  for (int64_t lin = 0; lin < out.numel(); ++lin) {
    int64_t rem = lin;
    for (int64_t d = nd - 1; d >= 0; --d) {
      idx[d] = rem % out_shape[d];
      rem /= out_shape[d];
    }
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& t = in[k];
      int64_t off = 0, stride = 1;
      for (int64_t d = t.dim() - 1; d >= 0; --d) {
        int64_t od = d + (nd - t.dim());
        int64_t i = t.size(d) == 1 ? 0 : idx[od];
        off += i * stride;
        stride *= t.size(d);
      }
      args[k] = t.data_ptr<double>()[off];
    }
    o[lin] = f(args);
  }
  return out;
}

Tensor ref_reduce(const Tensor& x, std::vector<int64_t> dims, bool keepdim,
                  const std::function<double(const std::vector<double>&)>& f) {
  const int64_t nd = x.dim();
  for (auto& d : dims) d = d < 0 ? d + nd : d;
  if (dims.empty())
    for (int64_t d = 0; d < nd; ++d) dims.push_back(d);
  std::vector<bool> red(nd, false);
  for (int64_t d : dims) red[d] = true;
  Shape out_shape, kept_shape;
  for (int64_t d = 0; d < nd; ++d) {
    if (!red[d]) kept_shape.push_back(x.size(d));
    if (!red[d]) out_shape.push_back(x.size(d));
    else if (keepdim) out_shape.push_back(1);
  }
  int64_t nkept = shape_numel(kept_shape);
  std::vector<std::vector<double>> groups(nkept);
  const double* p = x.data_ptr<double>();
  std::vector<int64_t> idx(nd, 0);
  for (int64_t lin = 0; lin < x.numel(); ++lin) {
    int64_t rem = lin;
    for (int64_t d = nd - 1; d >= 0; --d) {
      idx[d] = rem % x.size(d);
      rem /= x.size(d);
    }
    int64_t g = 0;
    for (int64_t d = 0; d < nd; ++d)
      if (!red[d]) g = g * x.size(d) + idx[d];
    groups[g].push_back(p[lin]);
  }
  Tensor out = empty(out_shape, kFloat64);
  for (int64_t g = 0; g < nkept; ++g) out.data_ptr<double>()[g] = f(groups[g]);
  return out;
}

}  // namespace kiln::optable
