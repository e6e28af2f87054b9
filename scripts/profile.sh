#!/usr/bin/env bash
# Profiles an MLP training step (eager and compiled): builds samples/profile_mlp, runs it, and
# leaves kiln_trace.json (open it in https://ui.perfetto.dev) and the kernels' code in
# kiln_dump/. Usage: bash scripts/profile.sh [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j2 --target profile_mlp
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# A short spin (~50 µs here) before a worker sleeps: without it every parallel region pays a
# ~50 µs futex wake-up (docs/decisions.md, "Passive OpenMP waits").
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-2000}
rm -rf kiln_dump
./build/samples/profile_mlp --out kiln_trace.json --dump kiln_dump "$@"
echo "kernel code: kiln_dump/mlp_step.0.kernels.txt (kernel names as in the trace and in jit::stats())"
