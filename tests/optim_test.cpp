// Optimizers and LR schedulers against float64 references written with plain double arithmetic
// (independent of kiln), state_dict round trips, error paths, and SGD driven by kiln autograd.
#include <cmath>
#include <numbers>

#include "autograd/grad_mode.h"
#include "nn/optim/adam.h"
#include "nn/optim/lr_scheduler.h"
#include "nn/optim/sgd.h"
#include "nn/safetensors.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::optim;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

using Vec = std::vector<double>;

// The gradient fed at step t (0-based) for parameter values p: it depends on p and changes size
// between steps, so that momentum, dampening and amsgrad's running max all matter.
Vec grad_at(int t, const Vec& p, double scale = 1.0) {
  static const double c[] = {2.0, 0.1, -0.05, 0.3, -0.4};
  Vec g(p.size());
  for (size_t i = 0; i < p.size(); ++i) g[i] = scale * (0.5 * p[i] + c[t % 5] * static_cast<double>(i + 1));
  return g;
}

const Vec kInit = {1.0, -2.0, 0.5, 3.0};

Tensor make_param(const Vec& v, DType dt = kFloat64) {
  Tensor p = tensor(v, dt);
  p.requires_grad_();
  return p;
}

void feed_grad(Tensor& p, int t, double scale = 1.0) {
  p.set_grad(tensor(grad_at(t, to_vec(p), scale), p.dtype()).view(p.sizes()));
}

// --- float64 references: the formulas of torch.optim, element by element ---------------------
struct RefSGD {
  SGDOptions o;
  Vec buf;
  void step(Vec& p, const Vec& g0) {
    for (size_t i = 0; i < p.size(); ++i) {
      double d = o.maximize ? -g0[i] : g0[i];
      if (o.weight_decay != 0) d += o.weight_decay * p[i];
      if (o.momentum != 0) {
        if (buf.size() < p.size()) buf.resize(p.size(), std::nan(""));
        buf[i] = std::isnan(buf[i]) ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
      }
      p[i] -= o.lr * d;
    }
  }
};

struct RefAdam {
  double lr, beta1, beta2, eps, wd;
  bool amsgrad, maximize, decoupled;
  int t = 0;
  Vec m, v, vmax;
  void step(Vec& p, const Vec& g0) {
    if (m.empty()) m = v = vmax = Vec(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = maximize ? -g0[i] : g0[i];
      if (wd != 0 && !decoupled) g += wd * p[i];
      if (wd != 0 && decoupled) p[i] *= 1 - lr * wd;
      m[i] = m[i] + (1 - beta1) * (g - m[i]);
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      vmax[i] = std::max(vmax[i], v[i]);
      double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(beta2, t);
      double denom = std::sqrt(amsgrad ? vmax[i] : v[i]) / std::sqrt(bc2) + eps;
      p[i] -= lr / bc1 * m[i] / denom;
    }
  }
};

template <class O>
RefAdam ref_adam(const O& o, bool decoupled) {
  return RefAdam{o.lr, o.betas.first, o.betas.second, o.eps, o.weight_decay, o.amsgrad, o.maximize, decoupled};
}

// Runs `steps` steps of a kiln optimizer and of the reference side by side, checking after each.
template <class Opt, class Ref>
void expect_matches_reference(Opt& opt, Tensor& p, Ref& ref, int steps, double rtol, const std::string& what) {
  Vec expect = kInit;
  for (int t = 0; t < steps; ++t) {
    Vec g = grad_at(t, expect);
    feed_grad(p, t);
    opt.step();
    ref.step(expect, g);
    EXPECT_TRUE(close(p, tensor(expect, kFloat64), rtol, 1e-12)) << what << " after step " << t + 1;
  }
}

}  // namespace

// --- SGD ---------------------------------------------------------------------------------------

TEST(SGD, HandComputedFirstSteps) {
  // p = 1, g = 2p: plain SGD lr 0.1 -> 0.8 -> 0.64; with momentum 0.9:
  // step 1: buf = 2, p = 0.8; step 2: buf = 0.9*2 + 1.6 = 3.4, p = 0.46; step 3: buf = 3.98, p = 0.062.
  for (double mom : {0.0, 0.9}) {
    Tensor p = make_param({1.0});
    SGD opt({p}, {.lr = 0.1, .momentum = mom});
    Vec expect = mom == 0 ? Vec{0.8, 0.64, 0.512} : Vec{0.8, 0.46, 0.062};
    for (int t = 0; t < 3; ++t) {
      p.set_grad(p.detach() * 2.0);
      opt.step();
      EXPECT_NEAR(p.item<double>(), expect[t], 1e-15) << "momentum " << mom << " step " << t + 1;
    }
  }
}

TEST(SGD, AllOptionCombinationsMatchReference) {
  int cases = 0;
  for (double momentum : {0.0, 0.9})
    for (double dampening : {0.0, 0.3})
      for (bool nesterov : {false, true})
        for (double wd : {0.0, 0.1})
          for (bool maximize : {false, true}) {
            if (nesterov && (momentum == 0 || dampening != 0)) continue;
            SGDOptions o{.lr = 0.05, .momentum = momentum, .dampening = dampening, .weight_decay = wd,
                         .nesterov = nesterov, .maximize = maximize};
            Tensor p = make_param(kInit);
            SGD opt({p}, o);
            RefSGD ref{o, {}};
            std::ostringstream what;
            what << "momentum " << momentum << " dampening " << dampening << " nesterov " << nesterov << " wd " << wd
                 << " maximize " << maximize;
            expect_matches_reference(opt, p, ref, 3, 1e-13, what.str());
            ++cases;
          }
  EXPECT_EQ(cases, 20);
}

TEST(SGD, Float32AndNonContiguousParameters) {
  // A float32 matrix parameter and a transposed (non-contiguous) float64 one.
  Tensor a = make_param(kInit, kFloat32);
  Tensor base = tensor({{1.0, 2.0}, {3.0, 4.0}}, kFloat64);
  Tensor b = base.t();  // a leaf view with strides [1, 2]
  b.requires_grad_();
  SGD opt({a, b}, {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.01});
  RefSGD ra{opt.defaults(), {}}, rb{opt.defaults(), {}};
  Vec ea = kInit, eb = to_vec(b);
  for (int t = 0; t < 3; ++t) {
    Vec ga = grad_at(t, ea), gb = grad_at(t, eb);
    a.set_grad(tensor(ga, kFloat32));
    b.set_grad(tensor(gb, kFloat64).view({2, 2}));
    opt.step();
    ra.step(ea, ga);
    rb.step(eb, gb);
    EXPECT_TRUE(close(a, tensor(ea, kFloat64), 1e-6, 1e-6));
    EXPECT_TRUE(close(b, tensor(eb, kFloat64).view({2, 2}), 1e-13, 1e-13));
  }
  EXPECT_FALSE(b.is_contiguous());
  EXPECT_TRUE(close(base, tensor(eb, kFloat64).view({2, 2}).t()));  // updated through the view
}

TEST(SGD, ParamGroupsHaveTheirOwnOptions) {
  Tensor a = make_param(kInit), b = make_param(kInit);
  SGD opt({ParamGroup<SGDOptions>({a}), ParamGroup<SGDOptions>({b}, {.lr = 0.5, .momentum = 0.9})}, {.lr = 0.01});
  ASSERT_EQ(opt.num_param_groups(), 2u);
  EXPECT_EQ(opt.lr(0), 0.01);
  EXPECT_EQ(opt.lr(1), 0.5);
  RefSGD ra{{.lr = 0.01}, {}}, rb{{.lr = 0.5, .momentum = 0.9}, {}};
  Vec ea = kInit, eb = kInit;
  for (int t = 0; t < 3; ++t) {
    Vec ga = grad_at(t, ea), gb = grad_at(t, eb);
    feed_grad(a, t);
    feed_grad(b, t);
    opt.step();
    ra.step(ea, ga);
    rb.step(eb, gb);
  }
  EXPECT_TRUE(close(a, tensor(ea, kFloat64), 1e-13, 1e-13));
  EXPECT_TRUE(close(b, tensor(eb, kFloat64), 1e-13, 1e-13));
  // Hyperparameters are editable per group, as torch's param_groups[i]["lr"].
  opt.param_groups()[0].options.lr = 0;
  Tensor before = a.detach().clone();
  feed_grad(a, 3);
  opt.step();
  EXPECT_TRUE(close(a, before, 0, 0));
}

TEST(SGD, SkipsParamsWithoutGradAndKeepsIdentity) {
  Tensor a = make_param(kInit), b = make_param(kInit);
  void* data = a.data_ptr();
  SGD opt({a, b}, {.lr = 0.1, .momentum = 0.9});
  feed_grad(a, 0);
  opt.step();
  EXPECT_EQ(to_vec(b), kInit);           // no grad: untouched
  EXPECT_EQ(opt.state(b), nullptr);      // and no state created
  ASSERT_NE(opt.state(a), nullptr);
  EXPECT_TRUE(opt.state(a)->momentum_buffer.defined());
  EXPECT_EQ(a.data_ptr(), data);         // updated in place
  EXPECT_TRUE(a.is_leaf());
  EXPECT_TRUE(a.requires_grad());
  EXPECT_EQ(a.grad_fn(), nullptr);
  EXPECT_TRUE(opt.parameters()[0].is_same(a));
}

TEST(SGD, MomentumZeroKeepsNoState) {
  Tensor a = make_param(kInit);
  SGD opt({a}, {.lr = 0.1});
  feed_grad(a, 0);
  opt.step();
  EXPECT_EQ(opt.state(a), nullptr);
  EXPECT_TRUE(opt.state_dict().state.empty());
}

TEST(SGD, Errors) {
  Tensor p = make_param(kInit);
  EXPECT_KILN_ERROR(SGD({p}, {.lr = -0.1}), "[SGD]", "invalid learning rate: -0.1");
  EXPECT_KILN_ERROR(SGD({p}, {.lr = std::nan("")}), "[SGD]", "invalid learning rate");
  EXPECT_KILN_ERROR(SGD({p}, {.momentum = -1}), "[SGD]", "invalid momentum value: -1");
  EXPECT_KILN_ERROR(SGD({p}, {.weight_decay = -0.5}), "[SGD]", "invalid weight_decay value: -0.5");
  EXPECT_KILN_ERROR(SGD({p}, {.nesterov = true}), "[SGD]", "Nesterov momentum requires a momentum and zero dampening",
                    "momentum 0");
  EXPECT_KILN_ERROR(SGD({p}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}), "Nesterov", "dampening 0.1");
  EXPECT_KILN_ERROR(SGD(std::vector<Tensor>{}), "[SGD]", "empty parameter list");
  EXPECT_KILN_ERROR(SGD({p, Tensor()}), "[SGD]", "parameter 1 of group 0 is an undefined tensor");
  Tensor nonleaf = p * 2.0;
  EXPECT_KILN_ERROR(SGD({nonleaf}), "[SGD]", "not a leaf tensor");
  EXPECT_KILN_ERROR(SGD({p, p}), "[SGD]", "lists the same tensor twice");
  EXPECT_KILN_ERROR(SGD({ParamGroup<SGDOptions>({p}), ParamGroup<SGDOptions>({p})}), "[SGD]",
                    "already appears in parameter group 0");
  // Group options are validated too, not only the defaults.
  EXPECT_KILN_ERROR(SGD({ParamGroup<SGDOptions>({p}, {.lr = -1})}), "[SGD]", "invalid learning rate: -1");
  SGD opt({p});
  EXPECT_KILN_ERROR(opt.lr(3), "[SGD]", "parameter group 3 out of range");
}

// --- Adam / AdamW --------------------------------------------------------------------------------

TEST(Adam, HandComputedFirstStep) {
  // At step 1 the bias corrections cancel the moments: p -= lr * g / (|g| + eps') with
  // eps' = eps * sqrt(1 - beta2) / (1 - beta1)... = lr * sign(g) up to eps.
  Tensor p = make_param({1.0, -1.0});
  Adam opt({p}, {.lr = 0.1});
  p.set_grad(tensor({0.5, -2.0}, kFloat64));
  opt.step();
  double d1 = 0.5 / (0.5 + 1e-8), d2 = 2.0 / (2.0 + 1e-8);
  EXPECT_NEAR(to_vec(p)[0], 1.0 - 0.1 * d1, 1e-15);
  EXPECT_NEAR(to_vec(p)[1], -1.0 + 0.1 * d2, 1e-15);
  ASSERT_NE(opt.state(p), nullptr);
  EXPECT_EQ(opt.state(p)->step, 1);
  EXPECT_FALSE(opt.state(p)->max_exp_avg_sq.defined());
}

// Every combination of betas, weight decay, amsgrad and maximize for Adam (decoupled = false)
// or AdamW (true), 3 steps each against the float64 reference.
template <class Opt, class Options>
int sweep_adam_options(const char* name, bool decoupled) {
  int cases = 0;
  for (auto betas : {std::pair<double, double>{0.9, 0.999}, std::pair<double, double>{0.3, 0.5}})
    for (double wd : {0.0, 0.1})
      for (bool amsgrad : {false, true})
        for (bool maximize : {false, true}) {
          Options o{.lr = 0.01, .betas = betas, .eps = 1e-6, .weight_decay = wd, .amsgrad = amsgrad,
                    .maximize = maximize};
          Tensor p = make_param(kInit);
          Opt opt({p}, o);
          RefAdam ref = ref_adam(o, decoupled);
          std::ostringstream what;
          what << name << " betas " << betas.first << "," << betas.second << " wd " << wd << " amsgrad " << amsgrad
               << " maximize " << maximize;
          expect_matches_reference(opt, p, ref, 3, 1e-12, what.str());
          ++cases;
        }
  return cases;
}

TEST(Adam, AllOptionCombinationsMatchReference) { EXPECT_EQ((sweep_adam_options<Adam, AdamOptions>("Adam", false)), 16); }

TEST(AdamW, AllOptionCombinationsMatchReference) {
  EXPECT_EQ((sweep_adam_options<AdamW, AdamWOptions>("AdamW", true)), 16);
}

TEST(Adam, OptionsChangeTheResult) {
  // Guards the reference test against options that silently do nothing on this data.
  auto run = [](AdamOptions o, bool decoupled) {
    Tensor p = make_param(kInit);
    std::unique_ptr<Optimizer> opt;
    if (decoupled)
      opt = std::make_unique<AdamW>(std::vector<Tensor>{p}, AdamWOptions{.lr = o.lr, .weight_decay = o.weight_decay,
                                                                         .amsgrad = o.amsgrad});
    else
      opt = std::make_unique<Adam>(std::vector<Tensor>{p}, o);
    for (int t = 0; t < 3; ++t) {
      feed_grad(p, t);
      opt->step();
    }
    return to_vec(p);
  };
  Vec plain = run({.lr = 0.01}, false);
  EXPECT_NE(plain, run({.lr = 0.01, .amsgrad = true}, false));
  EXPECT_NE(plain, run({.lr = 0.01, .weight_decay = 0.1}, false));
  EXPECT_NE(run({.lr = 0.01, .weight_decay = 0.1}, false), run({.lr = 0.01, .weight_decay = 0.1}, true));
  EXPECT_EQ(AdamWOptions{}.weight_decay, 1e-2);
  EXPECT_EQ(AdamOptions{}.weight_decay, 0.0);
}

TEST(Adam, Float32MatchesReference) {
  Tensor p = make_param(kInit, kFloat32);
  AdamW opt({p}, {.lr = 0.01, .amsgrad = true});
  RefAdam ref = ref_adam(opt.defaults(), true);
  Vec expect = kInit;
  for (int t = 0; t < 3; ++t) {
    Vec g = grad_at(t, expect);
    p.set_grad(tensor(g, kFloat32));
    opt.step();
    ref.step(expect, g);
  }
  EXPECT_TRUE(close(p, tensor(expect, kFloat64), 1e-6, 1e-6));
}

TEST(Adam, PerParameterStepCounters) {
  // A parameter that had no gradient at step 1 starts its bias correction at its own first step.
  Tensor a = make_param(kInit), b = make_param(kInit);
  Adam opt({a, b}, {.lr = 0.01});
  RefAdam ra = ref_adam(opt.defaults(), false), rb = ra;
  Vec ea = kInit, eb = kInit;
  feed_grad(a, 0);
  ra.step(ea, grad_at(0, kInit));
  opt.step();
  for (int t = 1; t < 3; ++t) {
    Vec ga = grad_at(t, ea), gb = grad_at(t, eb);
    feed_grad(a, t);
    feed_grad(b, t);
    opt.step();
    ra.step(ea, ga);
    rb.step(eb, gb);
  }
  EXPECT_EQ(opt.state(a)->step, 3);
  EXPECT_EQ(opt.state(b)->step, 2);
  EXPECT_TRUE(close(a, tensor(ea, kFloat64), 1e-12, 1e-12));
  EXPECT_TRUE(close(b, tensor(eb, kFloat64), 1e-12, 1e-12));
}

TEST(Adam, Errors) {
  Tensor p = make_param(kInit);
  EXPECT_KILN_ERROR(Adam({p}, {.lr = -1e-3}), "[Adam]", "invalid learning rate: -0.001");
  EXPECT_KILN_ERROR(Adam({p}, {.eps = -1}), "[Adam]", "invalid epsilon value: -1");
  EXPECT_KILN_ERROR(Adam({p}, {.betas = {1.0, 0.999}}), "[Adam]", "invalid beta parameter at index 0: 1");
  EXPECT_KILN_ERROR(Adam({p}, {.betas = {-0.1, 0.999}}), "[Adam]", "invalid beta parameter at index 0: -0.1");
  EXPECT_KILN_ERROR(Adam({p}, {.betas = {0.9, 1.5}}), "[Adam]", "invalid beta parameter at index 1: 1.5");
  EXPECT_KILN_ERROR(Adam({p}, {.weight_decay = -0.01}), "[Adam]", "invalid weight_decay value: -0.01");
  EXPECT_KILN_ERROR(AdamW({p}, {.weight_decay = -1}), "[AdamW]", "invalid weight_decay value: -1");
  EXPECT_KILN_ERROR(AdamW({p}, {.betas = {0.9, 1.0}}), "[AdamW]", "index 1: 1");
}

// --- zero_grad ---------------------------------------------------------------------------------

TEST(Optimizer, ZeroGradBothModes) {
  Tensor a = make_param(kInit), b = make_param(kInit), c = make_param(kInit);
  SGD opt({a, b, c});
  feed_grad(a, 0);
  feed_grad(b, 0);
  Tensor b_grad = b.grad();
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(a.grad().defined());
  EXPECT_EQ(to_vec(a.grad()), Vec(4, 0.0));
  EXPECT_TRUE(b.grad().is_same(b_grad));  // zeroed in place, the same tensor
  EXPECT_EQ(to_vec(b_grad), Vec(4, 0.0));
  EXPECT_FALSE(c.grad().defined());       // an absent grad stays absent
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(Optimizer, ZeroGradDetachesAGradWithHistory) {
  // backward(create_graph=true) leaves grads that are part of a graph; zeroing cuts them loose.
  Tensor w = make_param({1.0, 2.0});
  (w * w).sum().backward({}, std::nullopt, /*create_graph=*/true);
  ASSERT_TRUE(w.grad().defined());
  SGD opt({w});
  opt.zero_grad(false);
  EXPECT_EQ(to_vec(w.grad()), Vec(2, 0.0));
  EXPECT_FALSE(w.grad().requires_grad());
}

// --- state_dict ----------------------------------------------------------------------------------

namespace {
template <class Opt, class Options>
void expect_round_trip_continues_identically(Options o) {
  Tensor a = make_param(kInit), b = make_param({0.25, -0.75});
  Opt opt({ParamGroup<Options>({a}), ParamGroup<Options>({b}, o)}, o);
  for (int t = 0; t < 2; ++t) {
    feed_grad(a, t);
    feed_grad(b, t);
    opt.step();
  }
  OptimizerStateDict sd = opt.state_dict();
  // A fresh optimizer over copies of the parameters, restored from the snapshot...
  Tensor a2 = make_param(to_vec(a)), b2 = make_param(to_vec(b));
  Opt restored({ParamGroup<Options>({a2}), ParamGroup<Options>({b2}, Options{})}, Options{});
  restored.load_state_dict(sd);
  EXPECT_EQ(restored.param_groups()[1].options.lr, o.lr);
  // ...continues exactly as the original, and the snapshot does not follow the original.
  OptimizerStateDict before = opt.state_dict();
  for (int t = 2; t < 4; ++t) {
    feed_grad(a, t);
    feed_grad(b, t);
    a2.set_grad(a.grad().clone());
    b2.set_grad(b.grad().clone());
    opt.step();
    restored.step();
    EXPECT_TRUE(close(a2, a, 0, 0)) << "step " << t + 1;
    EXPECT_TRUE(close(b2, b, 0, 0)) << "step " << t + 1;
  }
  for (const auto& [id, named] : before.state)
    for (const auto& [name, t] : named) EXPECT_TRUE(close(sd.state.at(id).at(name), t, 0, 0)) << name;
}
}  // namespace

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  expect_round_trip_continues_identically<SGD>(SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
  expect_round_trip_continues_identically<Adam>(AdamOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true});
  expect_round_trip_continues_identically<AdamW>(AdamWOptions{.lr = 0.02, .betas = {0.5, 0.9}});
}

TEST(Optimizer, StateDictLayout) {
  Tensor a = make_param(kInit), b = make_param({1.0}), c = make_param({2.0, 3.0});
  Adam opt({ParamGroup<AdamOptions>({a, b}), ParamGroup<AdamOptions>({c}, {.lr = 0.5, .amsgrad = true})});
  feed_grad(a, 0);
  feed_grad(c, 0);
  opt.step();
  opt.step();
  OptimizerStateDict sd = opt.state_dict();
  ASSERT_EQ(sd.param_groups.size(), 2u);
  EXPECT_EQ(sd.param_groups[0].params, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(sd.param_groups[1].params, (std::vector<int64_t>{2}));
  EXPECT_EQ(sd.param_groups[1].options.at("lr"), 0.5);
  EXPECT_EQ(sd.param_groups[1].options.at("amsgrad"), 1.0);
  EXPECT_EQ(sd.param_groups[0].options.at("beta2"), 0.999);
  EXPECT_EQ(sd.param_groups[0].options.count("initial_lr"), 0u);
  ASSERT_EQ(sd.state.size(), 2u);  // b never had a gradient
  EXPECT_EQ(sd.state.count(1), 0u);
  const auto& s0 = sd.state.at(0);
  EXPECT_EQ(s0.size(), 3u);  // step, exp_avg, exp_avg_sq
  EXPECT_EQ(s0.at("step").dim(), 0);
  EXPECT_EQ(s0.at("step").dtype(), kFloat32);
  EXPECT_EQ(s0.at("step").item<double>(), 2.0);
  EXPECT_EQ(s0.at("exp_avg").sizes().vec(), Shape{4});
  EXPECT_EQ(sd.state.at(2).count("max_exp_avg_sq"), 1u);
}

TEST(Optimizer, LoadStateDictErrors) {
  Tensor a = make_param(kInit), b = make_param({1.0, 2.0});
  Adam opt({ParamGroup<AdamOptions>({a}), ParamGroup<AdamOptions>({b}, {.amsgrad = true})});
  feed_grad(a, 0);
  feed_grad(b, 0);
  opt.step();
  const OptimizerStateDict good = opt.state_dict();
  Tensor a_before = a.detach().clone();

  auto edit = [&](auto f) {
    OptimizerStateDict sd = good;
    f(sd);
    return sd;
  };
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups.pop_back(); })), "[Adam.load_state_dict]",
                    "1 parameter groups but the optimizer has 2");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups[0].params.push_back(7); })),
                    "parameter group 0", "has 2 parameters but the optimizer's has 1");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups[1].params[0] = 0; })),
                    "parameter id 0 appears more than once");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(0)["exp_avg"] = zeros({3}, kFloat64); })),
                    "state 'exp_avg' of parameter 0 has shape [3] but the parameter has shape [4]");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(0).erase("exp_avg_sq"); })),
                    "state of parameter 0 lacks 'exp_avg_sq'");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(1).erase("max_exp_avg_sq"); })),
                    "state of parameter 1 lacks 'max_exp_avg_sq'");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(0)["momentum_buffer"] = zeros({4}); })),
                    "unknown state 'momentum_buffer' for parameter 0");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(0)["step"] = tensor({1.0, 2.0}); })),
                    "state 'step' of parameter 0 must be a one-element tensor");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state.at(0)["step"] = scalar_tensor(1.5); })),
                    "must be a non-negative integer, got 1.5");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.state[5] = {}; })),
                    "state for parameter id 5 which is in no loaded parameter group");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups[0].options["momentum"] = 0.9; })),
                    "unknown option 'momentum' in parameter group 0");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups[1].options["amsgrad"] = 0.5; })),
                    "option 'amsgrad' of parameter group 1 is a flag and must be 0 or 1, got 0.5");
  EXPECT_KILN_ERROR(opt.load_state_dict(edit([](auto& sd) { sd.param_groups[0].options["beta1"] = 1.0; })),
                    "[Adam]", "invalid beta parameter at index 0: 1");
  // A failed load changes nothing.
  EXPECT_EQ(opt.state(a)->step, 1);
  EXPECT_TRUE(close(a, a_before, 0, 0));
  // Loading converts dtype (as torch casts state to the parameter's dtype) but keeps the values.
  OptimizerStateDict sd32 = edit([](auto& sd) { sd.state.at(0)["exp_avg"] = sd.state.at(0)["exp_avg"].to(kFloat32); });
  opt.load_state_dict(sd32);
  EXPECT_EQ(opt.state(a)->exp_avg.dtype(), kFloat64);
}

TEST(Optimizer, StateDictThroughSafetensors) {
  // Checkpoint an optimizer to the safetensors format and resume from it.
  Tensor a = make_param(kInit), b = make_param({0.5, 1.5});
  AdamW opt({ParamGroup<AdamWOptions>({a}), ParamGroup<AdamWOptions>({b}, {.lr = 0.05, .amsgrad = true})});
  StepLR sched(opt, 1, 0.5);
  for (int t = 0; t < 2; ++t) {
    feed_grad(a, t);
    feed_grad(b, t);
    opt.step();
    sched.step();
  }
  std::map<std::string, Tensor> flat = to_tensors(opt.state_dict());
  EXPECT_EQ(flat.count("state.0.exp_avg"), 1u);
  EXPECT_EQ(flat.count("state.1.max_exp_avg_sq"), 1u);
  EXPECT_EQ(flat.at("param_groups.1.params").dtype(), kInt64);
  EXPECT_EQ(flat.at("param_groups.1.initial_lr").item<double>(), 0.05);
  std::vector<uint8_t> bytes = save_to_memory(flat, {{"kind", "AdamW"}});

  Tensor a2 = make_param(to_vec(a)), b2 = make_param(to_vec(b));
  AdamW restored({ParamGroup<AdamWOptions>({a2}), ParamGroup<AdamWOptions>({b2})});
  restored.load_state_dict(state_dict_from_tensors(load_from_memory(bytes.data(), bytes.size())));
  EXPECT_EQ(restored.lr(1), opt.lr(1));
  EXPECT_TRUE(restored.param_groups()[1].options.amsgrad);
  StepLR resumed(restored, 1, 0.5);
  resumed.load_state_dict(sched.state_dict());
  EXPECT_EQ(resumed.last_epoch(), 2);
  EXPECT_EQ(resumed.get_last_lr(), sched.get_last_lr());
  EXPECT_EQ(restored.lr(0), opt.lr(0));
  EXPECT_KILN_ERROR(resumed.load_state_dict(LRSchedulerState{}), "[StepLR.load_state_dict]", "0 base lrs");
  for (int t = 2; t < 4; ++t) {
    sched.step();
    resumed.step();
    EXPECT_EQ(resumed.get_last_lr(), sched.get_last_lr());
    feed_grad(a, t);
    feed_grad(b, t);
    a2.set_grad(a.grad().clone());
    b2.set_grad(b.grad().clone());
    opt.step();
    restored.step();
    EXPECT_TRUE(close(a2, a, 0, 0));
    EXPECT_TRUE(close(b2, b, 0, 0));
  }
}

TEST(Optimizer, StateDictFromTensorsErrors) {
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"momentum", zeros({1})}}), "[state_dict_from_tensors]",
                    "unexpected key 'momentum'");
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"state.x.exp_avg", zeros({1})}}), "unexpected key 'state.x.exp_avg'");
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"param_groups.0.params", zeros({2})}}),
                    "'param_groups.0.params' must be a 1-d int64 tensor", "float32");
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"param_groups.0.lr", zeros({2})}}), "option 'param_groups.0.lr'",
                    "one-element");
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"param_groups.0.lr", zeros({})}}), "parameter group 0 lacks",
                    "param_groups.0.params");
  EXPECT_KILN_ERROR(state_dict_from_tensors({{"param_groups.1.params", tensor({0})}}), "parameter group 0 is missing");
}

// --- LR schedulers -------------------------------------------------------------------------------

TEST(LRScheduler, StepLRFollowsClosedForm) {
  Tensor a = make_param(kInit), b = make_param(kInit);
  SGD opt({ParamGroup<SGDOptions>({a}), ParamGroup<SGDOptions>({b}, {.lr = 0.4})}, {.lr = 0.1});
  StepLR sched(opt, /*step_size=*/3, /*gamma=*/0.5);
  EXPECT_EQ(sched.last_epoch(), 0);
  for (int epoch = 0; epoch <= 10; ++epoch) {
    if (epoch > 0) sched.step();
    EXPECT_EQ(sched.last_epoch(), epoch);
    double f = std::pow(0.5, epoch / 3);
    ASSERT_EQ(sched.get_last_lr().size(), 2u);
    EXPECT_NEAR(sched.get_last_lr()[0], 0.1 * f, 1e-15) << "epoch " << epoch;
    EXPECT_NEAR(sched.get_last_lr()[1], 0.4 * f, 1e-15) << "epoch " << epoch;
    EXPECT_EQ(opt.lr(0), sched.get_last_lr()[0]);
    EXPECT_EQ(opt.lr(1), sched.get_last_lr()[1]);
  }
  EXPECT_EQ(opt.initial_lr(0), 0.1);
  EXPECT_EQ(sched.base_lrs(), (Vec{0.1, 0.4}));
}

TEST(LRScheduler, StepLRIsChainable) {
  // An lr changed by hand is carried forward and decayed from there, as PyTorch's recurrence does.
  Tensor a = make_param(kInit);
  SGD opt({a}, {.lr = 1.0});
  StepLR sched(opt, 2, 0.1);
  sched.step();  // epoch 1: 1.0
  opt.set_lr(0, 3.0);
  sched.step();  // epoch 2: decay from 3.0
  EXPECT_NEAR(opt.lr(0), 0.3, 1e-15);
  sched.step();  // epoch 3: unchanged
  EXPECT_NEAR(opt.lr(0), 0.3, 1e-15);
}

TEST(LRScheduler, CosineAnnealingFollowsClosedForm) {
  for (double eta_min : {0.0, 0.01}) {
    Tensor a = make_param(kInit), b = make_param(kInit);
    Adam opt({ParamGroup<AdamOptions>({a}), ParamGroup<AdamOptions>({b}, {.lr = 0.5})}, {.lr = 0.1});
    const int64_t T = 5;
    CosineAnnealingLR sched(opt, T, eta_min);
    // Past T_max the recurrence continues along the same cosine (rising again), 3 periods here.
    for (int epoch = 0; epoch <= 3 * T; ++epoch) {
      if (epoch > 0) sched.step();
      for (size_t g = 0; g < 2; ++g) {
        double base = g == 0 ? 0.1 : 0.5;
        double expect = eta_min + (base - eta_min) * (1 + std::cos(std::numbers::pi * epoch / T)) / 2;
        EXPECT_NEAR(sched.get_last_lr()[g], expect, 1e-12) << "eta_min " << eta_min << " epoch " << epoch;
        EXPECT_EQ(opt.lr(g), sched.get_last_lr()[g]);
      }
    }
    EXPECT_NEAR(opt.lr(0), eta_min + (0.1 - eta_min) * 0.0, 1e-12);  // epoch 15 = 3T: at the minimum
  }
}

TEST(LRScheduler, ResumeFromStateDict) {
  Tensor a = make_param(kInit);
  SGD opt({a}, {.lr = 0.2, .momentum = 0.5});
  CosineAnnealingLR sched(opt, 10, 0.001);
  for (int i = 0; i < 4; ++i) sched.step();
  OptimizerStateDict sd = opt.state_dict();
  EXPECT_EQ(sd.param_groups[0].options.at("initial_lr"), 0.2);

  Tensor a2 = make_param(kInit);
  SGD opt2({a2}, {.lr = 0.2, .momentum = 0.5});
  EXPECT_KILN_ERROR(CosineAnnealingLR(opt2, 10, 0.001, /*last_epoch=*/3), "[CosineAnnealingLR]",
                    "'initial_lr' is not specified in param_groups[0]");
  opt2.load_state_dict(sd);
  CosineAnnealingLR resumed(opt2, 10, 0.001, /*last_epoch=*/3);  // its first step lands on epoch 4
  EXPECT_EQ(resumed.last_epoch(), 4);
  EXPECT_NEAR(opt2.lr(0), opt.lr(0), 1e-12);
  for (int i = 0; i < 8; ++i) {
    sched.step();
    resumed.step();
    EXPECT_NEAR(opt2.lr(0), opt.lr(0), 1e-12);
  }
  // A second scheduler keeps the initial_lr of the first.
  StepLR second(opt, 2);
  EXPECT_EQ(second.base_lrs()[0], 0.2);
}

TEST(LRScheduler, Errors) {
  Tensor a = make_param(kInit);
  SGD opt({a});
  EXPECT_KILN_ERROR(StepLR(opt, 0), "[StepLR]", "step_size must be positive, got 0");
  EXPECT_KILN_ERROR(CosineAnnealingLR(opt, 0), "[CosineAnnealingLR]", "T_max must be positive, got 0");
  EXPECT_KILN_ERROR(StepLR(opt, 1, 0.1, -2), "[StepLR]", "last_epoch must be >= -1, got -2");
  StepLR sched(opt, 1);
  opt.add_param_group(ParamGroup<SGDOptions>({make_param({1.0})}));
  EXPECT_KILN_ERROR(sched.step(), "[StepLR]", "the optimizer has 2 parameter groups but the scheduler was created for 1");
}

// --- end to end with kiln autograd ---------------------------------------------------------------

TEST(Optimizer, SGDConvergesOnAQuadraticWithAutograd) {
  Tensor target = tensor({1.5, -0.5, 2.0, 0.25});
  Tensor w = zeros({4}).requires_grad_();
  SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
  double first_loss = 0, loss_value = 0;
  for (int it = 0; it < 200; ++it) {
    opt.zero_grad();
    Tensor diff = w - target;
    Tensor loss = (diff * diff).sum();
    loss.backward();
    if (it == 0) first_loss = loss.item<double>();
    loss_value = loss.item<double>();
    opt.step();
  }
  EXPECT_GT(first_loss, 5.0);
  EXPECT_LT(loss_value, 1e-8);
  EXPECT_TRUE(close(w, target, 1e-4, 1e-4));
  EXPECT_TRUE(w.is_leaf());
}

TEST(Optimizer, AdamWithStepLRConvergesWithAutograd) {
  manual_seed(3);
  Tensor target = randn({3, 5});
  Tensor w = zeros({3, 5}).requires_grad_();
  Adam opt({w}, {.lr = 0.1});
  StepLR sched(opt, 100, 0.1);
  for (int it = 0; it < 300; ++it) {
    opt.zero_grad();
    ((w - target) * (w - target)).sum().backward();
    opt.step();
    sched.step();
  }
  EXPECT_TRUE(close(w, target, 1e-3, 1e-3));
}
