// Eager training workloads, kiln against LibTorch in the same binary (when CMake finds Torch):
//   - MLP 784-512-512-10 training step (cross-entropy, SGD), batch 64 and 512
//   - TransformerEncoderLayer (d_model 256, 4 heads, ff 1024, seq 128, batch 8): forward, and
//     forward + backward
// Both libraries run with the same thread count (KILN_BENCH_THREADS, default 2). Pairs are named
// <workload>/kiln and <workload>/torch; bench/ratio.py prints kiln/torch from the JSON output:
//   ./build/bench/bench_train --benchmark_out=bench/train.json --benchmark_out_format=json
//   python3 bench/ratio.py bench/train.json
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>

#include <cstdlib>

#ifdef KILN_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif

namespace {

int bench_threads() {
  const char* t = std::getenv("KILN_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

// --- kiln -------------------------------------------------------------------------------------

void BM_MLPStep_kiln(benchmark::State& state) {
  using namespace kiln;
  const int64_t batch = state.range(0);
  manual_seed(0);
  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(784, 512), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(512, 512),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(512, 10));
  optim::SGD opt(model->parameters(), {.lr = 0.01});
  Tensor x = randn({batch, 784});
  Tensor y = randint(0, 10, {batch});
  for (auto _ : state) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

std::shared_ptr<kiln::nn::TransformerEncoderLayer> kiln_encoder_layer() {
  using namespace kiln;
  return std::make_shared<nn::TransformerEncoderLayer>(
      nn::TransformerEncoderLayerOptions{.d_model = 256, .nhead = 4, .dim_feedforward = 1024, .dropout = 0.1});
}

void BM_EncoderLayerForward_kiln(benchmark::State& state) {
  using namespace kiln;
  manual_seed(0);
  auto layer = kiln_encoder_layer();
  Tensor src = randn({128, 8, 256});  // (seq, batch, d_model)
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor out = layer->forward(src);
    benchmark::DoNotOptimize(out.data_ptr());
  }
}

void BM_EncoderLayerTrainStep_kiln(benchmark::State& state) {
  using namespace kiln;
  manual_seed(0);
  auto layer = kiln_encoder_layer();
  Tensor src = randn({128, 8, 256});
  for (auto _ : state) {
    layer->zero_grad();
    Tensor out = layer->forward(src);
    out.pow(2).mean().backward();
    benchmark::DoNotOptimize(out.data_ptr());
  }
}

#ifdef KILN_BENCH_WITH_TORCH
// --- LibTorch: the same workloads ---------------------------------------------------------------

void BM_MLPStep_torch(benchmark::State& state) {
  const int64_t batch = state.range(0);
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(784, 512), torch::nn::ReLU(), torch::nn::Linear(512, 512),
                              torch::nn::ReLU(), torch::nn::Linear(512, 10));
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01));
  torch::Tensor x = torch::randn({batch, 784});
  torch::Tensor y = torch::randint(0, 10, {batch});
  for (auto _ : state) {
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

torch::nn::TransformerEncoderLayer torch_encoder_layer() {
  return torch::nn::TransformerEncoderLayer(
      torch::nn::TransformerEncoderLayerOptions(256, 4).dim_feedforward(1024).dropout(0.1));
}

void BM_EncoderLayerForward_torch(benchmark::State& state) {
  torch::manual_seed(0);
  auto layer = torch_encoder_layer();
  torch::Tensor src = torch::randn({128, 8, 256});
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    torch::Tensor out = layer->forward(src);
    benchmark::DoNotOptimize(out.data_ptr());
  }
}

void BM_EncoderLayerTrainStep_torch(benchmark::State& state) {
  torch::manual_seed(0);
  auto layer = torch_encoder_layer();
  torch::Tensor src = torch::randn({128, 8, 256});
  for (auto _ : state) {
    layer->zero_grad();
    torch::Tensor out = layer->forward(src);
    out.pow(2).mean().backward();
    benchmark::DoNotOptimize(out.data_ptr());
  }
}
#endif

}  // namespace

// Pairs registered back to back, so each kiln figure has its LibTorch twin measured next to it.
#ifdef KILN_BENCH_WITH_TORCH
#define KILN_TORCH_TWIN(FN, NAME, ARGS) BENCHMARK(FN##_torch)->Name(NAME "/torch") ARGS->Unit(benchmark::kMillisecond);
#else
#define KILN_TORCH_TWIN(FN, NAME, ARGS)
#endif
#define KILN_PAIR(FN, NAME, ARGS)                                                   \
  BENCHMARK(FN##_kiln)->Name(NAME "/kiln") ARGS->Unit(benchmark::kMillisecond); \
  KILN_TORCH_TWIN(FN, NAME, ARGS)
#define KILN_NOARGS

KILN_PAIR(BM_MLPStep, "MLPStep_b64", ->Arg(64))
KILN_PAIR(BM_MLPStep, "MLPStep_b512", ->Arg(512))
KILN_PAIR(BM_EncoderLayerForward, "EncoderLayerForward", KILN_NOARGS)
KILN_PAIR(BM_EncoderLayerTrainStep, "EncoderLayerTrainStep", KILN_NOARGS)

int main(int argc, char** argv) {
  int threads = bench_threads();
  kiln::set_num_threads(threads);
#ifdef KILN_BENCH_WITH_TORCH
  torch::set_num_threads(threads);
  benchmark::AddCustomContext("libtorch", "yes");
#else
  benchmark::AddCustomContext("libtorch", "not found at configure time (apt-get install libtorch-dev)");
#endif
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
