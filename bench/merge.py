"""Time per merge of K pushed updates of d float32 values: resonance vs mean, median, Krum.

    python bench/merge.py            # K in {4, 16, 64}, d in {1M, 16M} (a few minutes, ~9 GB peak)
    python bench/merge.py --quick    # K in {4, 16}, d = 1M

Every rule goes through the same ``Aggregator.aggregate`` (validation included) on the
same inputs. ``resonance`` is the merge as servers run it (fused C loops where a compiler is
at hand); ``resonance_torch`` is the same formula as torch ops (``native=False``: the fallback,
and the merge before the fused loops). A plain copy of the same K x d bytes, in the same run,
gives the machine's memory bandwidth: achieved GB/s (input bytes / time) is reported against
it. The fast rules and the copy are timed in turns (one repetition of each, then the next
round), so a change in the machine's load hits them alike; each cell is the median over the
rounds, after one warm-up. Median and Krum run once, and only up to 2^28 values (beyond, they
take minutes and K x d extra memory). Writes bench/results/merge.json (with "ratios" and
"targets") and merge.md, with the load average seen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layers.merge import make_aggregator  # noqa: E402

FAST_RULES = ("resonance", "resonance_torch", "mean")
SLOW_RULES = ("median", "krum")
RULES = FAST_RULES + SLOW_RULES
SLOW_MAX_VALUES = 2**28  # K x d above which median and Krum are skipped
TARGET = {"K": 16, "d": 16 * 2**20, "max_resonance_over_mean": 2.0, "min_resonance_over_copy_bandwidth": 0.25}


def aggregator(rule: str):
    if rule == "resonance_torch":
        from layers.merge import ResonanceAggregator

        return ResonanceAggregator(native=False)
    return make_aggregator(rule)


def timed_in_turns(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turns (round r times every function once)."""
    for fn in fns.values():
        fn()  # warm-up: buffers, page faults of first use, the kernel build
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure_cell(k: int, d: int, gen: torch.Generator, reps: int = 5) -> dict:
    """One (K, d) cell: every rule and a plain copy, on the same inputs."""
    xs = [torch.randn(d, generator=gen) for _ in range(k)]
    nbytes = k * d * 4
    dst = [torch.empty(d) for _ in range(k)]
    fns = {"copy": lambda: [o.copy_(x) for o, x in zip(dst, xs, strict=True)]}
    aggs = {rule: aggregator(rule) for rule in FAST_RULES}
    fns.update({rule: (lambda a=agg: a.aggregate(xs)) for rule, agg in aggs.items()})
    secs = timed_in_turns(fns, reps)
    dst.clear()
    if k * d <= SLOW_MAX_VALUES:
        for rule in SLOW_RULES:
            agg = aggregator(rule)
            secs[rule] = timed_in_turns({rule: lambda a=agg: a.aggregate(xs)}, 1)[rule]
    row = {"K": k, "d": d, "bytes": nbytes, "copy_s": secs["copy"], "copy_gbps": nbytes / secs["copy"] / 1e9}
    for rule in RULES:
        row[f"{rule}_s"] = secs.get(rule)
        row[f"{rule}_gbps"] = nbytes / secs[rule] / 1e9 if rule in secs else None
    row["resonance_over_mean"] = row["resonance_s"] / row["mean_s"]
    row["resonance_gbps_over_copy"] = row["resonance_gbps"] / row["copy_gbps"]
    row["resonance_torch_over_mean"] = row["resonance_torch_s"] / row["mean_s"]
    row["resonance_torch_gbps_over_copy"] = row["resonance_torch_gbps"] / row["copy_gbps"]
    row["load_avg_1m"] = os.getloadavg()[0]
    print(f"K={k:3d} d={d / 2**20:4.0f}M: " + ", ".join(f"{r} {secs[r] * 1e3:8.1f} ms" for r in RULES if r in secs)
          + f", copy {secs['copy'] * 1e3:.1f} ms, resonance/mean {row['resonance_over_mean']:.2f}, "
          f"resonance/copy bandwidth {row['resonance_gbps_over_copy']:.3f}, load {row['load_avg_1m']:.1f}", flush=True)
    return row


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    ks, ds = ((4, 16), (2**20,)) if args.quick else ((4, 16, 64), (2**20, 16 * 2**20))
    load_start = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(0)
    cells = [measure_cell(k, d, gen) for d in ds for k in ks]
    return write(cells, args, load_start)


def write(cells: list[dict], args, load_start: float) -> dict:
    """merge.json and merge.md from the measured cells."""
    ratios = {f"K{c['K']}_d{c['d'] // 2**20}M": {"resonance_over_mean": c["resonance_over_mean"],
                                                   "resonance_gbps_over_copy_gbps": c["resonance_gbps_over_copy"],
                                                   "resonance_torch_over_mean": c["resonance_torch_over_mean"],
                                                   "resonance_torch_gbps_over_copy_gbps":
                                                       c["resonance_torch_gbps_over_copy"]}
              for c in cells}
    cell = next((c for c in cells if c["K"] == TARGET["K"] and c["d"] == TARGET["d"]), None)
    if cell is not None:  # the targets, at K=16, d=16M
        ratios["resonance_over_copy_bandwidth_k16_d16m"] = cell["resonance_gbps_over_copy"]
        ratios["resonance_over_mean_k16_d16m"] = cell["resonance_over_mean"]
    over_mean = None if cell is None else cell["resonance_over_mean"]
    over_copy = None if cell is None else cell["resonance_gbps_over_copy"]
    targets = {
        "resonance_over_mean_at_K16_d16M": {"max": TARGET["max_resonance_over_mean"], "measured": over_mean,
                                            "met": None if cell is None
                                            else over_mean <= TARGET["max_resonance_over_mean"]},
        "resonance_over_copy_bandwidth_at_K16_d16M": {"min": TARGET["min_resonance_over_copy_bandwidth"],
                                                      "measured": over_copy, "met": None if cell is None else
                                                      over_copy >= TARGET["min_resonance_over_copy_bandwidth"]},
    }
    loads = [c["load_avg_1m"] for c in cells]
    result = {"setup": {"threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": "float32",
                        "quick": args.quick, "cpus": os.cpu_count(), "load_avg_1m": [min(loads), max(loads)]},
              "ratios": ratios, "targets": targets, "cells": cells}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merge.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# merge: time per merge, float32, {torch.get_num_threads()} threads, torch {torch.__version__}", "",
             f"{os.cpu_count()} CPUs, load average {min(loads):.1f}-{max(loads):.1f} during the run (at start "
             f"{load_start:.1f}): the machine is shared, so compare within a row (the rules and the copy are timed "
             "in turns), not with other runs.", "",
             "| K | d | resonance (ms) | resonance_torch (ms) | mean (ms) | median (ms) | krum (ms) | copy (ms) "
             "| resonance / mean | resonance_torch / mean | resonance GB/s | copy GB/s | resonance / copy GB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c['K']} | {c['d'] // 2**20}M | {ms(c['resonance_s'])} | {ms(c['resonance_torch_s'])} | "
                     f"{ms(c['mean_s'])} | {ms(c['median_s'])} | {ms(c['krum_s'])} | {ms(c['copy_s'])} | "
                     f"{c['resonance_over_mean']:.2f} | {c['resonance_torch_over_mean']:.2f} | "
                     f"{c['resonance_gbps']:.2f} | {c['copy_gbps']:.2f} | {c['resonance_gbps_over_copy']:.3f} |")
    for name, t in targets.items():
        if t["measured"] is not None:
            bound = f"<= {t['max']}" if "max" in t else f">= {t['min']}"
            lines += ["", f"target {name}: {bound}, measured {t['measured']:.3f} ({'met' if t['met'] else 'NOT met'})"]
    (args.out / "merge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
