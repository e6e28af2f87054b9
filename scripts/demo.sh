#!/usr/bin/env bash
# Builds and runs the main kiln demo, then the training samples. Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j2 --target demo mlp cnn char_transformer
# OpenMP threads sleep while waiting, so a busy (shared) machine does not slow the samples down.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# A short spin (~50 µs here) before a worker sleeps: without it every parallel region pays a
# ~50 µs futex wake-up (docs/decisions.md, "Passive OpenMP waits").
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-2000}
./build/samples/demo
for sample in mlp cnn char_transformer; do
  echo
  echo "== samples/$sample"
  (cd build/samples && ./$sample)
done
