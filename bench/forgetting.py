"""Memory of the agent level: its horizon, and what a context switch makes it forget.

    python bench/forgetting.py                     # config-built base: 2 seeds, 150 steps on A, 300 after
    python bench/forgetting.py --base runs/base/KEY  # and a pre-trained base: 1 seed, 100 on A, 200 after
    python bench/forgetting.py --quick             # 1 seed, 60 steps on A, 120 after (40 / 80 pre-trained)

One ``agents.Agent`` (no Ray) on the micro Llama of ``configs/model/micro_llama.yaml``, built
from its config (random weights: no pre-trained base is needed; ``--base DIR`` adds one),
with the two local levels only (context, agent) and the team experiment's settings
(``configs/experiment/team.yaml``: rank 16, 8 x 64 tokens, lr 3e-3 for both levels). Stream A
is one agent's stdlib package (json), stream B another's (http); ``--workload synthetic``
uses the synthetic streams a1 -> b1 instead. Two arms, same seeds:

* ``before``: the former phase rule: no consolidation, FREE parameters decay by 1% per step
  and SCREENED ones by 1e-4 (``dynamics.consolidation.enabled=false
  dynamics.phase.screened_decay=1e-4``);
* ``after``: ``configs/dynamics/default.yaml`` (consolidation on, screened parameters hold).

Per arm: train on A (``steps_a``); then from that same state, (1) *idle*: the stream stops and
the agent level's optimizer steps with zero drive, and (2) *switch*: the agent trains on B
(``steps_b``). A's held-out benefit is ``bpb(base) - bpb(base + agent level)`` on A's held-out
windows. The *horizon* is the number of steps until it halves (linear interpolation between
evaluations; ``null``: not within the run). *Forgetting* is the rise of A's held-out bits per
byte (agent level) from the switch to the end of B. Learning speed: held-out bits per byte
with both local levels after ``steps_a`` on A and after ``steps_b`` on B.
Writes bench/results/forgetting.json (``ratios``: after / before) and forgetting.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from agents.agent import Agent  # noqa: E402
from agents.topology import agent_specs  # noqa: E402
from agents.workload import Workload  # noqa: E402
from swarm.config import load_config  # noqa: E402

STREAMS = {"stdlib": ("json", "http"), "synthetic": ("a1", "b1")}
ARMS = {"before": ("dynamics.consolidation.enabled=false", "dynamics.phase.screened_decay=1e-4"), "after": ()}


def config(workload: str, seed: int, base: str | None, arm: str):
    overrides = ["model=micro_llama", f"workload={workload}", "levels.names=[context,agent]", "levels.rank=16",
                 "workload.seq_len=64", "workload.batch_size=8", "workload.eval_windows=16",
                 f"workload.seed={seed}", f"levels.seed={seed}", "agent.lr_context=3e-3", "agent.lr_agent=3e-3",
                 *ARMS[arm]]
    if base:
        overrides.append(f"model.name_or_path={base}")
    return load_config("swarm", overrides)


def make_agent(cfg, name: str) -> Agent:
    spec = next(s for s in agent_specs(cfg.workload) if s.name == name)
    return Agent(spec, model=cfg.model, levels=cfg.levels, workload=cfg.workload, agent=cfg.agent,
                 dynamics=cfg.dynamics, circuits=cfg.circuits)


def horizon(steps: list[int], benefit: list[float]) -> float | None:
    """First step at which the benefit is at most half its value at step 0 (interpolated)."""
    half = benefit[0] / 2
    for i in range(1, len(steps)):
        if benefit[i] <= half:
            b0, b1 = benefit[i - 1], benefit[i]
            return steps[i - 1] + (steps[i] - steps[i - 1]) * (b0 - half) / (b0 - b1 if b0 != b1 else 1.0)
    return None


def run_arm(arm: str, seed: int, args) -> dict:
    cfg = config(args.workload, seed, args.base, arm)
    name_a, name_b = STREAMS[args.workload]
    agent = make_agent(cfg, name_a)
    fast, slow = agent.fast, agent.slow
    held_a = agent.workload.held_out
    held_b = Workload(cfg.workload, next(s for s in agent_specs(cfg.workload) if s.name == name_b),
                      agent.tokenizer).held_out
    base_a, base_b = agent.evaluate([], held_a), agent.evaluate([], held_b)
    every = args.every
    learn_a, screened_steps, promoted = [], 0.0, 0
    t0 = time.perf_counter()
    for step in range(1, args.steps_a + 1):
        out = agent.step()
        promoted += out["promoted"]
        screened_steps += agent.optimizers[slow].screened_fraction()
        if step % every == 0:
            learn_a.append([step, agent.evaluate([fast, slow], held_a), agent.evaluate([slow], held_a)])
    seconds_a = time.perf_counter() - t0
    report_a = agent.optimizers[slow].report()
    snapshot = agent.state_dict()

    # (1) idle: the stream stops; the agent level only decays (zero drive, its own optimizer)
    idle_agent = make_agent(cfg, name_a)
    idle_agent.load_state_dict(snapshot)
    opt = idle_agent.optimizers[slow]
    zero = {n: torch.zeros_like(p) for n, p in opt.params.items()}
    idle = [[0, idle_agent.evaluate([slow], held_a)]]
    for step in range(1, args.idle + 1):
        opt.step(zero)
        if step % (2 * every) == 0:
            idle.append([step, idle_agent.evaluate([slow], held_a)])

    # (2) switch: the same agent now learns stream B
    agent.workload = Workload(cfg.workload, next(s for s in agent_specs(cfg.workload) if s.name == name_b),
                              agent.tokenizer)
    switch = [[0, agent.evaluate([slow], held_a), agent.evaluate([fast, slow], held_b), agent.evaluate([slow], held_b)]]
    for step in range(1, args.steps_b + 1):
        promoted += agent.step()["promoted"]
        screened_steps += agent.optimizers[slow].screened_fraction()
        if step % every == 0:
            switch.append([step, agent.evaluate([slow], held_a), agent.evaluate([fast, slow], held_b),
                           agent.evaluate([slow], held_b)])
    report_b = agent.optimizers[slow].report()
    idle_benefit = [base_a - b for _, b in idle]
    switch_benefit = [base_a - r[1] for r in switch]
    result = {
        "arm": arm, "seed": seed, "base_bpb_a": base_a, "base_bpb_b": base_b, "seconds_a": seconds_a,
        "learn_a": learn_a, "idle": idle, "switch": switch,
        "bpb_a_local_end": learn_a[-1][1], "bpb_a_agent_end": learn_a[-1][2],
        "bpb_b_local_end": switch[-1][2], "bpb_b_agent_end": switch[-1][3],
        "benefit_a": switch_benefit[0],
        "idle_horizon": horizon([s for s, _ in idle], idle_benefit),
        "idle_retained": idle_benefit[-1] / idle_benefit[0],
        "switch_horizon": horizon([r[0] for r in switch], switch_benefit),
        "switch_retained": switch_benefit[-1] / switch_benefit[0],
        "forgetting": switch[-1][1] - switch[0][1],
        # counters: does the mechanism act on this stream?
        "screened_parameter_fraction_mean": screened_steps / (args.steps_a + args.steps_b),
        "promotions": promoted,
        "agent_level_after_a": {k: report_a.get(k) for k in ("screened_fraction", "consolidated_norm",
                                                             "unconsolidated_norm", "free_decay")},
        "agent_level_after_b": {k: report_b.get(k) for k in ("screened_fraction", "consolidated_norm",
                                                             "unconsolidated_norm", "free_decay")},
    }
    print(f"{arm} seed {seed}: A {learn_a[-1][1]:.3f} bpb (agent level {learn_a[-1][2]:.3f}, base {base_a:.3f}); "
          f"idle horizon {result['idle_horizon']}, retained {result['idle_retained']:.2f}; switch horizon "
          f"{result['switch_horizon']}, retained {result['switch_retained']:.2f}, forgetting "
          f"{result['forgetting']:+.4f}; B {switch[-1][2]:.3f}", flush=True)
    return result


KEYS = ("idle_horizon", "idle_retained", "switch_horizon", "switch_retained", "forgetting", "benefit_a",
        "bpb_a_local_end", "bpb_b_local_end", "bpb_b_agent_end")


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        values = [r[key] for r in rows]
        out[key] = None if any(v is None for v in values) else statistics.mean(values)
        out[f"{key}_values"] = values
    return out


def run_setup(args, base: str | None, seeds: list[int], steps: tuple[int, int, int, int]) -> dict:
    args.steps_a, args.steps_b, args.idle, args.every = steps
    args.base = base
    rows = {arm: [run_arm(arm, s, args) for s in seeds] for arm in ARMS}
    summary = {arm: summarise(r) for arm, r in rows.items()}
    before, after = summary["before"], summary["after"]

    def ratio(key):
        b, a = before[key], after[key]
        return None if a is None or b is None or b == 0 else a / b

    return {"setup": {"workload": args.workload, "streams": STREAMS[args.workload], "seeds": seeds,
                      "steps_a": args.steps_a, "steps_b": args.steps_b, "idle": args.idle, "every": args.every,
                      "base": base or "config-built micro_llama (random weights)", "arms": ARMS},
            "summary": summary, "runs": rows,
            "ratios": {"idle_retained_after_over_before": ratio("idle_retained"),
                       "switch_retained_after_over_before": ratio("switch_retained"),
                       "forgetting_after_over_before": ratio("forgetting"),
                       "bpb_a_after_over_before": ratio("bpb_a_local_end"),
                       "bpb_b_after_over_before": ratio("bpb_b_local_end")}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workload", choices=sorted(STREAMS), default="stdlib")
    parser.add_argument("--base", default=None,
                        help="also run on this pre-trained base directory (1 seed; its ratios are the headline)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = args.base
    setups = {"config_built": run_setup(args, None, [0] if args.quick else [0, 1],
                                        (60, 120, 300, 10) if args.quick else (150, 300, 600, 25))}
    if base:
        setups["pretrained"] = run_setup(args, base, [0], (40, 80, 200, 10) if args.quick else (100, 200, 400, 25))
    headline = "pretrained" if base else "config_built"
    result = {"quick": args.quick, "headline": headline, "setups": setups, "ratios": setups[headline]["ratios"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forgetting.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "forgetting.md").write_text("\n".join(report(r, args.quick) for r in setups.values())
                                            + f"\nHeadline ratios ({headline}): "
                                            + ", ".join(f"{k} {_fmt(v)}" for k, v in result["ratios"].items()) + "\n")
    print(f"wrote {args.out / 'forgetting.json'} and {args.out / 'forgetting.md'}")
    return result


def _fmt(v, digits=3):
    return "not within the run" if v is None else f"{v:.{digits}f}"


def report(result: dict, quick: bool) -> str:
    s, su = result["setup"], result["summary"]
    lines = [f"# Memory of the agent level ({s['workload']}: {s['streams'][0]} -> {s['streams'][1]})", "",
             f"Made by `python bench/forgetting.py{' --quick' if quick else ''}`. Base: {s['base']}. "
             f"{s['steps_a']} steps on A, then {s['idle']} idle steps (zero drive) or {s['steps_b']} steps on B; "
             f"seeds {s['seeds']}, means. Benefit = A's held-out bpb without levels minus with the agent level.",
             "", "| | before (no consolidation) | after (consolidation) |", "|---|---|---|"]
    rows = [("A's benefit at the switch (bits/byte)", "benefit_a", 4),
            ("idle horizon (steps to half the benefit)", "idle_horizon", 0),
            (f"idle: benefit kept after {s['idle']} steps", "idle_retained", 2),
            ("switch horizon (steps on B to half A's benefit)", "switch_horizon", 0),
            (f"switch: A's benefit kept after {s['steps_b']} steps on B", "switch_retained", 2),
            ("forgetting: rise of A's bpb over the steps on B", "forgetting", 4),
            (f"A: held-out bpb after {s['steps_a']} steps (both local levels)", "bpb_a_local_end", 4),
            (f"B: held-out bpb after {s['steps_b']} steps (both local levels)", "bpb_b_local_end", 4)]
    for label, key, digits in rows:
        lines.append(f"| {label} | {_fmt(su['before'][key], digits)} | {_fmt(su['after'][key], digits)} |")
    lines += ["", "Counters (agent level, mean over seeds):", ""]
    for arm, runs in result["runs"].items():
        c = [r["screened_parameter_fraction_mean"] for r in runs]
        na = [r["agent_level_after_a"] for r in runs]
        nb = [r["agent_level_after_b"] for r in runs]
        if na[0].get("consolidated_norm") is not None:
            def mean(xs, key):
                return statistics.mean(x[key] for x in xs)

            norms = (f"; consolidated / unconsolidated norm after A {mean(na, 'consolidated_norm'):.3f} / "
                     f"{mean(na, 'unconsolidated_norm'):.3f}, after B {mean(nb, 'consolidated_norm'):.3f} / "
                     f"{mean(nb, 'unconsolidated_norm'):.3f}")
        else:
            norms = ""
        lines.append(f"- {arm}: screened fraction {statistics.mean(c):.3f} of parameters per step, "
                     f"{statistics.mean(r['promotions'] for r in runs):.0f} promotions{norms}")
    lines += ["", "Ratios (after / before): " + ", ".join(f"{k} {_fmt(v)}" for k, v in result["ratios"].items()), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
