#!/usr/bin/env python3
"""Markdown tables of a scripts/bench.sh run: per suite, each benchmark's median time and its
ratio/ceiling counters (speedups, kiln vs LibTorch, % of the triad or sgemm ceiling).

    python3 bench/summary.py OUT_DIR [suite ...]     # OUT_DIR as given to scripts/bench.sh
"""
import json
import os
import sys



def is_ratio(key):
    return key.startswith(("speedup", "of_")) or "_over_" in key or "_vs_" in key


def fmt_time(t, unit):
    return f"{t:.3g} {unit}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    suites = sys.argv[2:] or ["eager", "jit", "fusion", "train"]
    for suite in suites:
        path = os.path.join(out, suite + ".json")
        if not os.path.exists(path):
            continue
        data = json.load(open(path))
        ctx = data.get("context", {})
        ceil = ", ".join(f"{k} {float(ctx[k]):.1f}" for k in ("triad_GBps", "sgemm_GFLOPs") if k in ctx)
        print(f"### {suite} ({ceil})\n")
        print("| benchmark | median | ratios and ceilings (medians) |")
        print("| --- | --- | --- |")
        rows = [b for b in data["benchmarks"] if b.get("aggregate_name") == "median"]
        for b in sorted(rows, key=lambda r: r["run_name"]):
            name = b["run_name"]
            counters = []
            for k in sorted(key for key in b if is_ratio(key) and isinstance(b[key], (int, float))):
                if True:
                    v = float(b[k])
                    counters.append(f"{k} {v:.1%}" if k.startswith("of_") else f"{k} {v:.2f}")
            print(f"| {name} | {fmt_time(float(b['real_time']), b.get('time_unit', 'ns'))} | {', '.join(counters)} |")
        print()


if __name__ == "__main__":
    main()
