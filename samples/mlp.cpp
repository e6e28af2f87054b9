// mlp: classify points of a 2-D spiral dataset (3 interleaved arms) with a small MLP.
//
//   ./build/samples/mlp              full run (a few seconds), training step through jit::compile
//   ./build/samples/mlp --smoke      reduced size, as the CTest smoke test runs it
//   ./build/samples/mlp --eager      the same without the JIT
//   ./build/samples/mlp --check-jit  20 Adam steps eager and compiled from the same start must agree
//   ./build/samples/mlp --device cuda  train on the GPU (with --smoke / --eager as above)
//   ./build/samples/mlp --check-cuda 20 Adam steps on the CPU and on the GPU (eager and compiled) from
//                                    the same start must agree; exits 77 (skipped) without a GPU
//
// Exits non-zero if the final test accuracy is below the target, so it doubles as a test.
#include <kiln/kiln.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

using namespace kiln;

// `n` points per class on `classes` spiral arms, with Gaussian noise; labels are the arm index.
std::pair<Tensor, Tensor> make_spirals(int64_t n, int64_t classes) {
  Tensor r = rand({classes, n});                                        // radius in [0, 1)
  Tensor arm = arange(classes, kFloat32).unsqueeze(1) * (2 * M_PI / classes);
  Tensor theta = r * 4.0 + arm + randn({classes, n}) * 0.15;            // 4 radians of winding
  Tensor x = stack({r * cos(theta), r * sin(theta)}, -1).reshape({-1, 2});
  Tensor y = arange(classes).unsqueeze(1).expand({classes, n}).reshape({-1});
  Tensor perm = randperm(classes * n);
  return {x.index_select(0, perm), y.index_select(0, perm)};
}

int64_t count_parameters(const nn::Module& model) {
  int64_t n = 0;
  for (const Tensor& p : model.parameters()) n += p.numel();
  return n;
}

double accuracy(nn::Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard no_grad;
  return (model.forward(x).argmax(1) == y).to(kFloat32).mean().item<double>();
}

std::shared_ptr<nn::Sequential> make_model(int64_t classes) {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(2, 64), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, 64), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, classes));
}

// One optimizer step on a batch; returns the loss (detached). Compiled or not, it must do the same.
Tensor train_step(nn::Module& model, optim::Optimizer& opt, const Tensor& x, const Tensor& y) {
  Tensor loss = cross_entropy(model.forward(x), y);
  opt.zero_grad();
  loss.backward();
  opt.step();
  return loss.detach();
}

// 20 Adam steps on two copies of one model, eagerly and through jit::compile: the parameters,
// their grads and the losses must agree within float32 rounding.
int check_jit() {
  manual_seed(4);
  auto [x, y] = make_spirals(100, 3);
  auto eager = make_model(3), compiled = make_model(3);
  compiled->load_state_dict(eager->state_dict());
  optim::Adam opt_e(eager->parameters(), {.lr = 1e-2}), opt_c(compiled->parameters(), {.lr = 1e-2});
  auto step = jit::compile([&](const Tensor& xb, const Tensor& yb) { return train_step(*compiled, opt_c, xb, yb); },
                           {.name = "mlp_step"});
  double worst = 0;
  for (int i = 0; i < 20; ++i) {
    Tensor xb = x.narrow(0, (i * 32) % 256, 32), yb = y.narrow(0, (i * 32) % 256, 32);
    worst = std::max(worst, std::abs(train_step(*eager, opt_e, xb, yb).item<double>() - step(xb, yb).item<double>()));
  }
  bool ok = worst < 1e-5;
  auto pe = eager->parameters(), pc = compiled->parameters();
  for (size_t i = 0; i < pe.size(); ++i)
    ok = ok && allclose(pe[i], pc[i], 1e-5, 1e-6) && allclose(pe[i].grad(), pc[i].grad(), 1e-5, 1e-6);
  std::printf("check-jit: 20 Adam steps eager vs compiled: max loss difference %.3g; parameters and grads %s\n%s",
              worst, ok ? "agree" : "DIFFER", jit::stats().str().c_str());
  return ok ? 0 : 1;
}

// 20 Adam steps from one start on the CPU, on the GPU eagerly and on the GPU compiled: losses and
// parameters must agree within float32 rounding (GPU reductions add in another order).
int check_cuda() {
  if (!cuda::is_available()) {
    std::printf("check-cuda: skipped, no CUDA device (%s)\n", cuda::unavailable_reason().c_str());
    return 77;
  }
  const Device gpu(kCUDA, 0);
  manual_seed(4);
  auto [x, y] = make_spirals(100, 3);
  auto cpu_model = make_model(3), gpu_model = make_model(3), jit_model = make_model(3);
  gpu_model->load_state_dict(cpu_model->state_dict());
  jit_model->load_state_dict(cpu_model->state_dict());
  gpu_model->to(gpu);
  jit_model->to(gpu);
  optim::Adam opt_c(cpu_model->parameters(), {.lr = 1e-2}), opt_g(gpu_model->parameters(), {.lr = 1e-2}),
      opt_j(jit_model->parameters(), {.lr = 1e-2});
  auto step = jit::compile([&](const Tensor& xb, const Tensor& yb) { return train_step(*jit_model, opt_j, xb, yb); },
                           {.name = "mlp_step_cuda"});
  const Tensor xg = x.to(gpu), yg = y.to(gpu);
  double worst = 0;
  for (int i = 0; i < 20; ++i) {
    const int64_t at = (i * 32) % 256;
    const double lc = train_step(*cpu_model, opt_c, x.narrow(0, at, 32), y.narrow(0, at, 32)).item<double>();
    const double lg = train_step(*gpu_model, opt_g, xg.narrow(0, at, 32), yg.narrow(0, at, 32)).item<double>();
    const double lj = step(xg.narrow(0, at, 32), yg.narrow(0, at, 32)).item<double>();
    worst = std::max({worst, std::abs(lc - lg), std::abs(lc - lj)});
  }
  bool ok = worst < 1e-4;
  auto pc = cpu_model->parameters(), pg = gpu_model->parameters(), pj = jit_model->parameters();
  for (size_t i = 0; i < pc.size(); ++i)
    ok = ok && allclose(pg[i].cpu(), pc[i], 1e-3, 1e-4) && allclose(pj[i].cpu(), pc[i], 1e-3, 1e-4);
  std::printf("check-cuda: 20 Adam steps CPU vs CUDA (eager and compiled): max loss difference %.3g; parameters %s\n",
              worst, ok ? "agree" : "DIFFER");
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  bool smoke = false, eager = false;
  Device device(kCPU);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check-jit") == 0) return check_jit();
    if (std::strcmp(argv[i], "--check-cuda") == 0) return check_cuda();
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = Device(std::string(argv[++i]));
    smoke |= std::strcmp(argv[i], "--smoke") == 0;
    eager |= std::strcmp(argv[i], "--eager") == 0;
  }
  const int64_t classes = 3, per_class = smoke ? 300 : 1000, epochs = smoke ? 60 : 150, batch = 64;
  manual_seed(0);

  auto [x_cpu, y_cpu] = make_spirals(per_class, classes);
  auto [xt_cpu, yt_cpu] = make_spirals(per_class / 4, classes);
  const Tensor x_train = x_cpu.to(device), y_train = y_cpu.to(device), x_test = xt_cpu.to(device),
               y_test = yt_cpu.to(device);

  auto model = make_model(classes);
  model->to(device);
  optim::Adam opt(model->parameters(), {.lr = 1e-2});
  optim::CosineAnnealingLR schedule(opt, epochs);
  auto compiled_step = jit::compile([&](const Tensor& x, const Tensor& y) { return train_step(*model, opt, x, y); },
                                    {.name = "mlp_step"});

  std::printf("mlp: %lld training points, %lld classes, %lld parameters, on %s\n",
              static_cast<long long>(x_train.size(0)), static_cast<long long>(classes),
              static_cast<long long>(count_parameters(*model)), device.str().c_str());
  auto start = std::chrono::steady_clock::now();
  const int64_t n = x_train.size(0);
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    Tensor perm = randperm(n).to(device);
    double total = 0;
    int64_t batches = 0;
    for (int64_t i = 0; i < n; i += batch) {
      Tensor idx = perm.narrow(0, i, std::min(batch, n - i));
      Tensor xb = x_train.index_select(0, idx), yb = y_train.index_select(0, idx);
      Tensor loss = eager ? train_step(*model, opt, xb, yb) : compiled_step(xb, yb);
      total += loss.item<double>();
      ++batches;
    }
    schedule.step();
    if (epoch % (epochs / 10) == 0 || epoch == 1)
      std::printf("epoch %3lld  loss %.4f  test accuracy %.1f%%\n", static_cast<long long>(epoch), total / batches,
                  100 * accuracy(*model, x_test, y_test));
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  model->eval();
  double acc = accuracy(*model, x_test, y_test);
  const double target = smoke ? 0.90 : 0.95;
  if (!eager) std::printf("jit: %s", jit::stats().str().c_str());
  std::printf("mlp: test accuracy %.1f%% after %lld epochs in %.1f s (%s, target %.0f%%): %s\n", 100 * acc,
              static_cast<long long>(epochs), seconds, eager ? "eager" : "compiled", 100 * target,
              acc >= target ? "ok" : "FAILED");
  return acc >= target ? 0 : 1;
}
