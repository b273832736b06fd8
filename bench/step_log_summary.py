#!/usr/bin/env python3
"""Summarizes a KILN_STEP_LOG file: where the engine's wall time went, per step kind.

usage: step_log_summary.py STEP_LOG [STEP_LOG ...]

Kinds: "decode" (every scheduled sequence decodes one token), "mixed" (decodes and prompt chunks), "prefill"
(prompt chunks only). For each kind: steps, tokens, and the summed milliseconds of the loop's phases
(loop: admission and responses before the step; schedule: scheduling and packing; forward: the model call;
post: the tokens' bookkeeping) and of the GPU time the model measured inside the forward call.
"""
import sys


def summarize(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    if not rows:
        print(f"{path}: no steps")
        return
    kinds = {}
    for r in rows:
        seqs, dec = int(r["seqs"]), int(r["decodes"])
        kind = "decode" if dec == seqs else ("prefill" if dec == 0 else "mixed")
        k = kinds.setdefault(kind, {"steps": 0, "tokens": 0, "loop": 0.0, "schedule": 0.0, "forward": 0.0,
                                    "post": 0.0, "gpu": 0.0})
        k["steps"] += 1
        k["tokens"] += int(r["tokens"])
        for key in ("loop", "schedule", "forward", "post"):
            k[key] += float(r[key + "_ms"])
        k["gpu"] += max(float(r["gpu_ms"]), 0.0)
    last = rows[-1]
    wall = float(last["t_ms"]) + float(last["schedule_ms"]) + float(last["forward_ms"]) + float(last["post_ms"])
    print(f"{path}: {len(rows)} steps over {wall / 1000:.2f} s")
    print(f"  {'kind':8} {'steps':>6} {'tokens':>9} {'loop s':>8} {'sched s':>8} {'fwd s':>8} {'gpu s':>8} "
          f"{'post s':>8} {'host/step ms':>12}")
    for kind, k in sorted(kinds.items()):
        host = k["loop"] + k["schedule"] + (k["forward"] - k["gpu"]) + k["post"]
        print(f"  {kind:8} {k['steps']:6d} {k['tokens']:9d} {k['loop'] / 1000:8.3f} {k['schedule'] / 1000:8.3f} "
              f"{k['forward'] / 1000:8.3f} {k['gpu'] / 1000:8.3f} {k['post'] / 1000:8.3f} "
              f"{host / k['steps']:12.3f}")


for p in sys.argv[1:]:
    summarize(p)
