"""Automatic growth on a workload built to saturate the rank: a swarm at rank 2, with and without growth.

Two agents of one team learn the synthetic workload (in-process level servers, no Ray, same seeds). In
the ``auto`` arm every level server may grow the swarm's rank (``levels.grow_after`` merges in a row with
``growth_needed``, by ``levels.grow_step`` rows, up to ``levels.max_rank``); the ``fixed`` arm keeps rank
2. Reports held-out bits per byte of each agent at the end, the growths that fired (when, where) and the
final rank, side by side. Writes bench/results/auto_growth.json (``ratios``) and .md.

    python bench/auto_growth.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agents.agent import Agent  # noqa: E402
from agents.config import ModelConfig, WorkloadConfig  # noqa: E402
from agents.topology import agent_specs  # noqa: E402
from cluster.config import RuntimeConfig, ServerConfig  # noqa: E402
from cluster.level.core import LevelCore  # noqa: E402
from cluster.topology import Topology  # noqa: E402
from cluster.worker import AgentWorker  # noqa: E402
from layers import LevelsConfig  # noqa: E402
from layers.dynamics import DynamicsConfig  # noqa: E402
from layers.dynamics.config import SyncConfig, TemperatureConfig  # noqa: E402

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"]}}, steps_per_context=16,
                          batch_size=4, seq_len=32, eval_windows=8)
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
# a level's blocks crystallise once most of their entries get little of the drive; at rank 2 with one team
# pushing the same stream, that is soon (freeze 0.5: an entry driven at under half the level's RMS cools)
DYN = DynamicsConfig(sync=SyncConfig(max_interval=2), temperature=TemperatureConfig(freeze=0.5, heat=0.3))
RUNTIME = RuntimeConfig(pull_every=2, propose_every=1000, eval_every=1000, checkpoint_every=1000)
ARMS = {"fixed": LevelsConfig(rank=2), "auto": LevelsConfig(rank=2, max_rank=14, grow_after=3, grow_step=4)}


def run_arm(levels: LevelsConfig, steps: int) -> dict:
    torch.manual_seed(0)
    topo = Topology(WORKLOAD, levels.names[2:])
    specs = agent_specs(WORKLOAD)
    agents = [Agent(s, model=MODEL, levels=levels, workload=WORKLOAD, dynamics=DYN) for s in specs]
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in agents[0].stack.modules.items()}
    servers = {s.name: LevelCore(s.name, shapes, server=ServerConfig(window=2), dynamics=DYN, parent=s.parent,
                                 children=s.children, growth=levels) for s in topo.servers}
    workers = [AgentWorker(a, {lvl: servers[n] for lvl, n in topo.route(a.spec.id).items()}, RUNTIME)
               for a in agents]
    start = sum(w.last_eval for w in workers) / len(workers)
    t0 = time.perf_counter()
    for _ in range(steps // 2):
        for w in workers:
            w.run(2)
    bpb = [w.agent.evaluate() for w in workers]
    growths = [{"server": name, "version": v, "from": e.from_rank, "to": e.to_rank, "source": e.source}
               for name, core in servers.items() for v, e in core.growths if e.source.startswith(name)]
    return {"bpb_start": start, "bpb_end": sum(bpb) / len(bpb), "bpb_per_agent": bpb,
            "rank_end": {n: c.rank for n, c in servers.items()}, "agent_rank_end": workers[0].agent.stack.rank,
            "growths_fired": growths, "crystallised_fraction_end": {n: c.optimizer.crystallised_fraction()
                                                                    for n, c in servers.items()},
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    out = {"steps": args.steps, "arms": {name: run_arm(levels, args.steps) for name, levels in ARMS.items()}}
    fixed, auto = out["arms"]["fixed"], out["arms"]["auto"]
    out["ratios"] = {"bpb_auto_over_fixed": auto["bpb_end"] / fixed["bpb_end"],
                     "gain_auto_over_fixed": (auto["bpb_start"] - auto["bpb_end"])
                     / max(fixed["bpb_start"] - fixed["bpb_end"], 1e-9)}
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "auto_growth.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Automatic growth at rank 2 ({args.steps} steps per agent, 2 agents, synthetic workload)", "",
             "| arm | bits/byte start | bits/byte end | final rank | growths fired |", "|---|---|---|---|---|"]
    for name, arm in out["arms"].items():
        fired = ", ".join(f"{g['server']} {g['from']}->{g['to']}" for g in arm["growths_fired"]) or "-"
        lines.append(f"| {name} | {arm['bpb_start']:.4f} | {arm['bpb_end']:.4f} | {arm['agent_rank_end']} | {fired} |")
    lines += ["", f"bits/byte auto / fixed: {out['ratios']['bpb_auto_over_fixed']:.4f}"]
    (results / "auto_growth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
