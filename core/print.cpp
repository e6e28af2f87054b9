// Printing in PyTorch's format: tensor([[1.0000, 2.5000], ...], dtype=int32), summarised with
// "..." past 1000 elements.
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "core/ops.h"
#include "core/tensor.h"
#include "core/trace_hook.h"

namespace kiln {
namespace {

constexpr int64_t kThreshold = 1000;
constexpr int64_t kEdge = 3;

struct Formatter {
  bool floating = false, boolean = false, int_mode = true, sci = false;
  int width = 1;

  std::string fmt(double v) const {
    char buf[64];
    if (boolean) {
      return v != 0 ? "True" : "False";
    } else if (!floating) {
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
    } else if (std::isnan(v)) {
      std::snprintf(buf, sizeof buf, "nan");
    } else if (std::isinf(v)) {
      std::snprintf(buf, sizeof buf, v > 0 ? "inf" : "-inf");
    } else if (sci) {
      std::snprintf(buf, sizeof buf, "%.4e", v);
    } else if (int_mode) {
      std::snprintf(buf, sizeof buf, "%.0f.", v);
    } else {
      std::snprintf(buf, sizeof buf, "%.4f", v);
    }
    return buf;
  }
};

// Elements shown (first/last kEdge per dim when summarising), as doubles.
void collect(const Tensor& t, bool summarize, std::vector<double>& out) {
  if (t.dim() == 0) {
    out.push_back(t.item().to_double());
    return;
  }
  int64_t n = t.size(0);
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdge && i == kEdge) i = n - kEdge;
    collect(t.select(0, i), summarize, out);
  }
}

void print_rec(std::ostream& os, const Tensor& t, const Formatter& f, bool summarize, int indent) {
  if (t.dim() == 0) {
    std::string s = f.fmt(t.item().to_double());
    os << std::string(static_cast<size_t>(std::max<int>(0, f.width - static_cast<int>(s.size()))), ' ') << s;
    return;
  }
  int64_t n = t.size(0);
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdge && i == kEdge) {
      os << "...";
      os << ',' << (t.dim() == 1 ? " " : std::string(static_cast<size_t>(t.dim() - 1), '\n') + std::string(static_cast<size_t>(indent + 1), ' '));
      i = n - kEdge;
    }
    print_rec(os, t.select(0, i), f, summarize, indent + 1);
    if (i + 1 < n) {
      os << ',';
      if (t.dim() == 1) os << ' ';
      else os << std::string(static_cast<size_t>(t.dim() - 1), '\n') << std::string(static_cast<size_t>(indent + 1), ' ');
    }
  }
  os << ']';
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "[ Tensor (undefined) ]";
  detail::note_data_access("operator<< (printing)");
  // Read the memory once now, so a pending (JIT-captured) tensor breaks under this name rather
  // than under the item() calls that format each element.
  if (t.is_cpu() && t.numel() > 0) (void)t.data_ptr();
  Tensor c = t.is_cpu() ? t : t.to(Device(kCPU));
  if (c.dtype() == DType::Bool) c = c.to(DType::UInt8);
  bool summarize = c.numel() > kThreshold;
  Formatter f;
  f.floating = c.is_floating_point();
  std::vector<double> vals;
  if (c.numel() > 0) collect(c, summarize, vals);
  if (f.floating) {
    double mx = 0, mn = INFINITY;
    bool any = false;
    for (double v : vals) {
      if (!std::isfinite(v)) continue;
      if (v != std::nearbyint(v)) f.int_mode = false;
      double a = std::fabs(v);
      if (a == 0) continue;
      any = true;
      mx = std::max(mx, a);
      mn = std::min(mn, a);
    }
    if (any) {
      if (f.int_mode) f.sci = mx > 1e8;
      else f.sci = mx / mn > 1000.0 || mx > 1e8 || mn < 1e-4;
    }
  }
  f.boolean = t.dtype() == DType::Bool;
  for (double v : vals) f.width = std::max<int>(f.width, static_cast<int>(f.fmt(v).size()));
  std::ostringstream body;
  if (c.numel() == 0) body << "[]";
  else print_rec(body, c, f, summarize, 7);
  os << "tensor(" << body.str();
  std::vector<std::string> suffix;
  if (c.numel() == 0 && t.dim() != 1) {
    std::ostringstream sz;
    sz << "size=(";
    for (int64_t d = 0; d < t.dim(); ++d) sz << (d ? ", " : "") << t.size(d);
    sz << (t.dim() == 1 ? ",)" : ")");
    suffix.push_back(sz.str());
  }
  if (!t.is_cpu()) suffix.push_back("device='" + t.device().str() + "'");
  bool default_shown = t.dtype() == default_dtype() || t.dtype() == DType::Int64 || t.dtype() == DType::Bool;
  if (!default_shown) suffix.push_back("dtype=" + std::string(dtype_name(t.dtype())));
  if (t.requires_grad()) suffix.push_back("requires_grad=True");
  for (const auto& s : suffix) os << ", " << s;
  return os << ')';
}

}  // namespace kiln
