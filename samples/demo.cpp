// kiln demo: the same model run eagerly and through kiln::jit::compile, side by side.
//   1. inference: jit::compile(model) against model->forward, under NoGradGuard;
//   2. training: a whole step (forward, MSE loss, backward, SGD with momentum) compiled as one graph,
//      on a twin of the eager model, checking that parameters stay equal.
// It prints the time per iteration and the speedup of each, the largest difference between the
// eager and compiled results, jit::stats(), and the graph files KILN_DUMP_DIR received.
//
//   ./build/samples/demo            (KILN_LOG=recompiles,breaks,guards shows the JIT's decisions)
#include <kiln/kiln.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

using namespace kiln;

namespace {

std::shared_ptr<nn::Sequential> make_model() {
  manual_seed(0);  // the eager and compiled twins start from the same weights
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(64, 256), std::make_shared<nn::LayerNorm>(256),
                                          std::make_shared<nn::GELU>(), std::make_shared<nn::Linear>(256, 256),
                                          std::make_shared<nn::GELU>(), std::make_shared<nn::Linear>(256, 10));
}

// Milliseconds per call of `a` and of `b`: `iters` calls of each, in alternating rounds so that a
// machine busy with other work slows both alike; each figure is its fastest round.
std::pair<double, double> time_pair_ms(int iters, const std::function<void()>& a, const std::function<void()>& b) {
  const int rounds = 5, per_round = iters / rounds;
  double best_a = 1e300, best_b = 1e300;
  auto round = [&](const std::function<void()>& f) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < per_round; ++i) f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / per_round;
  };
  for (int r = 0; r < rounds; ++r) {
    best_a = std::min(best_a, round(a));
    best_b = std::min(best_b, round(b));
  }
  return {best_a, best_b};
}

double max_abs_diff(const Tensor& a, const Tensor& b) { return (a - b).abs().max().item<double>(); }

void print_times(const char* what, double eager_ms, double compiled_ms) {
  std::printf("%-10s eager %8.3f ms/iter   compiled %8.3f ms/iter   speedup %.2fx\n", what, eager_ms, compiled_ms,
              eager_ms / compiled_ms);
}

}  // namespace

int main() {
  // Graph dumps go here unless the caller chose a directory (read at each compile).
  if (!std::getenv("KILN_DUMP_DIR")) setenv("KILN_DUMP_DIR", "kiln_dump", 1);
  const std::filesystem::path dump_dir = std::getenv("KILN_DUMP_DIR");
  // The files this demo's functions write start with their names; older ones are removed so the
  // listing shows this run's (nothing else in the directory is touched).
  auto ours = [](const std::string& file) { return file.starts_with("forward.") || file.starts_with("train_step."); };
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dump_dir, ec))
    if (ours(f.path().filename().string())) std::filesystem::remove(f.path(), ec);

  const int64_t batch = 32;
  const int iters = 200;
  std::printf("kiln demo: MLP 64-256(LayerNorm, GELU)-256(GELU)-10, batch %lld, %d iterations, %d threads\n\n",
              static_cast<long long>(batch), iters, get_num_threads());
  manual_seed(1);
  Tensor x = randn({batch, 64});
  Tensor y = tanh(matmul(x, randn({64, 10}) * 0.2));  // regression targets from a fixed random map

  // --- 1. inference -------------------------------------------------------------------------------
  auto model = make_model();
  auto forward = jit::compile(model, {.name = "forward"});
  double infer_diff = 0;
  double eager_fwd, compiled_fwd;
  {
    NoGradGuard no_grad;
    Tensor want, got;
    for (int i = 0; i < 5; ++i) forward(x);  // trace, trace (promoted to replay), replays
    std::tie(eager_fwd, compiled_fwd) =
        time_pair_ms(iters, [&] { want = model->forward(x); }, [&] { got = forward(x); });
    infer_diff = max_abs_diff(want, got);
  }

  // --- 2. training --------------------------------------------------------------------------------
  auto eager_model = make_model();
  auto jit_model = make_model();
  optim::SGD eager_opt(eager_model->parameters(), {.lr = 0.05, .momentum = 0.9});
  optim::SGD jit_opt(jit_model->parameters(), {.lr = 0.05, .momentum = 0.9});
  auto step = [](nn::Sequential& m, optim::Optimizer& opt, const Tensor& a, const Tensor& b) {
    opt.zero_grad();
    Tensor loss = mse_loss(m.forward(a), b);
    loss.backward();
    opt.step();
    return loss.detach();  // no autograd history in the result, so the step can replay
  };
  auto train_step = jit::compile([&](const Tensor& a, const Tensor& b) { return step(*jit_model, jit_opt, a, b); },
                                 {.name = "train_step"});
  Tensor eager_loss, jit_loss, first_loss;
  first_loss = step(*eager_model, eager_opt, x, y);  // step 1 of both twins, untimed
  train_step(x, y);
  const auto [eager_train, compiled_train] = time_pair_ms(
      iters, [&] { eager_loss = step(*eager_model, eager_opt, x, y); }, [&] { jit_loss = train_step(x, y); });
  double param_diff = 0;
  auto pe = eager_model->parameters(), pj = jit_model->parameters();
  for (size_t i = 0; i < pe.size(); ++i) param_diff = std::max(param_diff, max_abs_diff(pe[i], pj[i]));

  print_times("inference", eager_fwd, compiled_fwd);
  print_times("training", eager_train, compiled_train);
  std::printf("\nmax |eager - compiled|: inference output %.3g, loss after %d steps %.3g, parameters %.3g\n",
              infer_diff, iters + 1, max_abs_diff(eager_loss, jit_loss), param_diff);
  std::printf("loss: %.4g at step 1, %.4g at step %d (eager %.4g)\n", first_loss.item<double>(),
              jit_loss.item<double>(), iters + 1, eager_loss.item<double>());
  const bool match = infer_diff < 1e-4 && param_diff < 1e-4;
  std::printf("results match: %s\n", match ? "yes" : "NO");

  std::printf("\njit::stats():\n%s", jit::stats().str().c_str());

  std::vector<std::string> files;
  for (const auto& f : std::filesystem::directory_iterator(dump_dir, ec))
    if (ours(f.path().filename().string())) files.push_back(f.path().filename().string());
  std::sort(files.begin(), files.end());
  std::printf("\nKILN_DUMP_DIR=%s received %zu files (a graph, its Graphviz form and its guards per cache entry):\n",
              dump_dir.c_str(), files.size());
  for (const std::string& f : files) std::printf("  %s\n", f.c_str());
  auto first_graph = std::find_if(files.begin(), files.end(),
                                  [](const std::string& f) { return f.ends_with(".graph.txt"); });
  if (first_graph != files.end()) {
    std::ifstream in(dump_dir / *first_graph);
    std::stringstream text;
    text << in.rdbuf();
    std::string body = text.str();
    if (!body.empty() && body.back() != '\n') body += '\n';
    std::printf("\n--- %s ---\n%s", first_graph->c_str(), body.c_str());
  }
  return match ? 0 : 1;
}
