// profile_mlp: profiles an MLP training step (SGD with momentum), eagerly and through jit::compile, writes a
// Chrome trace and prints the summary tables.
//
//   bash scripts/profile.sh                         builds this sample, runs it, says what to open
//   ./build/samples/profile_mlp [--steps N] [--out kiln_trace.json] [--dump DIR]
//   ./build/samples/profile_mlp --overhead          what profiling costs per op, off and on
//
// Open the trace in https://ui.perfetto.dev (or chrome://tracing): one track per thread; the
// compiled steps show the plan's nodes with arrows to the kernels that ran them. --dump DIR also
// writes the compiled graphs and kernels (KILN_DUMP_DIR): a kernel "mlp_step.0/k8_sum" of the
// trace is listed under that name in DIR/mlp_step.0.kernels.txt, and jit::stats() (printed last)
// counts its calls. docs/profiling.md explains the events and the columns.
#include <kiln/kiln.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace kiln;

// Time per call of `f` (ns), off and on: the fastest of many short rounds, alternating, so
// that both see the same machine (it may be shared); and the events one call records.
struct Cost {
  double off = 1e300, on = 1e300, events_per_call = 0;
};
template <class F>
Cost measure(F&& f) {
  const int n = 1000, rounds = 60;
  auto time = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) f();
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
  };
  Cost c;
  for (int r = 0; r < rounds; ++r) {
    c.off = std::min(c.off, time());
    profiler::Profile p;
    c.on = std::min(c.on, time());
    p.stop();
    c.events_per_call = static_cast<double>(p.events().size()) / n;
  }
  return c;
}

// The profiler's cost on the paths it instruments: an eager op on one element (dispatch
// dominates) and a replayed compiled call of a 3-op graph (one fused kernel), off and on.
int overhead() {
  Tensor a = randn({1}), b = randn({1});
  auto f = jit::compile([](const Tensor& x, const Tensor& y) { return (x * y).exp() + y; }, {.name = "overhead"});
  for (int i = 0; i < 5; ++i) f(a, b);  // compiled and promoted to replay
  const Cost eager = measure([&] { Tensor c = add(a, b); });
  const Cost replay = measure([&] { Tensor c = f(a, b); });
  std::printf("eager add, 1 element:   off %6.0f ns/call, on %6.0f ns/call, %.0f event(s)/call: %4.0f ns per event\n",
              eager.off, eager.on, eager.events_per_call, (eager.on - eager.off) / eager.events_per_call);
  std::printf("replayed call, 1 kernel: off %6.0f ns/call, on %6.0f ns/call, %.0f event(s)/call: %4.0f ns per event\n",
              replay.off, replay.on, replay.events_per_call, (replay.on - replay.off) / replay.events_per_call);
  return 0;
}

int main(int argc, char** argv) {
  int steps = 5;
  std::string out = "kiln_trace.json";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::max(3, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
    else if (std::strcmp(argv[i], "--dump") == 0 && i + 1 < argc) ::setenv("KILN_DUMP_DIR", argv[++i], 1);
    else if (std::strcmp(argv[i], "--overhead") == 0) return overhead();
    else {
      std::fprintf(stderr, "usage: %s [--steps N (>= 3)] [--out kiln_trace.json] [--dump DIR] | --overhead\n", argv[0]);
      return 2;
    }
  }
  manual_seed(0);
  const int64_t batch = 256, features = 64, hidden = 256, classes = 10;
  auto model = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(features, hidden), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(hidden, hidden), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(hidden, classes));
  optim::SGD opt(model->parameters(), {.lr = 0.05, .momentum = 0.9});
  Tensor x = randn({batch, features}), y = randint(0, classes, {batch});

  auto step = [&](const Tensor& xb, const Tensor& yb) {
    Tensor loss = cross_entropy(model->forward(xb), yb);
    opt.zero_grad();
    loss.backward();
    opt.step();
    return loss.detach();
  };
  auto compiled_step = jit::compile(step, {.name = "mlp_step"});
  step(x, y);  // the momentum buffers exist from here on: the profiled eager steps are all alike

  profiler::Profile prof(profiler::Options{.record_shapes = true, .record_allocations = true, .record_memory = true});
  {
    profiler::Scope all("eager steps");
    for (int i = 0; i < steps; ++i) {
      profiler::Scope one("eager step");
      step(x, y);
    }
  }
  {
    // The first calls capture and compile; from the third on the plan replays without running f.
    profiler::Scope all("compiled steps");
    for (int i = 0; i < steps; ++i) {
      profiler::Scope one("compiled step");
      compiled_step(x, y);
    }
  }
  prof.stop();
  prof.save_chrome_trace(out);

  std::printf("== by op / kernel, sorted by self time\n%s\n",
              prof.table(profiler::SortBy::SelfTime, profiler::GroupBy::Name, 30).c_str());
  std::printf("== by kind\n%s\n", prof.table(profiler::SortBy::SelfTime, profiler::GroupBy::Category).c_str());
  std::printf("== jit::stats()\n%s\n", jit::stats().str().c_str());
  std::printf("wrote %s (%zu events): open it in https://ui.perfetto.dev or chrome://tracing\n", out.c_str(),
              prof.events().size());
  return 0;
}
