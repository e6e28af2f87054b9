#!/usr/bin/env bash
# Builds kiln and runs the whole test suite: the normal build (warnings as errors), then the
# same suite under AddressSanitizer + UndefinedBehaviorSanitizer, then the concurrent JIT test
# under ThreadSanitizer. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
jobs=${KILN_JOBS:-2}
# Tests run several binaries at once on 2 cores: OpenMP threads must sleep, not spin, while waiting.
export OMP_WAIT_POLICY=PASSIVE

echo "== kiln: release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR=ON "${launcher[@]}" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest -j"$jobs" --output-on-failure)

if [ "${KILN_SKIP_SANITIZERS:-0}" != "1" ]; then
  echo "== kiln: AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
  # -O1 -g1: what the sanitizers are designed for; it halves the build against -O2 -g (the longest
  # part of this script on 2 cores) and keeps line numbers in reports.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
        -DKILN_SANITIZE=address,undefined \
        -DKILN_BUILD_BENCH=OFF -DKILN_BUILD_SAMPLES=OFF -DKILN_WERROR=ON "${launcher[@]}" >/dev/null
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest -j"$jobs" --output-on-failure)

  # Concurrent calls of compiled functions (jit caches, replay, stats) under ThreadSanitizer: only
  # that test is built and run. Its tensors are small, so kernels stay on the calling thread; if a
  # kernel ever goes parallel, libgomp (not TSan-instrumented) reports false races in its barriers:
  # run with OMP_NUM_THREADS=1 then, the JIT's own threads being the ones under test.
  echo "== kiln: ThreadSanitizer build, concurrent JIT calls"
  # -O0: the library is built for this one small test, and unoptimised kernels compile ~5x faster.
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1" -DKILN_SANITIZE=thread \
        -DKILN_BUILD_BENCH=OFF -DKILN_BUILD_SAMPLES=OFF -DKILN_WERROR=ON "${launcher[@]}" >/dev/null
  cmake --build build-tsan -j"$jobs" --target test_jit_concurrency
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" build-tsan/tests/test_jit_concurrency
fi
