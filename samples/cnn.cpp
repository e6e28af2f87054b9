// cnn: a small convolutional net learns to tell apart 16x16 images of four generated shapes
// (square outline, disk, plus sign, triangle) drawn at random sizes and positions, with noise.
//
//   ./build/samples/cnn            full run
//   ./build/samples/cnn --smoke    reduced size, as the CTest smoke test runs it
//
// Exits non-zero if the final test accuracy is below the target.
#include <kiln/kiln.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace kiln;

constexpr int64_t kSide = 16;
const char* const kShapes[] = {"square", "disk", "plus", "triangle"};
constexpr int64_t kClasses = 4;

// One image of shape `cls` into `img` (kSide * kSide floats, background 0, ink 1).
void draw(int64_t cls, std::mt19937& rng, float* img) {
  std::uniform_int_distribution<int> size_d(6, 11);
  int s = size_d(rng);
  std::uniform_int_distribution<int> pos_d(0, kSide - s);
  int x0 = pos_d(rng), y0 = pos_d(rng);
  for (int y = 0; y < s; ++y) {
    for (int x = 0; x < s; ++x) {
      double cx = x - (s - 1) / 2.0, cy = y - (s - 1) / 2.0;
      bool ink = false;
      switch (cls) {
        case 0: ink = x == 0 || y == 0 || x == s - 1 || y == s - 1; break;            // square outline
        case 1: ink = cx * cx + cy * cy <= (s / 2.0) * (s / 2.0); break;               // disk
        case 2: ink = std::abs(cx) < 1.0 || std::abs(cy) < 1.0; break;                  // plus
        case 3: ink = std::abs(cx) <= (y + 1) / 2.0; break;                              // triangle
      }
      if (ink) img[(y0 + y) * kSide + (x0 + x)] = 1.0f;
    }
  }
}

std::pair<Tensor, Tensor> make_images(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> pixels(static_cast<size_t>(n * kSide * kSide), 0.0f);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % kClasses;
    draw(labels[i], rng, pixels.data() + i * kSide * kSide);
  }
  Tensor x = tensor(pixels).view({n, 1, kSide, kSide});
  x = x + randn(x.sizes()) * 0.2;  // sensor noise
  return {x, tensor(labels)};
}

double accuracy(nn::Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard no_grad;
  return (model.forward(x).argmax(1) == y).to(kFloat32).mean().item<double>();
}

int main(int argc, char** argv) {
  bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const int64_t train_n = smoke ? 1600 : 4000, test_n = smoke ? 400 : 1000, epochs = smoke ? 10 : 12, batch = 32;
  manual_seed(0);
  auto [x_train, y_train] = make_images(train_n, 1);
  auto [x_test, y_test] = make_images(test_n, 2);

  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(1, 8, 3, /*stride=*/1, /*padding=*/1), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2),                                       // 8 x 8 x 8
      std::make_shared<nn::Conv2d>(8, 16, 3, /*stride=*/1, /*padding=*/1), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2),                                       // 16 x 4 x 4
      std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(16 * 4 * 4, 64), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, kClasses));
  optim::Adam opt(model->parameters(), {.lr = 3e-3});
  nn::CrossEntropyLoss loss_fn;
  std::printf("cnn: %lld training images of %lldx%lld (", static_cast<long long>(train_n),
              static_cast<long long>(kSide), static_cast<long long>(kSide));
  for (int64_t c = 0; c < kClasses; ++c) std::printf("%s%s", c ? ", " : "", kShapes[c]);
  std::printf(")\n");

  auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    Tensor perm = randperm(train_n);
    double total = 0;
    int64_t batches = 0;
    for (int64_t i = 0; i < train_n; i += batch) {
      Tensor idx = perm.narrow(0, i, std::min(batch, train_n - i));
      Tensor loss = loss_fn(model->forward(x_train.index_select(0, idx)), y_train.index_select(0, idx));
      opt.zero_grad();
      loss.backward();
      opt.step();
      total += loss.item<double>();
      ++batches;
    }
    std::printf("epoch %lld  loss %.4f  test accuracy %.1f%%\n", static_cast<long long>(epoch), total / batches,
                100 * accuracy(*model, x_test, y_test));
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  model->eval();
  double acc = accuracy(*model, x_test, y_test);
  const double target = 0.90;
  std::printf("cnn: test accuracy %.1f%% after %lld epochs in %.1f s (target %.0f%%): %s\n", 100 * acc,
              static_cast<long long>(epochs), seconds, 100 * target, acc >= target ? "ok" : "FAILED");
  return acc >= target ? 0 : 1;
}
