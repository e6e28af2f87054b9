// Rows of the random ops. Factory rows carry (sizes, dtype, seed, offset, ...) as attributes,
// resolved by the front end at call time, so that replaying a row reproduces its values.
#include <atomic>
#include <cmath>
#include <limits>
#include <numbers>

#include "core/op.h"
#include "kernels/cpu/loops.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/shape.h"
#include "kernels/cpu/random_kernel.h"

namespace kiln {
namespace {

constexpr int kCPU_ = static_cast<int>(DeviceType::CPU);
// Values per batch of 64 random words: one word per value, or two (64-bit values, doubles).
constexpr int kV32 = cpu::kBatchWords, kV64 = cpu::kBatchWords / 2;

PhiloxKey key_at(const Attrs& a, size_t i) {
  return PhiloxKey{static_cast<uint64_t>(a.i(i)), static_cast<uint64_t>(a.i(i + 1))};
}


std::vector<TensorMeta> factory_infer(const OpDef& op, const TensorList&, const Attrs& a) {
  check_sizes_nonnegative(op.name, a.ints(0));
  return {TensorMeta{a.ints(0), a.dtype(1), Device(kCPU)}};
}

// --- uniform: attrs (sizes, dtype, seed, offset, from, to) ----------------------------------

void uniform_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 2);
  const double from = a.d(4), to = a.d(5);
  cpu::with_contiguous_output(out[0], [&](Tensor& t) {
    const int64_t n = t.numel();
    KILN_DISPATCH_FLOATING_TYPES(t.dtype(), op.name, {
      scalar_t* o = t.data_ptr<scalar_t>();
      if constexpr (std::is_same_v<scalar_t, double>) {
        const double range = to - from;
        cpu::random_fill<kV64>(o, n, key, [=](int64_t, const uint32_t* w, double* d, int m) {
          for (int k = 0; k < m; ++k) {
            const double v = from + philox::uniform_f64(w[k], w[k + kV64]) * range;
            d[k] = v < to ? v : from;
          }
        });
      } else {
        const float f = static_cast<float>(from), range = static_cast<float>(to - from);
        cpu::random_fill<kV32>(o, n, key, [=](int64_t, const uint32_t* w, scalar_t* d, int m) {
          for (int k = 0; k < m; ++k) {
            // Rounding may reach `to` (in float or in the storage type): wrap it to `from`.
            const scalar_t v = scalar_t(f + philox::uniform_f32(w[k]) * range);
            d[k] = static_cast<double>(static_cast<float>(v)) < to ? v : scalar_t(f);
          }
        });
      }
    });
  });
}

// --- normal: attrs (sizes, dtype, seed, offset, mean, std); Box-Muller ----------------------

void normal_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 2);
  const double mean = a.d(4), stdv = a.d(5);
  cpu::with_contiguous_output(out[0], [&](Tensor& t) {
    const int64_t n = t.numel();
    KILN_DISPATCH_FLOATING_TYPES(t.dtype(), op.name, {
      scalar_t* o = t.data_ptr<scalar_t>();
      if constexpr (std::is_same_v<scalar_t, double>) {
        // Pair k < 16: u1 from words (k, k + 16), u2 from (k + 32, k + 48) -> values k, k + 16.
        cpu::random_fill<kV64>(o, n, key, [=](int64_t, const uint32_t* w, double* d, int m) {
          double v[kV64];
          for (int k = 0; k < kV64 / 2; ++k) {
            const double r = std::sqrt(-2.0 * std::log(philox::uniform_f64_open0(w[k], w[k + 16])));
            const double th = 2.0 * std::numbers::pi * philox::uniform_f64(w[k + 32], w[k + 48]);
            v[k] = mean + stdv * r * std::cos(th);
            v[k + 16] = mean + stdv * r * std::sin(th);
          }
          std::copy(v, v + m, d);
        });
      } else {
        const float mf = static_cast<float>(mean), sf = static_cast<float>(stdv);
        // Pair k < 32: u1 from word k, u2 from word k + 32 -> values k, k + 32.
        cpu::random_fill<kV32>(o, n, key, [=](int64_t, const uint32_t* w, scalar_t* d, int m) {
          float v[kV32];
          for (int k = 0; k < kV32 / 2; ++k) {
            const float r = std::sqrt(-2.0f * std::log(philox::uniform_f32_open0(w[k])));
            const float th = 2.0f * std::numbers::pi_v<float> * philox::uniform_f32(w[k + 32]);
            v[k] = mf + sf * r * std::cos(th);
            v[k + 32] = mf + sf * r * std::sin(th);
          }
          for (int k = 0; k < m; ++k) d[k] = scalar_t(v[k]);
        });
      }
    });
  });
}

// --- randint: attrs (sizes, dtype, seed, offset, low, high); values in [low, high) ----------

void randint_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 2);
  const int64_t low = a.i(4), high = a.i(5);
  KILN_INTERNAL_ASSERT(low < high, "randint bounds");
  const uint64_t range = static_cast<uint64_t>(high) - static_cast<uint64_t>(low);
  cpu::with_contiguous_output(out[0], [&](Tensor& t) {
    const int64_t n = t.numel();
    KILN_DISPATCH_ALL_TYPES(t.dtype(), op.name, {
      scalar_t* o = t.data_ptr<scalar_t>();
      auto value = [=](uint64_t r) { return convert<scalar_t>(static_cast<int64_t>(static_cast<uint64_t>(low) + r)); };
      if (range <= (uint64_t(1) << 32)) {
        cpu::random_fill<kV32>(o, n, key, [=](int64_t, const uint32_t* w, scalar_t* d, int m) {
          for (int k = 0; k < m; ++k) d[k] = value(philox::below32(w[k], range));
        });
      } else {
        cpu::random_fill<kV64>(o, n, key, [=](int64_t, const uint32_t* w, scalar_t* d, int m) {
          for (int k = 0; k < m; ++k) d[k] = value(philox::below64((uint64_t(w[k]) << 32) | w[k + kV64], range));
        });
      }
    });
  });
}

// --- randperm: attrs (sizes = [n], dtype, seed, offset); Fisher-Yates over Philox words -----

void randperm_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 2);
  const int64_t n = out[0].numel();
  std::vector<uint64_t> r(static_cast<size_t>(n));
  cpu::random_fill<kV64>(r.data(), n, key, [](int64_t, const uint32_t* w, uint64_t* d, int m) {
    for (int k = 0; k < m; ++k) d[k] = (uint64_t(w[k]) << 32) | w[k + kV64];
  });
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[philox::below64(r[i], static_cast<uint64_t>(i + 1))]);
  cpu::with_contiguous_output(out[0], [&](Tensor& t) {
    KILN_DISPATCH_ALL_TYPES(t.dtype(), op.name, {
      scalar_t* o = t.data_ptr<scalar_t>();
      cpu::parallel_for(n, cpu::kParallelGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) o[i] = convert<scalar_t>(perm[i]);
      });
    });
  });
}

// --- bernoulli: input p (probabilities), attrs (seed, offset); result has p's dtype ---------

std::vector<TensorMeta> bernoulli_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  const Tensor& p = in.at(0);
  KILN_CHECK(is_floating_point(p.dtype()), "[", op.name, "] expected p to be a floating point tensor, but got dtype ",
             p.dtype());
  return {TensorMeta{p.sizes().vec(), p.dtype(), p.device()}};
}

void bernoulli_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 0);
  const Tensor p = in[0].contiguous();
  const int64_t n = p.numel();
  KILN_DISPATCH_FLOATING_TYPES(p.dtype(), op.name, {
    const scalar_t* pp = p.data_ptr<scalar_t>();
    // Validate first (errors must not be raised inside a parallel region).
    std::atomic<bool> bad{false};
    cpu::parallel_for(n, cpu::kParallelGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        double v = static_cast<double>(static_cast<opmath_t<scalar_t>>(pp[i]));
        if (!(v >= 0.0 && v <= 1.0)) bad.store(true, std::memory_order_relaxed);
      }
    });
    if (bad.load()) {
      for (int64_t i = 0; i < n; ++i) {
        double v = static_cast<double>(static_cast<opmath_t<scalar_t>>(pp[i]));
        KILN_CHECK(v >= 0.0 && v <= 1.0, "[", op.name, "] expected all elements of p to be in [0, 1], but got ", v,
                   " at index ", i);
      }
    }
    cpu::with_contiguous_output(out[0], [&](Tensor& t) {
      scalar_t* o = t.data_ptr<scalar_t>();
      cpu::random_fill<kV32>(o, n, key, [=](int64_t e, const uint32_t* w, scalar_t* d, int m) {
        for (int k = 0; k < m; ++k) {
          double pv = static_cast<double>(static_cast<opmath_t<scalar_t>>(pp[e + k]));
          d[k] = scalar_t(w[k] < philox::bernoulli_threshold(pv) ? 1.0f : 0.0f);
        }
      });
    });
  });
}

// --- bernoulli_scalar: attrs (sizes, dtype, seed, offset, p); any dtype (0 / 1) -------------

void bernoulli_scalar_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  const PhiloxKey key = key_at(a, 2);
  const uint64_t thr = philox::bernoulli_threshold(a.d(4));
  cpu::with_contiguous_output(out[0], [&](Tensor& t) {
    const int64_t n = t.numel();
    KILN_DISPATCH_ALL_TYPES(t.dtype(), op.name, {
      scalar_t* o = t.data_ptr<scalar_t>();
      cpu::random_fill<kV32>(o, n, key, [=](int64_t, const uint32_t* w, scalar_t* d, int m) {
        for (int k = 0; k < m; ++k) d[k] = convert<scalar_t>(w[k] < thr);
      });
    });
  });
}

void add_factory(OpRegistry& r, const char* name, KernelFn k, std::vector<std::string> extra) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::Factory;
  d.infer = &factory_infer;
  d.kernels[kCPU_] = k;
  d.differentiable = false;
  d.attr_names = {"sizes", "dtype", "seed", "offset"};
  for (auto& e : extra) d.attr_names.push_back(std::move(e));
  r.add(std::move(d));
}

}  // namespace

namespace ops_registration {
void register_random_ops(OpRegistry& r) {
  add_factory(r, "uniform", &uniform_cpu, {"from", "to"});
  add_factory(r, "normal", &normal_cpu, {"mean", "std"});
  add_factory(r, "randint", &randint_cpu, {"low", "high"});
  add_factory(r, "randperm", &randperm_cpu, {});
  add_factory(r, "bernoulli_scalar", &bernoulli_scalar_cpu, {"p"});

  OpDef b;
  b.name = "bernoulli";
  b.kind = OpKind::Opaque;
  b.infer = &bernoulli_infer;
  b.kernels[kCPU_] = &bernoulli_cpu;
  b.differentiable = false;
  b.attr_names = {"seed", "offset"};
  r.add(std::move(b));
}
}  // namespace ops_registration

}  // namespace kiln
