"""Agent hosts: K agents on ONE frozen base (``cluster.host.AgentHost``) versus K separate agents.

    python bench/hosts.py                 # host K in {1, 4, 8, 16, 32}, separate K in {1, 4, 8}
    python bench/hosts.py --steps 8       # more timed rounds per point (default 3, after 1 warm-up)

Each point runs in fresh processes: the in-process swarm of the experiments
(:class:`swarm.experiment.sim.Simulation`, arm ``full``: five levels, team, domain and foundation
servers, pushes, pulls, proposals) on the same model and batch. ``host``: one process holds the K
agents of one team and steps them with one forward and backward per round (``experiment.host``).
``separate``: K processes, each one agent with its own model and servers (a team of one), stepped
side by side from a common start, one torch thread each (as Ray gives an actor of one CPU; the host
process gets one thread too); only
while they fit (``--max-separate``, 8 by default). The model is the cached pretrained base
(``runs/base/<key>``, ``swarm pretrain-base``) when one exists, else ``micro_llama``.

Reported per point: agent steps per second (all agents), resident memory (psutil RSS: the host
process; the sum over the separate processes), and where a step's time goes (per agent step:
batch and promotion, base forward, backward, the per-agent finish split into optimizers, sync
gate and circuit trackers, and the worker's exchanges). Writes bench/results/hosts.json
(``ratios``: ``memory_ratio_k8`` = host RSS / separate RSS at K=8, ``steps_ratio_k8`` = host
steps/s / separate steps/s at K=8) and hosts.md. On a CUDA machine the same script runs the agents
on the GPU (``agent.device=cuda``) and the separate arm shares that GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST_K = (1, 4, 8, 16, 32)
TARGET = {"memory_ratio_k8": 0.30, "steps_ratio_k8": 1.5}
PARTS = ("begin", "forward", "backward", "optimizers", "gate", "trackers", "exchange")


def base_overrides(device: str) -> list[str]:
    """The model (cached pretrained base, else micro_llama), the batch and the run's cadence."""
    bases = sorted(p for p in (ROOT / "runs" / "base").glob("*") if (p / "config.json").exists())
    model = [f"model.name_or_path={bases[0]}"] if bases else ["model=micro_llama"]
    return [*model, "workload=synthetic", "workload.batch_size=4", "workload.seq_len=64",
            "workload.eval_windows=2", "run.eval_every=1000000", "run.checkpoint_every=1000000",
            f"agent.device={device}"]


def simulation(k: int, host: bool, device: str, name: str = "a"):
    from swarm.config import load_config
    from swarm.config.arms import ARMS
    from swarm.experiment.sim import Simulation

    topology = "workload.topology={toy: {t0: [" + ", ".join(f"{name}{i}" for i in range(k)) + "]}}"
    cfg = load_config("experiment/ci", [*base_overrides(device), topology, f"experiment.host={str(host).lower()}"])
    return Simulation(cfg, ARMS["full"])


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _parts(sim, rounds_before: dict) -> dict[str, float]:
    """Seconds per part, summed over agents, since ``rounds_before`` (a snapshot of the same sums)."""
    now = _sums(sim)
    return {p: now[p] - rounds_before.get(p, 0.0) for p in now}


def _sums(sim) -> dict[str, float]:
    agents = [w.agent for w in sim.workers.values()]
    out = {p: sum(a.phase_s[p] for a in agents) for p in ("optimizers", "gate", "trackers")}
    if sim.host is not None:
        out.update({p: sim.host.phase_s[p] for p in ("begin", "forward", "backward", "exchange")})
    else:  # a solo agent: compute minus its finish is batch + forward + backward; exchange is server calls
        compute = sum(w.compute_s for w in sim.workers.values())
        out["forward_backward"] = compute - sum(out.values())
        out["exchange"] = sum(w.comm_s for w in sim.workers.values())
    return out


def host_point(k: int, steps: int, device: str, queue) -> None:
    import torch

    # one thread, like each separate agent: on a shared CPU the per-agent path's small ops (the
    # trackers' SVDs) slow down many times with two OpenMP threads (docs/agents.md, "Agent hosts")
    torch.set_num_threads(1)
    sim = simulation(k, True, device)
    sim.step()  # warm-up round (first-call allocations)
    before = _sums(sim)
    start = time.perf_counter()
    for _ in range(steps):
        sim.step()
    wall = time.perf_counter() - start
    queue.put({"wall_s": wall, "rss": _rss(), "parts": _parts(sim, before)})


def separate_agent(i: int, steps: int, device: str, barrier, queue) -> None:
    import torch

    torch.set_num_threads(1)  # one CPU per agent actor, as Ray sets OMP_NUM_THREADS for num_cpus=1
    sim = simulation(1, False, device, name=f"s{i}x")
    sim.step()
    before = _sums(sim)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        sim.step()
    queue.put({"wall_s": time.perf_counter() - start, "rss": _rss(), "parts": _parts(sim, before)})


def run_host(k: int, steps: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=host_point, args=(k, steps, device, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return row("host", k, steps, out["wall_s"], out["rss"], out["parts"])


def run_separate(k: int, steps: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(k + 1)
    procs = [ctx.Process(target=separate_agent, args=(i, steps, device, barrier, queue)) for i in range(k)]
    for p in procs:
        p.start()
    barrier.wait()  # every agent built and warm: the timed steps start together
    start = time.perf_counter()
    outs = [queue.get() for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    parts: dict[str, float] = {}
    for o in outs:
        for p, s in o["parts"].items():
            parts[p] = parts.get(p, 0.0) + s
    return row("separate", k, steps, wall, sum(o["rss"] for o in outs), parts)


def row(arm: str, k: int, steps: int, wall: float, rss: int, parts: dict[str, float]) -> dict:
    n = k * steps
    out = {"arm": arm, "agents": k, "rounds": steps, "wall_s": wall, "agent_steps_per_s": n / wall,
           "rss_mb": rss / 2**20, "rss_mb_per_agent": rss / 2**20 / k,
           "ms_per_agent_step": {p: 1000 * s / n for p, s in parts.items()}}
    split = ", ".join(f"{p} {v:.1f}" for p, v in out["ms_per_agent_step"].items())
    print(f"{arm} K={k}: {out['agent_steps_per_s']:.2f} agent steps/s, {out['rss_mb']:.0f} MB RSS; "
          f"ms per agent step: {split}", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed rounds per point (after one warm-up)")
    parser.add_argument("--max-separate", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[dict] = []
    # K=8 first: the ratios are known early; the files are rewritten after every point
    for k in sorted(HOST_K, key=lambda k: (k != 8, k)):
        rows.append(run_host(k, args.steps, device))
        write(rows, args, device)
        if k <= args.max_separate:
            rows.append(run_separate(k, args.steps, device))
            write(rows, args, device)
    return write(rows, args, device)


def write(rows: list[dict], args, device: str) -> dict:
    """hosts.json and hosts.md from the points measured so far (ratios once both K=8 points are in)."""
    import torch

    rows = sorted(rows, key=lambda r: (r["agents"], r["arm"]))
    at = {(r["arm"], r["agents"]): r for r in rows}
    ratios, met = {}, {}
    if ("host", 8) in at and ("separate", 8) in at:
        ratios = {"memory_ratio_k8": at["host", 8]["rss_mb"] / at["separate", 8]["rss_mb"],
                  "steps_ratio_k8": at["host", 8]["agent_steps_per_s"] / at["separate", 8]["agent_steps_per_s"]}
        met = {"memory_ratio_k8": ratios["memory_ratio_k8"] <= TARGET["memory_ratio_k8"],
               "steps_ratio_k8": ratios["steps_ratio_k8"] >= TARGET["steps_ratio_k8"]}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"machine": {"cpus": os.cpu_count(), "device": device, "torch": torch.__version__,
                          "python": platform.python_version(), "load_avg_1m_at_write": load},
              "model": base_overrides(device)[0], "batch": "4 x 64 tokens per agent", "rounds": args.steps,
              "rows": rows, "ratios": ratios, "targets": TARGET, "met": met}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hosts.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Agent hosts vs separate agents ({os.cpu_count()} CPUs, {device}, {args.steps} timed rounds per "
             f"point, load average {load:.1f} at the last write)", "",
             f"Model `{result['model']}`, {result['batch']}, arm `full` (five levels, servers in process).", "",
             "| arm | K | agent steps/s | RSS (MB) | RSS per agent (MB) | ms per agent step: "
             + " / ".join(PARTS) + " |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ms = r["ms_per_agent_step"]
        if r["arm"] == "separate":  # batch, forward and backward are one figure there
            split = f"fwd+bwd {ms.get('forward_backward', 0):.1f} / " + " / ".join(
                f"{ms.get(p, 0):.1f}" for p in PARTS[3:])
        else:
            split = " / ".join(f"{ms.get(p, 0):.1f}" for p in PARTS)
        lines.append(f"| {r['arm']} | {r['agents']} | {r['agent_steps_per_s']:.2f} | {r['rss_mb']:.0f} | "
                     f"{r['rss_mb_per_agent']:.0f} | {split} |")
    if ratios:
        lines += ["", f"memory_ratio_k8 = {ratios['memory_ratio_k8']:.3f} (target <= {TARGET['memory_ratio_k8']}: "
                  f"{'met' if met['memory_ratio_k8'] else 'NOT met'}); steps_ratio_k8 = "
                  f"{ratios['steps_ratio_k8']:.2f} (target >= {TARGET['steps_ratio_k8']}: "
                  f"{'met' if met['steps_ratio_k8'] else 'NOT met'})"]
    (args.out / "hosts.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
