#!/usr/bin/env python3
"""Prints bench_fusion's figures against the fusion issue's performance targets.

    python3 bench/fusion_report.py bench/fusion.json [--cold JSON --warm JSON]

--cold / --warm: the JSON lines of two `bench_fusion --compile-latency` runs sharing one empty
KILN_CACHE_DIR; they are stored in the file under "compile_latency" (so a later call without
them reports them again). Ratios come from the <workload>/paired rows (all variants alternating
in one benchmark: the steadiest figures on a shared machine); with --benchmark_repetitions the
medians are used."""
import argparse
import json
import re

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("--cold")
ap.add_argument("--warm")
args = ap.parse_args()
data = json.load(open(args.path))
if args.cold or args.warm:
    data["compile_latency"] = {"cold": json.loads(args.cold) if args.cold else None,
                               "warm_disk_cache": json.loads(args.warm) if args.warm else None}
    json.dump(data, open(args.path, "w"), indent=2)

rows = {}
for r in data.get("benchmarks", []):
    if r.get("run_type") == "aggregate" and r.get("aggregate_name") != "median":
        continue
    # names as registered: drop the /min_time:1.000 and /real_time Google Benchmark appends
    name = re.sub(r"/(min_time:[^/]*|real_time)", "", r.get("run_name", r["name"]))
    if r.get("run_type") != "aggregate" and name in rows and rows[name].get("run_type") == "aggregate":
        continue
    rows[name] = r


def counter(row, key):
    r = rows.get(row)
    return None if r is None or r.get("error_occurred") else r.get(key)


def fmt(v, unit=""):
    if v is None:
        return "-"
    return f"{v:.3g}{unit}"


lines = []


def target(what, value, bar, higher=True, unit="x"):
    ok = "" if value is None or bar is None else ("ok" if (value >= bar if higher else value <= bar) else "MISSED")
    barstr = "" if bar is None else (">= " if higher else "<= ") + f"{bar:g}{unit}"
    lines.append((what, fmt(value, unit), barstr, ok))


triad = counter("Triad_16M", "GBps")
lines.append(("STREAM triad, 16M float32 (GB/s)", fmt(triad), "", ""))
for w, label in [("Chain_16M", "chain 16M"), ("Chain_1K", "chain 1K")]:
    p = w + "/paired"
    if w == "Chain_16M":
        target(f"{label}: compiled GB/s of triad", counter(p, "of_triad_compiled"), 0.8)
    target(f"{label}: compiled speedup over eager", counter(p, "speedup_compiled"), 5)
    target(f"{label}: interpreter speedup over eager", counter(p, "speedup_interpreter"), None)
for w, label in [("SoftmaxWritten_4096x1024", "written softmax"), ("LayerNormWritten_4096x1024", "written layer_norm")]:
    p = w + "/paired"
    target(f"{label}: compiled vs built-in eager (builtin/compiled time)", counter(p, "compiled_vs_builtin"), 1)
    target(f"{label}: compiled speedup over written eager", counter(p, "speedup_compiled"), 4)
    target(f"{label}: interpreter speedup over written eager", counter(p, "speedup_interpreter"), None)
for w, label, bar in [("MLPStep_SGDMomentum_b64", "MLP step, SGD momentum, batch 64", 1.3),
                      ("MLPStep_Adam_b64", "MLP step, Adam, batch 64", 1.3),
                      ("MLPStep_Adam_b512", "MLP step, Adam, batch 512", None),
                      ("EncoderLayer_fwd_bwd", "TransformerEncoderLayer fwd+bwd", None)]:
    p = w + "/paired"
    target(f"{label}: compiled speedup", counter(p, "speedup_compiled"), bar)
    target(f"{label}: interpreter speedup", counter(p, "speedup_interpreter"), None)
lat = data.get("compile_latency") or {}
cold, warm = lat.get("cold"), lat.get("warm_disk_cache")
target("compile latency: first call, empty kernel cache", cold and cold["first_call_ms"], 300, False, " ms")
target("compile latency: first call, new process, warm disk cache", warm and warm["first_call_ms"], 30, False, " ms")
if cold:
    lines.append(("  (steady compiled step / eager step)", f"{cold['steady_call_ms']:.3g} / {cold['eager_step_ms']:.3g} ms", "", ""))

mismatch = [n for n, r in rows.items() for k, v in r.items() if k.startswith("matches") and v == 0]
w0 = max(len(l[0]) for l in lines)
print(f"\n{'figure':{w0}}  {'measured':>10}  {'target':>10}")
for what, v, bar, ok in lines:
    print(f"{what:{w0}}  {v:>10}  {bar:>10}  {ok}")
if mismatch:
    print("\nWARNING: results differ from eager in: " + ", ".join(sorted(set(mismatch))))
