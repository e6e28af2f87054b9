#!/usr/bin/env bash
# Runs kiln's benchmark suites with repetitions and writes one Google Benchmark JSON file per suite
# (eager.json, jit.json, fusion.json, train.json) into OUT_DIR; with --compare BASE_DIR, compares
# each with the file of the same name in BASE_DIR (kiln-bench-compare) and exits 1 on a significant
# regression. docs/perf-testing.md explains the flow.
#
#   bash scripts/bench.sh OUT_DIR [options] [-- extra Google Benchmark flags]
#     --suites "eager jit fusion train"  which suites (default: all four)
#     --reps N          repetitions per benchmark (default 6; the rank test needs >= 4 a side)
#     --min-time S      seconds per repetition (default 0.2)
#     --quick           --reps 5 --min-time 0.05: minutes, not tens of minutes; noisier
#     --compare DIR     compare with DIR/<suite>.json; reports in OUT_DIR/compare/
#     --threshold X     passed to kiln-bench-compare (default 5%)
#     --alpha A         passed to kiln-bench-compare (default 0.05)
#   bash scripts/bench.sh out --quick --compare bench/baseline     # the CI check
#   bash scripts/bench.sh bench/baseline --quick                    # refresh the baseline
#
# Environment: KILN_BUILD_DIR (build), KILN_JOBS (2), KILN_BENCH_THREADS (2, kiln and LibTorch),
# OMP_WAIT_POLICY (PASSIVE unless set), GOMP_SPINCOUNT (2000 unless set). Exit status: 0, 1 (a significant regression), 2 (bad usage,
# a missing file or a failed run).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift
suites="eager jit fusion train"
reps=6
min_time=0.2
paired_min_time=""
base=""
compare_flags=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suites) suites=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --min-time) min_time=$2; shift 2 ;;
    --quick) reps=5; min_time=0.05; paired_min_time=0.05; shift ;;
    --compare) base=$2; shift 2 ;;
    --threshold|--alpha) compare_flags+=("$1" "$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
for s in $suites; do
  case "$s" in eager|jit|fusion|train) ;; *) echo "bench.sh: unknown suite '$s' (eager, jit, fusion, train)" >&2; exit 2 ;; esac
done
if [ -n "$base" ] && [ ! -d "$base" ]; then
  echo "bench.sh: --compare $base: no such directory" >&2
  exit 2
fi

build=${KILN_BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
fi
targets=(kiln-bench-compare)
for s in $suites; do targets+=("bench_$s"); done
cmake --build "$build" -j"${KILN_JOBS:-2}" --target "${targets[@]}"

# OpenMP threads sleep while waiting, so other work on a shared machine is not starved.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# A short spin (~50 µs here) before a worker sleeps: without it every parallel region pays a
# ~50 µs futex wake-up (docs/decisions.md, "Passive OpenMP waits").
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-2000}
[ -n "$paired_min_time" ] && export KILN_BENCH_PAIRED_MIN_TIME=$paired_min_time
mkdir -p "$out"
for s in $suites; do
  echo "== bench_$s: $reps repetitions of ${min_time} s -> $out/$s.json"
  # Repetitions interleaved at random: a slow phase of the machine spreads over all benchmarks
  # instead of shifting one benchmark's every repetition.
  if ! "$build/bench/bench_$s" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
        --benchmark_enable_random_interleaving=true --benchmark_display_aggregates_only=true \
        --benchmark_out="$out/$s.json.tmp" --benchmark_out_format=json "${extra[@]}"; then
    echo "bench.sh: bench_$s failed" >&2
    exit 2
  fi
  mv "$out/$s.json.tmp" "$out/$s.json"
done

[ -n "$base" ] || exit 0
mkdir -p "$out/compare"
status=0
for s in $suites; do
  if [ ! -f "$base/$s.json" ]; then
    echo "bench.sh: $base/$s.json does not exist: bench_$s not compared" >&2
    status=2
    continue
  fi
  echo "== compare $base/$s.json -> $out/$s.json"
  rc=0
  "$build/bench/compare/kiln-bench-compare" "$base/$s.json" "$out/$s.json" "${compare_flags[@]}" \
      --md "$out/compare/$s.md" --svg "$out/compare/$s.svg" || rc=$?
  if [ $rc -gt $status ]; then status=$rc; fi
done
echo "== reports: $out/compare/*.md, *.svg"
exit $status
