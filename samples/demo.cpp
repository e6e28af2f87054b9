// kiln demo: a small eager workload (an MLP-style forward on random data), timed, with the
// results printed. It becomes the eager-vs-compiled demo once kiln::jit lands.
#include <kiln/kiln.h>

#include <chrono>
#include <iostream>

using namespace kiln;

static Tensor mlp_forward(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  Tensor h = gelu(linear(x, w1, b1));
  return log_softmax(linear(h, w2, b2), -1);
}

int main() {
  manual_seed(0);
  const int64_t batch = 256, in = 784, hidden = 512, out = 10;
  Tensor x = randn({batch, in});
  Tensor w1 = randn({hidden, in}) * (1.0 / std::sqrt(double(in)));
  Tensor b1 = zeros({hidden});
  Tensor w2 = randn({out, hidden}) * (1.0 / std::sqrt(double(hidden)));
  Tensor b2 = zeros({out});

  std::cout << "kiln eager demo: MLP " << in << "-" << hidden << "-" << out << ", batch " << batch << "\n";
  Tensor y = mlp_forward(x, w1, b1, w2, b2);  // warm-up
  const int iters = 50;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) y = mlp_forward(x, w1, b1, w2, b2);
  auto t1 = std::chrono::steady_clock::now();
  double ms = std::chrono::duration<double, std::milli>(t1 - t0).count() / iters;

  std::cout << "first rows of log-probabilities:\n" << y.narrow(0, 0, 2) << "\n";
  Tensor probs_sum = exp(y).sum({1});
  std::cout << "rows sum to 1: " << (allclose(probs_sum, ones({batch}), 1e-4, 1e-5) ? "yes" : "NO") << "\n";
  std::cout << "predicted classes of the first 8 rows: " << argmax(y, 1).narrow(0, 0, 8) << "\n";
  std::cout << "eager forward: " << ms << " ms/iter (" << get_num_threads() << " threads)\n";
  return 0;
}
