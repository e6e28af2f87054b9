#!/usr/bin/env bash
# For a machine with an NVIDIA GPU: builds kiln with CUDA (KILN_WITH_CUDA=ON, Release), runs the CUDA
# test suites (test_cuda_runtime: eager kernels, cuBLAS, allocator, streams, an MLP step and jit on
# the GPU against the CPU; test_cuda_codegen: every fused kernel on the GPU against the CPU kernels),
# then the CUDA benchmarks (bench/bench_cuda.cpp), and prints a short table last.
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
        -DKILN_BUILD_SAMPLES=OFF >/dev/null || exit 1
  cmake --build "$build" -j"$jobs" --target test_cuda_runtime test_cuda_codegen test_cuda_handwritten bench_cuda || exit 1
fi
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
status=0
echo "== device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for t in test_cuda_runtime test_cuda_codegen test_cuda_handwritten; do
  echo "== $t"
  "$build/tests/$t" --gtest_brief=1 --gtest_output="json:$out/$t.json" || status=1
done
echo "== bench_cuda"
"$build/bench/bench_cuda" --benchmark_min_time="${MIN_TIME:-0.2}" --benchmark_out="$out/bench_cuda.json" \
  --benchmark_out_format=json || status=1
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
print("\n== summary (" + out + ")")
for t in ("test_cuda_runtime", "test_cuda_codegen", "test_cuda_handwritten"):
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
    for name, x in b.items():
        gbps = x.get("GBps", 0) / 1e9
        eager = b.get(name.replace("/compiled", "/eager").replace("/builtin", "/eager").replace("/cuda_graph", "/eager"))
        ratio = eager["real_time"] / x["real_time"] if eager and eager is not x else None
        print(f"{name:40s} {x['real_time']:9.3f} {gbps:8.1f} {gbps / copy if copy and gbps else 0:8.2f} "
              f"{ratio if ratio else 0:9.2f}")
PY
exit $status
