#!/usr/bin/env python3
"""Prints time ratios of benchmark pairs from a Google Benchmark JSON file (with
--benchmark_repetitions the medians are used).

    python3 bench/ratio.py bench/train.json                   # pairs <workload>/kiln, <workload>/torch
    python3 bench/ratio.py bench/jit.json eager compiled      # pairs <workload>/eager, <workload>/compiled

With the pair eager/compiled, a `paired` column adds the speedup that bench_jit's <workload>/paired
benchmark measured with eager and compiled calls alternating in blocks (steadiest on a busy machine).

The ratios printed are first/second (kiln/torch; eager/compiled, i.e. the compiled speedup), of
wall-clock time and of the main thread's CPU time (steadier on a busy machine for single-threaded
work; it misses the time of other threads)."""
import json
import sys

path = sys.argv[1]
first, second = (sys.argv[2], sys.argv[3]) if len(sys.argv) >= 4 else ("kiln", "torch")
runs = json.load(open(path))["benchmarks"]
times, cpu, units, paired = {}, {}, {}, {}
for r in runs:
    if r.get("run_type") == "aggregate" and r.get("aggregate_name") != "median":
        continue
    if r.get("error_occurred"):
        continue
    parts = r.get("run_name", r["name"]).split("/")
    if "paired" in parts and "speedup" in r:
        paired["/".join(p for p in parts if p != "paired")] = r["speedup"]
    lib = next((p for p in parts if p in (first, second)), None)
    if lib is None:
        continue
    workload = "/".join(p for p in parts if p != lib)
    times[(workload, lib)] = r["real_time"]
    cpu[(workload, lib)] = r["cpu_time"]
    units[workload] = r.get("time_unit", "ns")
h1, h2 = f"{first} time", f"{second} time"
extra = f" {'paired':>7}" if paired else ""
print(f"{'workload':28} {h1:>14} {h2:>14} {first + '/' + second:>18} {'(cpu time)':>11}{extra}")
for (base, lib), t in times.items():
    if lib != first:
        continue
    other = times.get((base, second))
    ratio = f"{t / other:18.2f}" if other else f"{'-':>18}"
    cpu_ratio = f"{cpu[(base, first)] / cpu[(base, second)]:11.2f}" if other else f"{'-':>11}"
    unit = units[base]
    a = f"{t:.3f} {unit}"
    b = f"{other:.3f} {unit}" if other else "-"
    p = paired.get(base)
    extra = (f" {p:7.2f}" if p else f" {'-':>7}") if paired else ""
    print(f"{base:28} {a:>14} {b:>14} {ratio} {cpu_ratio}{extra}")
