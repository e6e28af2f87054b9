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
    name = r.get("run_name", r["name"])
    times[name] = r["real_time"]
print(f"{'workload':28} {'kiln ms':>10} {'torch ms':>10} {'kiln/torch':>11}")
for name, t in times.items():
    if not name.endswith("/kiln"):
        continue
    base = name[: -len("/kiln")]
    other = times.get(base + "/torch")
    ratio = f"{t / other:11.2f}" if other else f"{'-':>11}"
    print(f"{base:28} {t:10.3f} {other if other else float('nan'):10.3f} {ratio}")
