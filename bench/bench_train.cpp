// Training and inference workloads: kiln eager, kiln compiled (jit::compile) and LibTorch eager,
// side by side in one binary (bench/workloads.h defines the kiln models):
//   - MLP 784-512-512-10 training step (cross_entropy, SGD), batch 64 and 512
//   - CNN conv-ReLU-maxpool x2 + linear training step (SGD with momentum), batch 32
//   - TransformerEncoderLayer (d_model 256, 4 heads, ff 1024, seq 128, batch 8): forward (eval
//     mode, no grad) and forward + backward of out.pow(2).mean()
// Benchmarks per workload: <workload>/kiln (eager), <workload>/kiln_compiled, <workload>/torch,
// and <workload>/paired, which runs them all in alternating order inside one benchmark (so they
// share the machine's load) and reports the median time per call of each (`kiln_ms`,
// `kiln_compiled_ms`, `torch_ms`) and the ratios `kiln_over_torch`, `compiled_over_torch` (time
// ratios: < 1 means kiln is faster) and `speedup_compiled` (eager time / compiled time).
// Every row reports `GFLOPs` and `of_sgemm`: the share of oneDNN sgemm's GFLOP/s measured at
// start-up (bench/ceilings.h), from the workload's GEMM flops.
//
// LibTorch: with cmake -DKILN_BENCH_LIBTORCH=AUTO (default: used when find_package(Torch) finds
// it, e.g. Debian's libtorch-dev) or ON (required); OFF leaves it out (this is the only file that
// includes <torch/torch.h>; it takes ~20 s to compile). Without it the torch rows and ratios are
// absent and the JSON context says so. Both libraries use KILN_BENCH_THREADS threads (default 2).
//   ./build/bench/bench_train --benchmark_out=bench/train.json --benchmark_out_format=json
//   python3 bench/ratio.py bench/train.json
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/ceilings.h"
#include "bench/workloads.h"

#ifdef KILN_BENCH_WITH_TORCH
#include <torch/torch.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

int bench_threads() {
  const char* t = std::getenv("KILN_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

struct Variant {
  std::string name;  // kiln, kiln_compiled, torch
  std::function<void()> run;
  int warmup = 1;    // calls before timing (a compiled step reaches replay after a few)
};

struct Workload {
  std::vector<Variant> variants;
  double flops = 0;   // GEMM flops per call
  int64_t items = 0;  // samples per call
  std::vector<std::shared_ptr<void>> keep;
};
using Factory = std::function<Workload()>;

// --- kiln: eager and compiled -------------------------------------------------------------------

// A training step on a classifier; the compiled variant trains its own twin.
void add_kiln_classifier(Workload& w, const std::function<std::shared_ptr<kiln::bench::Classifier>()>& make) {
  using namespace kiln;
  auto eager = make();
  auto twin = make();
  auto f = [twin](const Tensor&) { return bench::classifier_step(*twin); };
  auto cf = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, {.name = "train_step"}));
  w.variants.push_back({"kiln", [eager] { benchmark::DoNotOptimize(bench::classifier_step(*eager).impl()); }});
  w.variants.push_back({"kiln_compiled", [twin, cf] { benchmark::DoNotOptimize((*cf)(twin->x).impl()); }, 5});
  w.keep.insert(w.keep.end(), {eager, twin, cf});
}

void add_kiln_encoder(Workload& w, bool training) {
  using namespace kiln;
  auto eager = bench::make_encoder(!training);
  auto twin = bench::make_encoder(!training);
  auto f = [twin, training](const Tensor&) {
    return training ? bench::encoder_train_step(*twin) : bench::encoder_forward(*twin);
  };
  auto cf = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, {.name = training ? "encoder_step" : "encoder_fwd"}));
  w.variants.push_back({"kiln", [eager, training] {
                          std::optional<NoGradGuard> no_grad;
                          if (!training) no_grad.emplace();
                          benchmark::DoNotOptimize(
                              (training ? bench::encoder_train_step(*eager) : bench::encoder_forward(*eager)).impl());
                        }});
  w.variants.push_back({"kiln_compiled", [twin, cf, training] {
                          std::optional<NoGradGuard> no_grad;
                          if (!training) no_grad.emplace();
                          benchmark::DoNotOptimize((*cf)(twin->src).impl());
                        }, 5});
  w.keep.insert(w.keep.end(), {eager, twin, cf});
}

// --- LibTorch: the same workloads ---------------------------------------------------------------

#ifdef KILN_BENCH_WITH_TORCH
struct TorchClassifier {
  torch::nn::Sequential model;
  std::unique_ptr<torch::optim::SGD> opt;
  torch::Tensor x, y;
};

void add_torch_classifier(Workload& w, std::shared_ptr<TorchClassifier> s) {
  w.variants.push_back({"torch", [s] {
                          s->opt->zero_grad();
                          torch::Tensor loss = torch::nn::functional::cross_entropy(s->model->forward(s->x), s->y);
                          loss.backward();
                          s->opt->step();
                          benchmark::DoNotOptimize(loss.data_ptr());
                        }});
  w.keep.push_back(s);
}

std::shared_ptr<TorchClassifier> torch_mlp(int64_t batch) {
  torch::manual_seed(0);
  auto s = std::make_shared<TorchClassifier>();
  s->model = torch::nn::Sequential(torch::nn::Linear(784, 512), torch::nn::ReLU(), torch::nn::Linear(512, 512),
                                   torch::nn::ReLU(), torch::nn::Linear(512, 10));
  s->opt = std::make_unique<torch::optim::SGD>(s->model->parameters(), torch::optim::SGDOptions(0.01));
  s->x = torch::randn({batch, 784});
  s->y = torch::randint(0, 10, {batch});
  return s;
}

std::shared_ptr<TorchClassifier> torch_cnn(int64_t batch) {
  using namespace torch::nn;
  torch::manual_seed(0);
  auto s = std::make_shared<TorchClassifier>();
  s->model = Sequential(Conv2d(Conv2dOptions(1, 16, 3).padding(1)), ReLU(), MaxPool2d(2),
                        Conv2d(Conv2dOptions(16, 32, 3).padding(1)), ReLU(), MaxPool2d(2), Flatten(),
                        Linear(32 * 7 * 7, 10));
  s->opt = std::make_unique<torch::optim::SGD>(s->model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  s->x = torch::randn({batch, 1, 28, 28});
  s->y = torch::randint(0, 10, {batch});
  return s;
}

void add_torch_encoder(Workload& w, bool training) {
  torch::manual_seed(0);
  auto layer = std::make_shared<torch::nn::TransformerEncoderLayer>(
      torch::nn::TransformerEncoderLayerOptions(kiln::bench::kEncModel, kiln::bench::kEncHeads)
          .dim_feedforward(kiln::bench::kEncFF)
          .dropout(0.1));
  if (!training) (*layer)->eval();
  auto src = std::make_shared<torch::Tensor>(
      torch::randn({kiln::bench::kEncSeq, kiln::bench::kEncBatch, kiln::bench::kEncModel}));
  w.variants.push_back({"torch", [layer, src, training] {
                          if (training) {
                            (*layer)->zero_grad();
                            torch::Tensor out = (*layer)->forward(*src);
                            out.pow(2).mean().backward();
                            benchmark::DoNotOptimize(out.data_ptr());
                          } else {
                            torch::NoGradGuard no_grad;
                            torch::Tensor out = (*layer)->forward(*src);
                            benchmark::DoNotOptimize(out.data_ptr());
                          }
                        }});
  w.keep.insert(w.keep.end(), {layer, src});
}
#endif

// --- workloads ----------------------------------------------------------------------------------

Factory mlp_workload(int64_t batch) {
  return [batch] {
    Workload w;
    add_kiln_classifier(w, [batch] { return kiln::bench::make_mlp(512, kiln::bench::Opt::SGD, batch); });
#ifdef KILN_BENCH_WITH_TORCH
    add_torch_classifier(w, torch_mlp(batch));
#endif
    w.flops = kiln::bench::mlp_step_flops(512, batch);
    w.items = batch;
    return w;
  };
}

Factory cnn_workload(int64_t batch) {
  return [batch] {
    Workload w;
    add_kiln_classifier(w, [batch] { return kiln::bench::make_cnn(kiln::bench::Opt::SGDMomentum, batch); });
#ifdef KILN_BENCH_WITH_TORCH
    add_torch_classifier(w, torch_cnn(batch));
#endif
    w.flops = kiln::bench::cnn_step_flops(batch);
    w.items = batch;
    return w;
  };
}

Factory encoder_workload(bool training) {
  return [training] {
    Workload w;
    add_kiln_encoder(w, training);
#ifdef KILN_BENCH_WITH_TORCH
    add_torch_encoder(w, training);
#endif
    w.flops = kiln::bench::encoder_flops(training);
    w.items = kiln::bench::kEncBatch;
    return w;
  };
}

// --- runners ------------------------------------------------------------------------------------

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void run_variant(benchmark::State& state, const Factory& make, size_t which) {
  kiln::jit::reset();
  Workload w = make();
  const Variant& v = w.variants[which];
  for (int i = 0; i < v.warmup; ++i) v.run();
  double secs = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    v.run();
    secs += seconds_since(t0);
  }
  kiln::bench::report_ceiling_share(state, 0, w.flops, secs / static_cast<double>(state.iterations()));
  state.SetItemsProcessed(state.iterations() * w.items);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One call of each variant per iteration, in an order that rotates; per-variant medians.
void run_paired(benchmark::State& state, const Factory& make) {
  kiln::jit::reset();
  Workload w = make();
  for (const Variant& v : w.variants)
    for (int i = 0; i < v.warmup; ++i) v.run();
  const size_t nv = w.variants.size();
  std::vector<std::vector<double>> per_call(nv);
  size_t rot = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < nv; ++k) {
      const size_t v = (k + rot) % nv;
      auto t0 = Clock::now();
      w.variants[v].run();
      per_call[v].push_back(seconds_since(t0));
    }
    ++rot;
  }
  std::vector<double> secs(nv, 0);
  auto index = [&](const std::string& name) -> int {
    for (size_t v = 0; v < nv; ++v)
      if (w.variants[v].name == name) return static_cast<int>(v);
    return -1;
  };
  for (size_t v = 0; v < nv; ++v) {
    secs[v] = median(per_call[v]);
    state.counters[w.variants[v].name + "_ms"] = secs[v] * 1e3;
    kiln::bench::report_ceiling_share(state, 0, w.flops, secs[v], "_" + w.variants[v].name);
  }
  const int eager = index("kiln"), compiled = index("kiln_compiled"), torch = index("torch");
  if (eager >= 0 && compiled >= 0) state.counters["speedup_compiled"] = secs[eager] / secs[compiled];
  if (torch >= 0) {
    if (eager >= 0) state.counters["kiln_over_torch"] = secs[eager] / secs[torch];
    if (compiled >= 0) state.counters["compiled_over_torch"] = secs[compiled] / secs[torch];
  }
}

void register_workload(const std::string& name, const Factory& make) {
  // the variant names, from one instance (cheap: models are small next to a run)
  std::vector<std::string> names;
  for (const Variant& v : make().variants) names.push_back(v.name);
  for (size_t i = 0; i < names.size(); ++i)
    benchmark::RegisterBenchmark((name + "/" + names[i]).c_str(), run_variant, make, i)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark((name + "/paired").c_str(), run_paired, make)->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = bench_threads();
  kiln::set_num_threads(threads);
#ifdef KILN_BENCH_WITH_TORCH
  torch::set_num_threads(threads);
  benchmark::AddCustomContext("libtorch", "yes");
#else
  benchmark::AddCustomContext("libtorch", "not built in (cmake -DKILN_BENCH_LIBTORCH=ON with libtorch-dev installed)");
#endif
  benchmark::AddCustomContext("threads", std::to_string(threads));
  kiln::bench::measure_ceilings();
  register_workload("MLPStep_b64", mlp_workload(64));
  register_workload("MLPStep_b512", mlp_workload(512));
  register_workload("CNNStep_b32", cnn_workload(32));
  register_workload("EncoderLayerForward", encoder_workload(false));
  register_workload("EncoderLayerTrainStep", encoder_workload(true));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
