#!/usr/bin/env bash
# Builds bench_fusion (Release) and runs it: the Google Benchmark suite, then the compile latency
# in two fresh processes sharing one empty KILN_CACHE_DIR (cold, then with a warm disk cache),
# both written to bench/fusion.json (the latter under "compile_latency"), and prints the issue's
# targets next to the measured figures (bench/fusion_report.py).
#   bash scripts/bench_fusion.sh                                   # everything (a few minutes)
#   bash scripts/bench_fusion.sh --benchmark_filter='Chain|Triad'  # extra Google Benchmark flags
# Environment: KILN_BUILD_DIR (build), KILN_JOBS (2), KILN_BENCH_THREADS (2), MIN_TIME (0.2 s per
# benchmark), KILN_BENCH_OUT (bench/fusion.json).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KILN_BUILD_DIR:-build}
out=${KILN_BENCH_OUT:-bench/fusion.json}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
fi
cmake --build "$build" -j"${KILN_JOBS:-2}" --target bench_fusion
# OpenMP threads sleep while waiting, so other work on a shared machine is not starved.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# A short spin (~50 µs here) before a worker sleeps: without it every parallel region pays a
# ~50 µs futex wake-up (docs/decisions.md, "Passive OpenMP waits").
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-2000}
bin="$build/bench/bench_fusion"
"$bin" --benchmark_min_time="${MIN_TIME:-0.2}" --benchmark_out="$out.tmp" --benchmark_out_format=json "$@"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
cold=$(KILN_CACHE_DIR="$cache" "$bin" --compile-latency)
warm=$(KILN_CACHE_DIR="$cache" "$bin" --compile-latency)
mv "$out.tmp" "$out"
python3 bench/fusion_report.py "$out" --cold "$cold" --warm "$warm"
