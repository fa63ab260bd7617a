"""The running system on one machine: N agents as Ray actors with their level servers.

    python bench/system.py            # N in {1, 2, 4}, 60 steps per agent (~4 minutes on 2 cores)
    python bench/system.py --quick    # 20 steps per agent

Each N is a fresh run of the default config (``configs/swarm.yaml``: tiny Llama, five
levels, resonance merge, stdlib workload) on one embedded Ray, agents in teams of two
(N=1: a team of one). Reported, over the driving loop only (actor start-up excluded):
agent steps per second (all agents, and per agent), the fraction of the agents' busy
time spent in server calls (push, pull, propose) with its split, server merges per
second, and bytes pushed per agent step. Writes bench/results/system.json ("ratios"
with ``comm_overhead_fraction``: the largest over N, target <= 0.10) and system.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from rich.console import Console  # noqa: E402

from swarm.config import load_config  # noqa: E402
from swarm.ray_session import start_ray  # noqa: E402
from swarm.run.driver import Run  # noqa: E402

PACKAGES = ["json", "email", "http", "urllib"]
TARGET = {"comm_overhead_fraction": 0.10}


def topology(n: int) -> str:
    teams = {f"t{i // 2}": PACKAGES[i - i % 2 : min(i - i % 2 + 2, n)] for i in range(0, n, 2)}
    return "workload.topology={python: {" + ", ".join(f"{t}: [{', '.join(a)}]" for t, a in teams.items()) + "}}"


def measure(n: int, steps: int, tmp: Path) -> dict:
    cfg = load_config("swarm", [topology(n), f"run.steps={steps}", f"run.out_dir={tmp}", f"run.name=n{n}"])
    with Run.open(cfg, tmp / f"n{n}", Console(file=io.StringIO())) as run:
        start = time.perf_counter()
        run.drive(None)
        wall = time.perf_counter() - start
        run.poll()
    recs = list(run.snap["agents"].values())
    busy = sum(r["compute_s"] + r["comm_s"] for r in recs)
    comm = sum(r["comm_s"] for r in recs)
    kinds = {k: sum(r["comm_by_kind"].get(k, 0.0) for r in recs) / busy for k in ("push", "pull", "propose")}
    merges = sum(s["stats"]["merges"] for s in run.snap["servers"].values())
    total_steps = sum(r["step"] for r in recs)
    row = {"agents": n, "steps_per_agent": steps, "wall_s": wall, "agent_steps_per_s": total_steps / wall,
           "steps_per_s_per_agent": total_steps / wall / n, "comm_overhead_fraction": comm / busy,
           "comm_split": kinds, "server_merges_per_s": merges / wall, "merges": merges,
           "bytes_sent_per_step": sum(r["bytes_sent"] for r in recs) / total_steps,
           "pushes": sum(r["pushes"] for r in recs), "servers": len(run.servers)}
    print(f"N={n}: {row['agent_steps_per_s']:.2f} steps/s ({row['steps_per_s_per_agent']:.2f} per agent), "
          f"comm {100 * row['comm_overhead_fraction']:.2f}% of busy time, {row['server_merges_per_s']:.3f} merges/s, "
          f"{row['bytes_sent_per_step'] / 1024:.0f} KiB pushed per step", flush=True)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    steps = 20 if args.quick else 60
    started = start_ray("swarm-bench-system")
    try:
        with TemporaryDirectory() as tmp:
            rows = [measure(n, steps, Path(tmp)) for n in (1, 2, 4)]
    finally:
        if started:
            ray.shutdown()
    worst = max(r["comm_overhead_fraction"] for r in rows)
    result = {"machine": {"cpus": os.cpu_count()}, "quick": args.quick, "rows": rows,
              "ratios": {"comm_overhead_fraction": worst,
                         "steps_per_s_4_over_1": rows[2]["agent_steps_per_s"] / rows[0]["agent_steps_per_s"]},
              "targets": TARGET, "met": {"comm_overhead_fraction": worst <= TARGET["comm_overhead_fraction"]}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "system.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# System benchmark ({os.cpu_count()} CPUs, {steps} steps per agent)", "",
             "| agents | steps/s (all) | steps/s per agent | comm % of busy | push / pull / propose % | "
             "merges/s | KiB pushed per step |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        split = " / ".join(f"{100 * r['comm_split'][k]:.2f}" for k in ("push", "pull", "propose"))
        lines.append(f"| {r['agents']} | {r['agent_steps_per_s']:.2f} | {r['steps_per_s_per_agent']:.2f} | "
                     f"{100 * r['comm_overhead_fraction']:.2f} | {split} | {r['server_merges_per_s']:.3f} | "
                     f"{r['bytes_sent_per_step'] / 1024:.0f} |")
    lines += ["", f"comm_overhead_fraction (worst N) = {worst:.4f}, target <= {TARGET['comm_overhead_fraction']}: "
              + ("met" if result["met"]["comm_overhead_fraction"] else "NOT met")]
    (args.out / "system.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
