"""The jobs of an experiment and how one runs (in a worker process, one thread each).

A job is one arm x seed of a scenario (or a sweep point). It loads the experiment config
with the arm's overrides, its seed (``workload.seed`` and ``levels.seed``) and the cached
base, builds a :class:`Simulation` and returns its numbers, which the runner writes to
``jobs/<id>.json``: an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from swarm.config.arms import ARMS


@dataclass(frozen=True)
class Job:
    id: str  # e.g. team/full/s0, attack/fedavg/alie-0.2/s1, sweep/traces-4/s0
    kind: str  # team | attack
    arm: str
    seed: int
    overrides: tuple[str, ...] = ()
    phases: tuple[str, ...] = ("team",)  # team jobs: team [, join] [, switch]
    attack: tuple[str, float] | None = None  # (kind, fraction); None: clean
    agent_steps: int = 0  # for the progress bar
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def file(self) -> str:
        return self.id.replace("/", "__") + ".json"


def job_config(config: str, overrides: list[str], job: Job):
    """The job's resolved config; ``ValueError`` for automatic growth that could never fire in it."""
    from swarm.config import check_growth, load_config

    seed = [f"workload.seed={job.seed}", f"levels.seed={job.seed}"]
    extra = arm_overrides(load_config(config, overrides), job.arm)
    cfg = load_config(config, [*overrides, *ARMS[job.arm].overrides, *extra, *seed, *job.overrides])
    check_growth(cfg)
    return cfg


def arm_overrides(cfg, arm: str) -> list[str]:
    """The overrides ``experiment.arm_overrides`` gives ``arm`` (none: empty)."""
    return list(cfg.experiment.arm_overrides.get(arm, []))


def run_job(config: str, overrides: list[str], job: Job, progress=None) -> dict[str, Any]:
    """Run one job; ``progress(n)`` is called with agent steps as they are done."""
    from swarm.experiment import scenarios
    from swarm.experiment.sim import Simulation

    cfg = job_config(config, overrides, job)
    exp, arm = cfg.experiment, ARMS[job.arm]
    t0 = time.time()
    out: dict[str, Any] = {"id": job.id, "kind": job.kind, "arm": job.arm, "seed": job.seed,
                           "overrides": list(job.overrides), "arm_overrides": arm_overrides(cfg, job.arm),
                           **job.meta}
    if job.kind == "attack":
        kind, fraction = job.attack or ("none", 0.0)
        cfg.workload = dataclasses.replace(cfg.workload, topology=exp.attack.topology)
        attackers = scenarios.attackers_for(exp.attack.topology, fraction)
        # one merge per round: the first shared level merges one push from each agent it serves
        teams = [len(x) for s in exp.attack.topology.values() for x in s.values()]
        window = sum(teams) if arm.scopes and arm.scopes[0] == "all" else max(teams)
        cfg.server = dataclasses.replace(cfg.server, window=window)
        if attackers and cfg.merge.aggregator in ("trimmed_mean", "krum", "multi_krum"):
            cfg.merge = dataclasses.replace(cfg.merge, byzantine_f=len(attackers))
        sim = Simulation(cfg, arm, attackers=attackers, attack_kind=kind, seed=job.seed)
        out.update(attack=kind, fraction=fraction, attackers=attackers,
                   **scenarios.attacked(sim, exp.attack.steps, progress))
    elif arm.external == "flower":  # not our code: Flower's simulation engine in .venv-flower
        from swarm.experiment.flower_arm import run_flower

        out.update(run_flower(cfg, job.seed))
    else:
        sim = Simulation(cfg, arm)
        out["team"] = scenarios.team(sim, exp.steps, exp.eval_every, exp.probe_every, progress)
        if "join" in job.phases:
            j = exp.join
            out["join"] = scenarios.join(sim, j.agent, j.team, j.steps, j.eval_every)
            if progress:
                progress(j.steps)
        if "switch" in job.phases:
            out["switch"] = scenarios.switch(sim, exp.switch.packages, exp.switch.steps, exp.eval_every, progress)
    out["seconds"] = time.time() - t0
    return out


def plan(cfg) -> list[Job]:
    """Every job of the experiment, longest first (so the pool ends together)."""
    exp = cfg.experiment
    n_agents = sum(len(a) for s in cfg.workload.teams.values() for a in s.values())
    _check_external(cfg)
    jobs: list[Job] = []
    if "team" in exp.scenarios:
        join_arms = set(exp.join.arms) | {"isolated"}  # the isolated arm's joiner is the cold agent
        arms = list(dict.fromkeys([*exp.arms, *(join_arms if "join" in exp.scenarios else []),
                                   *(exp.switch.arms if "switch" in exp.scenarios else [])]))
        for arm in arms:
            phases = ["team"]
            if ARMS[arm].external:
                jobs += [Job(f"team/{arm}/s{seed}", "team", arm, seed, agent_steps=n_agents * exp.steps)
                         for seed in exp.seeds]
                continue
            if ARMS[arm].oracle:
                for seed in exp.seeds:
                    jobs.append(Job(f"team/{arm}/s{seed}", "team", arm, seed, phases=("team",),
                                    agent_steps=oracle_steps(cfg, ARMS[arm].oracle)))
                continue
            if "join" in exp.scenarios and arm in join_arms:
                phases.append("join")
            if "switch" in exp.scenarios and arm in exp.switch.arms:
                phases.append("switch")
            steps = n_agents * exp.steps + ("join" in phases) * exp.join.steps + \
                ("switch" in phases) * n_agents * exp.switch.steps
            for seed in exp.seeds:
                jobs.append(Job(f"team/{arm}/s{seed}", "team", arm, seed, phases=tuple(phases), agent_steps=steps))
    if "attack" in exp.scenarios:
        a = exp.attack
        n = sum(len(x) for s in a.topology.values() for x in s.values())
        conditions = [("none", 0.0)] + [(a.kind, f) for f in a.fractions] + \
            [(k, a.kinds_fraction) for k in a.kinds if (k, a.kinds_fraction) != (a.kind, a.kinds_fraction)]
        conditions = list(dict.fromkeys(conditions))
        for arm in a.arms:
            for kind, frac in conditions:
                label = "clean" if kind == "none" else f"{kind}-{frac:g}"
                honest = n - round(frac * n)
                for seed in exp.seeds:
                    jobs.append(Job(f"attack/{arm}/{label}/s{seed}", "attack", arm, seed,
                                    attack=(kind, frac), agent_steps=honest * a.steps))
    if "sweeps" in exp.scenarios:
        jobs += _sweeps(cfg, n_agents)
    return sorted(jobs, key=lambda j: -j.agent_steps)


def _check_external(cfg) -> None:
    """An external arm (``flower_fedavg``) runs the team phase only: refuse it in another scenario's arms, and
    refuse it before any work when its environment is missing (the error names the setup command)."""
    exp = cfg.experiment
    if "team" in exp.scenarios and any(ARMS[a].external == "flower" for a in exp.arms):
        from swarm.experiment.flower_arm import flower_python

        flower_python()
    used = {"join": exp.join.arms, "switch": exp.switch.arms, "attack": exp.attack.arms,
            "sweeps": [exp.sweep.arm, *exp.sweep.server_lr_arms]}
    for scenario, arms in used.items():
        bad = [a for a in arms if ARMS[a].external and scenario in exp.scenarios]
        if bad:
            raise ValueError(f"experiment: the arm {bad[0]!r} runs outside our code and only the team phase; "
                             f"remove it from the {scenario} arms (keep it in experiment.arms)")


def oracle_steps(cfg, scope: str) -> int:
    """Agent steps of one oracle job: ``steps`` per learner (one per team, domain or in all), or, with
    ``experiment.oracle_steps=scope``, ``steps`` per agent of its scope (the agents' steps together)."""
    teams = cfg.workload.teams
    if cfg.experiment.oracle_steps == "scope":
        return sum(len(a) for s in teams.values() for a in s.values()) * cfg.experiment.steps
    learners = {"team": sum(len(s) for s in teams.values()), "domain": len(teams), "all": 1}[scope]
    return learners * cfg.experiment.steps


def _sweeps(cfg, n_agents: int) -> list[Job]:
    """Sweep points; the configured value of each swept setting is the team job of ``sweep.arm`` itself."""
    exp, sw = cfg.experiment, cfg.experiment.sweep
    team_steps = n_agents * exp.steps
    phase = [cfg.dynamics.phase.theta_on, cfg.dynamics.phase.theta_off]
    points = [(f"traces-{k}", (f"circuits.traces={k}",), {"sweep": "traces", "value": k}, ("team",), team_steps)
              for k in sw.traces if k != cfg.circuits.traces]
    points += [(f"phase-{on:g}-{off:g}", (f"dynamics.phase.theta_on={on}", f"dynamics.phase.theta_off={off}"),
                {"sweep": "phase", "value": [on, off]}, ("team",), team_steps) for on, off in sw.phase
               if [on, off] != phase]
    points += [(f"switch-{s}", (f"experiment.switch.steps={s}",), {"sweep": "switch", "value": s},
                ("team", "switch"), team_steps + n_agents * s) for s in sw.switch_steps
               if s != exp.switch.steps]
    jobs = [Job(f"sweep/{name}/s{seed}", "team", sw.arm, seed, overrides=ov, phases=phases, agent_steps=steps,
                meta=meta) for name, ov, meta, phases, steps in points for seed in sw.seeds]
    jobs += [Job(f"sweep/server_lr-{lr:g}/{arm}/s{seed}", "team", arm, seed, overrides=(f"server.lr={lr}",),
                 agent_steps=team_steps, meta={"sweep": "server_lr", "value": lr})
             for arm in sw.server_lr_arms for lr in sw.server_lr if lr != cfg.server.lr for seed in sw.seeds]
    return jobs
