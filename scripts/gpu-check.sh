#!/usr/bin/env bash
# For a machine with an NVIDIA GPU: builds kiln with CUDA (KILN_WITH_CUDA=ON, Release), runs the CUDA
# test suites (test_cuda_runtime: eager kernels, cuBLAS, cuDNN, allocator, streams, CUDA graphs, an
# MLP step and jit on the GPU against the CPU; test_cuda_codegen: every fused kernel on the GPU
# against the CPU kernels; test_jit_ops' CudaOps: every op-table case, values and gradients;
# fuzz_fusion --device cuda, forward and backward), then the CUDA benchmarks (bench/bench_cuda.cpp),
# and prints a short table last.
#   bash scripts/gpu-check.sh            # everything (a few minutes; most of it the build)
#   KILN_GPU_SKIP_BUILD=1 bash scripts/gpu-check.sh   # reuse build-gpu
# Environment: KILN_JOBS (default: all cores), KILN_GPU_BUILD_DIR (build-gpu), MIN_TIME (0.2 s).
# Exit status: non-zero when a test failed (the benchmarks still ran and were printed).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${KILN_GPU_BUILD_DIR:-build-gpu}
jobs=${KILN_JOBS:-$(nproc)}
out="$build/gpu-check"
if [ "${KILN_GPU_SKIP_BUILD:-0}" != "1" ]; then
  bash scripts/install_deps.sh || exit 1
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WITH_CUDA=ON -DKILN_BENCH_LIBTORCH=OFF \
        >/dev/null || exit 1
  cmake --build "$build" -j"$jobs" --target test_cuda_runtime test_cuda_codegen test_cuda_handwritten test_jit_ops fuzz_fusion mlp bench_cuda || exit 1
fi
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-2000}  # docs/decisions.md, "Passive OpenMP waits"
status=0
echo "== device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for t in test_cuda_runtime test_cuda_codegen test_cuda_handwritten; do
  echo "== $t"
  "$build/tests/$t" --gtest_brief=1 --gtest_output="json:$out/$t.json" || status=1
done
echo "== test_jit_ops on CUDA (every op-table case: values and float64 gradients against the CPU)"
"$build/tests/test_jit_ops" --gtest_brief=1 --gtest_filter='Rows/CudaOps.*' --gtest_output="json:$out/test_jit_ops_cuda.json" || status=1
echo "== samples/mlp on CUDA: 20 Adam steps against the CPU, then a training run"
"$build/samples/mlp" --check-cuda || status=1
"$build/samples/mlp" --smoke --device cuda | tail -n 2 || status=1
echo "== fuzz_fusion on CUDA (eager CUDA against compiled CUDA)"
"$build/tests/fuzz_fusion" --device cuda --iterations "${KILN_GPU_FUZZ:-300}" --no-shrink > "$out/fuzz.txt" 2>&1 || status=1
"$build/tests/fuzz_fusion" --device cuda --backward --iterations "${KILN_GPU_FUZZ_BACKWARD:-100}" --no-shrink >> "$out/fuzz.txt" 2>&1 || status=1
tail -n 4 "$out/fuzz.txt"
echo "== bench_cuda"
"$build/bench/bench_cuda" --benchmark_min_time="${MIN_TIME:-0.2}" --benchmark_out="$out/bench_cuda.json" \
  --benchmark_out_format=json || status=1
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
print("\n== summary (" + out + ")")
for t in ("test_cuda_runtime", "test_cuda_codegen", "test_cuda_handwritten", "test_jit_ops_cuda"):
    p = os.path.join(out, t + ".json")
    if not os.path.exists(p):
        print(f"{t:22s} did not run"); continue
    d = json.load(open(p))
    skipped = sum(1 for s in d["testsuites"] for c in s["testsuite"] if c.get("result") == "SKIPPED")
    print(f"{t:22s} {d['tests']} tests, {d['failures']} failed, {skipped} skipped")
p = os.path.join(out, "bench_cuda.json")
if os.path.exists(p):
    b = {x["name"]: x for x in json.load(open(p))["benchmarks"] if not x.get("error_occurred")}
    copy = b.get("BM_Copy_D2D_64M/real_time", {}).get("GBps", 0) / 1e9
    print(f"{'benchmark':40s} {'ms':>9s} {'GB/s':>8s} {'of copy':>8s} {'vs eager':>9s}")
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    ms = lambda x: x["real_time"] * scale.get(x.get("time_unit", "ns"), 1e-6)
    for name, x in b.items():
        gbps = x.get("GBps", 0) / 1e9
        eager = b.get(name.replace("/compiled", "/eager").replace("/builtin", "/eager").replace("/cuda_graph", "/eager"))
        ratio = ms(eager) / ms(x) if eager and eager is not x else None
        print(f"{name:40s} {ms(x):9.4f} {gbps:8.1f} {gbps / copy if copy and gbps else 0:8.2f} "
              f"{ratio if ratio else 0:9.2f}")
PY
exit $status
