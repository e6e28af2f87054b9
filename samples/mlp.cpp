// mlp: classify points of a 2-D spiral dataset (3 interleaved arms) with a small MLP.
//
//   ./build/samples/mlp            full run (a few seconds)
//   ./build/samples/mlp --smoke    reduced size, as the CTest smoke test runs it
//
// Exits non-zero if the final test accuracy is below the target, so it doubles as a test.
#include <kiln/kiln.h>

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

int main(int argc, char** argv) {
  bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const int64_t classes = 3, per_class = smoke ? 300 : 1000, epochs = smoke ? 60 : 150, batch = 64;
  manual_seed(0);

  auto [x_train, y_train] = make_spirals(per_class, classes);
  auto [x_test, y_test] = make_spirals(per_class / 4, classes);

  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(2, 64), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, 64), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, classes));
  optim::Adam opt(model->parameters(), {.lr = 1e-2});
  optim::CosineAnnealingLR schedule(opt, epochs);
  nn::CrossEntropyLoss loss_fn;

  std::printf("mlp: %lld training points, %lld classes, %lld parameters\n",
              static_cast<long long>(x_train.size(0)), static_cast<long long>(classes),
              static_cast<long long>(count_parameters(*model)));
  auto start = std::chrono::steady_clock::now();
  const int64_t n = x_train.size(0);
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    Tensor perm = randperm(n);
    double total = 0;
    int64_t batches = 0;
    for (int64_t i = 0; i < n; i += batch) {
      Tensor idx = perm.narrow(0, i, std::min(batch, n - i));
      Tensor loss = loss_fn(model->forward(x_train.index_select(0, idx)), y_train.index_select(0, idx));
      opt.zero_grad();
      loss.backward();
      opt.step();
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
  std::printf("mlp: test accuracy %.1f%% after %lld epochs in %.1f s (target %.0f%%): %s\n", 100 * acc,
              static_cast<long long>(epochs), seconds, 100 * target, acc >= target ? "ok" : "FAILED");
  return acc >= target ? 0 : 1;
}
