"""Circuit tracking of the context level every step versus every N steps, on a real stream.

    python bench/tracker_cadence.py                 # 200 steps of one code-workload agent, N in {1, 2, 3, 4, 5}
    python bench/tracker_cadence.py --steps 100

One agent of ``experiment/code`` (the cached pretrained base when one exists, else micro_llama)
learns for ``--steps`` steps as ``swarm run`` would (tracking every step); after every step the
context level's B of every module is recorded. The recording is then replayed into fresh
trackers per context, updated every N steps (``CircuitTracker.update(blocks, steps=N)``: each
sample stands for the N steps since the last, so timescales, ages and misses keep counting steps)
and once more at the context's end, as the agent does before promoting. Within a context the
stream does not depend on the tracker (promotion happens at the boundary, then the level
resets), so the replay at N = 1 is exactly what the run promoted, and N > 1 is compared with it:
the candidates at each boundary (matched by direction, ``|u.u'| |w.w'| >= match_threshold``)
and the ones the promoter would take (the bucket's ``tokens_per_window`` best, plus bypasses).
Also reported: milliseconds per step of the context tracker at each N (the replay's update time
over the steps) and of all tracking in the real run. Writes bench/results/tracker_cadence.json
(``ratios``) and tracker_cadence.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CADENCES = (1, 2, 3, 4, 5)


def record(steps: int) -> tuple[list[list[dict[str, torch.Tensor]]], dict, str]:
    """Run one agent; the context level's blocks after each step, grouped by context."""
    from agents import Agent, agent_specs
    from swarm.config import load_config

    bases = sorted(p for p in (ROOT / "runs" / "base").glob("*") if (p / "config.json").exists())
    model = f"model.name_or_path={bases[0]}" if bases else "model=micro_llama"
    cfg = load_config("experiment/code", [model, "circuits.context_track_every=1"])
    agent = Agent(agent_specs(cfg.workload)[0], model=cfg.model, levels=cfg.levels, workload=cfg.workload,
                  agent=cfg.agent, dynamics=cfg.dynamics, circuits=cfg.circuits)
    contexts: list[list[dict[str, torch.Tensor]]] = []
    start = time.perf_counter()
    for _ in range(steps):
        rec = agent.step()
        if rec["boundary"] or not contexts:
            contexts.append([])
        contexts[-1].append({n: b.clone() for n, b in agent._blocks(agent.fast).items()})
    wall = time.perf_counter() - start
    real = {"steps": steps, "wall_s": wall, "ms_per_step": 1000 * wall / steps,
            "tracking_ms_per_step": 1000 * agent.phase_s["trackers"] / steps,
            "promoted": agent.promoter.counters["promoted"] + agent.promoter.counters["bypassed"],
            "modules": len(contexts[0][0]), "rank": cfg.levels.rank}
    return contexts, real, model


def replay(contexts, every: int, config) -> tuple[list[list], float]:
    """Per context: the candidates at its end (tracked every ``every`` steps, refreshed at the end)."""
    from layers.circuits import CircuitTracker

    out, seconds = [], 0.0
    for blocks in contexts:
        tracker, last = CircuitTracker(config), 0
        for i, b in enumerate(blocks, start=1):
            if i % every == 0 or i == len(blocks):
                t0 = time.perf_counter()
                tracker.update(b, steps=i - last)
                seconds += time.perf_counter() - t0
                last = i
        out.append(tracker.candidates())
    return out, seconds


def promoted(candidates: list, config) -> list:
    """What the promoter takes of ``candidates`` with a full bucket: the best ``tokens_per_window``, plus bypasses."""
    return [c for i, c in enumerate(candidates) if i < config.tokens_per_window or c.score >= config.bypass_threshold]


def matches(a: list, b: list, threshold: float) -> int:
    """How many of ``a`` have a circuit of ``b`` in the same module along the same direction."""
    return sum(any(x.module == y.module and abs(float(x.u @ y.u)) * abs(float(x.w @ y.w)) >= threshold for y in b)
               for x in a)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    from layers.circuits import CircuitsConfig

    torch.set_num_threads(1)  # as an agent actor of one CPU
    torch.manual_seed(0)
    contexts, real, model = record(args.steps)
    contexts = [c for c in contexts if len(c) > 1]
    config = CircuitsConfig()
    base, base_s = replay(contexts, 1, config)
    rows = []
    for n in CADENCES:
        cands, seconds = (base, base_s) if n == 1 else replay(contexts, n, config)
        found = sum(len(c) for c in cands)
        want = sum(len(c) for c in base)
        took = [promoted(c, config) for c in cands]
        took_base = [promoted(c, config) for c in base]
        rows.append({
            "every": n, "tracker_ms_per_step": 1000 * seconds / sum(len(c) for c in contexts),
            "candidates": found, "candidates_at_1": want,
            "recall": sum(matches(b, c, config.match_threshold) for b, c in zip(base, cands, strict=True))
            / max(want, 1),
            "precision": sum(matches(c, b, config.match_threshold) for b, c in zip(base, cands, strict=True))
            / max(found, 1),
            "promoted": sum(len(t) for t in took), "promoted_at_1": sum(len(t) for t in took_base),
            "promoted_recall": sum(matches(b, t, config.match_threshold) for b, t in zip(took_base, took, strict=True))
            / max(sum(len(t) for t in took_base), 1),
        })
        r = rows[-1]
        print(f"every {n}: {r['tracker_ms_per_step']:.2f} ms/step, candidates {found} (at 1: {want}), recall "
              f"{r['recall']:.2f}, precision {r['precision']:.2f}, promoted recall {r['promoted_recall']:.2f}",
              flush=True)
    at = {r["every"]: r for r in rows}
    ratios = {f"cost_every_{n}_over_every_1": at[n]["tracker_ms_per_step"] / at[1]["tracker_ms_per_step"]
              for n in CADENCES if n > 1}
    ratios.update({f"promoted_recall_every_{n}": at[n]["promoted_recall"] for n in CADENCES if n > 1})
    load = os.getloadavg()[0]
    result = {"model": model, "contexts": len(contexts), "real_run": real, "rows": rows, "ratios": ratios,
              "load_avg_1m": load, "threads": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracker_cadence.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Context-level circuit tracking every N steps ({len(contexts)} contexts of a real code-workload "
             f"stream, {real['modules']} modules, rank {real['rank']}, one thread, load average {load:.1f})", "",
             f"Model `{model}`. Real run: {real['ms_per_step']:.0f} ms per step, of which tracking (context every "
             f"step, agent level every 5) {real['tracking_ms_per_step']:.1f} ms; {real['promoted']} promotions.", "",
             "| every N steps | context tracker (ms/step) | candidates at boundaries | recall vs N=1 | precision "
             "| promoted | promoted recall vs N=1 |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['every']} | {r['tracker_ms_per_step']:.2f} | {r['candidates']} | {r['recall']:.2f} | "
                     f"{r['precision']:.2f} | {r['promoted']} | {r['promoted_recall']:.2f} |")
    (args.out / "tracker_cadence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
