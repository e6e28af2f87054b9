#!/usr/bin/env python3
"""Prints kiln/torch time ratios from a bench_train JSON file (pairs named <workload>/kiln and
<workload>/torch; with --benchmark_repetitions the medians are used)."""
import json
import sys

runs = json.load(open(sys.argv[1]))["benchmarks"]
times = {}
for r in runs:
    if r.get("run_type") == "aggregate" and r.get("aggregate_name") != "median":
        continue
    parts = r.get("run_name", r["name"]).split("/")
    lib = next((p for p in parts if p in ("kiln", "torch")), None)
    if lib is None:
        continue
    workload = "/".join(p for p in parts if p != lib)
    times[(workload, lib)] = r["real_time"]
print(f"{'workload':28} {'kiln ms':>10} {'torch ms':>10} {'kiln/torch':>11}")
for (base, lib), t in times.items():
    if lib != "kiln":
        continue
    other = times.get((base, "torch"))
    ratio = f"{t / other:11.2f}" if other else f"{'-':>11}"
    print(f"{base:28} {t:10.3f} {other if other else float('nan'):10.3f} {ratio}")
