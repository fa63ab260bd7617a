"""Time per merge of K pushed updates of d float32 values: resonance vs mean, median, Krum.

    python bench/merge.py            # K in {4, 16, 64}, d in {1M, 16M} (a few minutes, ~13 GB peak)
    python bench/merge.py --quick    # K in {4, 16}, d = 1M

Every rule goes through the same ``Aggregator.aggregate`` (validation included) on the
same inputs. A plain copy of the same K x d bytes, in the same run, gives the machine's
memory bandwidth: achieved GB/s (input bytes / time) is reported against it. Each cell is
the median of several repetitions after one warm-up. Writes bench/results/merge.json
(with "ratios" and "targets") and merge.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layers.merge import make_aggregator  # noqa: E402

RULES = ("resonance", "mean", "median", "krum")
TARGET = {"K": 16, "d": 16 * 2**20, "max_resonance_over_mean": 3.0}


def timed(fn, reps: int) -> float:
    fn()  # warm-up: buffers, page faults of first use
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_cell(k: int, d: int, gen: torch.Generator) -> dict:
    """One (K, d) cell: every rule and a plain copy, on the same inputs."""
    xs = [torch.randn(d, generator=gen) for _ in range(k)]
    nbytes = k * d * 4
    reps = 5
    dst = [torch.empty(d) for _ in range(k)]
    copy_s = timed(lambda: [o.copy_(x) for o, x in zip(dst, xs, strict=True)], reps)
    dst.clear()
    row = {"K": k, "d": d, "bytes": nbytes, "copy_s": copy_s, "copy_gbps": nbytes / copy_s / 1e9}
    for rule in RULES:
        agg = make_aggregator(rule)
        row[f"{rule}_s"] = timed(lambda a=agg: a.aggregate(xs), reps if rule in ("resonance", "mean") else 1)
        row[f"{rule}_gbps"] = nbytes / row[f"{rule}_s"] / 1e9
    row["resonance_over_mean"] = row["resonance_s"] / row["mean_s"]
    row["resonance_gbps_over_copy"] = row["resonance_gbps"] / row["copy_gbps"]
    print(f"K={k:3d} d={d / 2**20:4.0f}M: " + ", ".join(f"{r} {row[f'{r}_s'] * 1e3:8.1f} ms" for r in RULES)
          + f", copy {copy_s * 1e3:.1f} ms, resonance/mean {row['resonance_over_mean']:.2f}", flush=True)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    ks, ds = ((4, 16), (2**20,)) if args.quick else ((4, 16, 64), (2**20, 16 * 2**20))
    gen = torch.Generator().manual_seed(0)
    cells = [measure_cell(k, d, gen) for d in ds for k in ks]
    ratios = {f"K{c['K']}_d{c['d'] // 2**20}M": {"resonance_over_mean": c["resonance_over_mean"],
                                                   "resonance_gbps_over_copy_gbps": c["resonance_gbps_over_copy"]}
              for c in cells}
    target_cell = next((c for c in cells if c["K"] == TARGET["K"] and c["d"] == TARGET["d"]), None)
    targets = {"resonance_over_mean_at_K16_d16M": {
        "max": TARGET["max_resonance_over_mean"],
        "measured": None if target_cell is None else target_cell["resonance_over_mean"],
        "met": None if target_cell is None else target_cell["resonance_over_mean"] <= TARGET["max_resonance_over_mean"],
    }}
    result = {"setup": {"threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": "float32",
                        "quick": args.quick}, "ratios": ratios, "targets": targets, "cells": cells}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merge.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# merge: time per merge, float32, {torch.get_num_threads()} threads, torch {torch.__version__}", "",
             "| K | d | resonance (ms) | mean (ms) | median (ms) | krum (ms) | copy (ms) | resonance / mean "
             "| resonance GB/s | copy GB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c['K']} | {c['d'] // 2**20}M | {c['resonance_s'] * 1e3:.1f} | {c['mean_s'] * 1e3:.1f} | "
                     f"{c['median_s'] * 1e3:.1f} | {c['krum_s'] * 1e3:.1f} | {c['copy_s'] * 1e3:.1f} | "
                     f"{c['resonance_over_mean']:.2f} | {c['resonance_gbps']:.1f} | {c['copy_gbps']:.1f} |")
    t = targets["resonance_over_mean_at_K16_d16M"]
    if t["measured"] is not None:
        lines += ["", f"target: resonance / mean <= {t['max']} at K=16, d=16M: measured {t['measured']:.2f} "
                  f"({'met' if t['met'] else 'NOT met'})"]
    (args.out / "merge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
