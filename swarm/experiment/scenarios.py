"""The scenarios, each a function of a built :class:`Simulation` returning JSON-able numbers.

(a) ``team``: every agent learns its own stream; then bits per byte on its own held-out
files, its teammates' and the other teams', with all levels, with its two local levels
only, and with the base alone. (b) ``join``: a new agent joins a trained team (on a copy
of the servers) and is evaluated as it learns. (c) ``switch``: every agent moves to a new
package; forgetting is the rise of its bits per byte on its first package. (d) ``attack``
is :func:`attacked`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from agents.text import Windows
from agents.topology import AgentSpec
from swarm.experiment.metrics import autocorrelation_time, average, cosine, level_of, turnover_time
from swarm.experiment.sim import Simulation


def team(sim: Simulation, steps: int, eval_every: int, probe_every: int, progress=None) -> dict[str, Any]:
    ids = sim.agent_ids
    curve = [(0, average(sim.evaluate(a) for a in ids))]
    sim.probe()
    for t in range(1, steps + 1):
        taken = sim.step()
        if progress:
            progress(taken)
        if t % probe_every == 0:
            sim.probe()
        if t % eval_every == 0 or t == steps:
            curve.append((t, average(sim.evaluate(a) for a in ids)))
    out = {"curve": curve, "agents": transfer(sim), "timescales": timescales(sim, probe_every),
           "screened": screened(sim), "promotions": promotions(sim), "servers": sim.server_stats(),
           "specialisation": specialisation(sim)}
    steps_done = sum(w.agent.steps for w in sim.workers.values())
    out["bytes_per_step"] = sum(w.bytes_sent for w in sim.workers.values()) / max(1, steps_done)
    return out


GROUPS = ("own", "team", "domain", "others", "other_domains")


def groups(sim: Simulation, a: str) -> dict[str, list[str]]:
    """Whose held-out files agent ``a`` is scored on: ``own``; ``team`` (teammates); ``domain``
    (domain-mates in other teams); ``others`` (every other team, any domain); ``other_domains``."""
    spec, specs = sim.specs[a], sim.specs
    ids = sim.agent_ids
    same_team = {b for b in ids if (specs[b].domain, specs[b].swarm) == (spec.domain, spec.swarm)}
    return {"own": [a], "team": [b for b in ids if b in same_team and b != a],
            "domain": [b for b in ids if b not in same_team and specs[b].domain == spec.domain],
            "others": [b for b in ids if b not in same_team],
            "other_domains": [b for b in ids if specs[b].domain != spec.domain]}


def spread(windows: Windows, n: int) -> Windows:
    """``n`` of ``windows`` at evenly spread indices (all of them when there are not more than ``n``)."""
    total = len(windows)
    if total <= n:
        return windows
    return windows[torch.tensor([(2 * k + 1) * total // (2 * n) for k in range(n)])]


def group_windows(sim: Simulation, members: list[str], cap: int) -> Windows:
    """The held-out windows of ``members`` together: all of one member's; of several, ``cap // len``
    spread windows of each (so a group costs what one agent's own windows cost)."""
    if len(members) == 1:
        return sim.held_out(members[0])
    share = max(1, cap // len(members))
    return Windows.cat([spread(sim.held_out(b), share) for b in members])


def transfer(sim: Simulation) -> dict[str, dict[str, float]]:
    """Per agent and group of :func:`groups` (``key``): held-out bits per byte with every level but
    context (``key``), with its agent level alone (``key_local``) and with the base alone
    (``key_base``). Identical evaluations (the base on the same windows; isolated and oracle arms,
    whose two level sets coincide; agents sharing an oracle) are computed once."""
    local = sim.cfg.levels.names[1:2]
    cap = sim.cfg.workload.eval_windows
    cache: dict[tuple, float] = {}
    out = {}
    for a in sim.agent_ids:
        rec = {}
        for key, members in groups(sim, a).items():
            if not members:
                continue
            w = None
            for suffix, levels in (("", sim.knowledge), ("_local", local), ("_base", [])):
                model = sim.model_of[a] if levels else "base"
                memo = (model, tuple(levels), tuple(members))
                if memo not in cache:
                    w = w if w is not None else group_windows(sim, members, cap)
                    cache[memo] = sim.evaluate(a, w, levels)
                rec[key + suffix] = cache[memo]
        out[a] = rec
    return out


def timescales(sim: Simulation, spacing: int) -> dict[str, dict[str, Any]]:
    """Per level: the mean autocorrelation time of its instances over the run, and over each half."""
    by_level: dict[str, list[dict]] = {}
    for key, snaps in sim.probes.items():
        half = len(snaps) // 2
        tau, censored = autocorrelation_time(snaps, spacing)
        by_level.setdefault(level_of(key), []).append(
            {"tau": tau, "censored": censored, "tau_first": autocorrelation_time(snaps[:half + 1], spacing)[0],
             "tau_second": autocorrelation_time(snaps[half:], spacing)[0],
             "turnover_first": turnover_time(snaps[:half + 1], spacing),
             "turnover_second": turnover_time(snaps[half:], spacing)})
    out = {}
    for level, rows in by_level.items():
        out[level] = {k: _finite_mean(r[k] for r in rows) for k in rows[0] if k != "censored"}
        out[level]["censored"] = any(r["censored"] for r in rows)
    return out


def _finite_mean(xs) -> float | None:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None  # None: never moved (JSON has no inf)


def screened(sim: Simulation) -> dict[str, list[float]]:
    """Per level: the screened fraction at every probe (mean over the level's instances)."""
    by_level: dict[str, list[list[float]]] = {}
    for key, series in sim.screened.items():
        by_level.setdefault(level_of(key), []).append(series)
    return {lvl: [average(col) for col in zip(*rows, strict=False)] for lvl, rows in by_level.items()}


def promotions(sim: Simulation) -> dict[str, int]:
    """Circuits promoted across each level boundary (context -> agent inside the agents; the rest by
    consensus at the servers of the upper level)."""
    names = sim.cfg.levels.names
    out = {f"{names[0]}->{names[1]}": sum(w.counters["promoted"] for w in sim.workers.values())}
    for below, above in zip(names[1:], names[2:], strict=False):
        out[f"{below}->{above}"] = sum(s.core.status().counters.promotions for n, s in sim.servers.items()
                                       if level_of(n) == above)
    return out


def specialisation(sim: Simulation) -> dict[str, float]:
    """Mean cosine between agents' agent-level B within a team and across teams (low: specialised)."""
    ids = list(sim.workers)
    slow = sim.cfg.levels.names[1]
    flat = {a: torch.cat([t.flatten() for _, t in sorted(sim.workers[a].agent.stack.level_state(slow).items())])
            for a in ids}
    team_of = {a: sim.workers[a].agent.spec.swarm for a in ids}
    within = [cosine(flat[a], flat[b]) for i, a in enumerate(ids) for b in ids[i + 1:] if team_of[a] == team_of[b]]
    across = [cosine(flat[a], flat[b]) for i, a in enumerate(ids) for b in ids[i + 1:] if team_of[a] != team_of[b]]
    return {"within_team": average(within), "across_teams": average(across)}


def join(sim: Simulation, agent: str, team_name: str, steps: int, eval_every: int) -> dict[str, Any]:
    """A new agent joins ``team_name`` (routed like a member of it) on a copy of the trained servers."""
    member = next(a for a in sim.workers if sim.workers[a].agent.spec.swarm == team_name)
    spec = AgentSpec(agent, team_name, sim.workers[member].agent.spec.domain)
    saved = sim.servers
    sim.servers = copy.deepcopy(saved)  # the joiner's pushes must not change what scenario (c) starts from
    try:
        worker = sim.make_worker(spec, route_like=member)
        levels = sim.knowledge
        curve = [(0, worker.agent.evaluate(levels))]  # with the shared levels it pulled, before any own step
        for t in range(1, steps + 1):
            worker.run(1)
            if t % eval_every == 0:
                curve.append((t, worker.agent.evaluate(levels)))
    finally:
        sim.servers = saved
    return {"agent": spec.id, "curve": curve}


def switch(sim: Simulation, packages: list[str], steps: int, eval_every: int, progress=None) -> dict[str, Any]:
    """Every agent moves to a new package for ``steps`` steps; its first package's bits per byte before/after."""
    ids = list(sim.workers)
    first = {a: sim.held_out(a) for a in ids}
    before = {a: sim.evaluate(a, first[a]) for a in ids}
    for i, a in enumerate(ids):
        sim.switch(a, packages[i % len(packages)])
    new_start = {a: sim.evaluate(a) for a in ids}
    curve = [(0, average(before.values()))]
    for t in range(1, steps + 1):
        sim.step()
        if progress:
            progress(len(ids))
        if t % eval_every == 0 or t == steps:
            curve.append((t, average(sim.evaluate(a, first[a]) for a in ids)))
    after = {a: sim.evaluate(a, first[a]) for a in ids}
    new_end = {a: sim.evaluate(a) for a in ids}
    return {"before": before, "after": after, "forgetting": average(after[a] - before[a] for a in ids),
            "new_gain": average(new_start[a] - new_end[a] for a in ids), "curve": curve}


def attackers_for(teams: dict[str, dict[str, list[str]]], fraction: float) -> list[str]:
    """Which agents attack: ``round(fraction * N)`` of them, taken from the ends of the teams in turn."""
    members = [[f"{d}/{s}/{a}" for a in agents] for d, swarms in teams.items() for s, agents in swarms.items()]
    n = sum(len(m) for m in members)
    order = [m[-1 - i] for i in range(max(len(m) for m in members)) for m in members if i < len(m)]
    return order[:round(fraction * n)]


def attacked(sim: Simulation, steps: int, progress=None) -> dict[str, Any]:
    """Run the honest agents (and, for ``poison``, the poisoning members: ``attackers.add_poisoners``);
    the honest agents' own held-out bits per byte at the end, and what the attackers sent."""
    from swarm.experiment.attackers import DATA_ATTACKS, add_poisoners

    if any(x.kind in DATA_ATTACKS for x in sim.attackers.values()):
        add_poisoners(sim)
    for _ in range(steps):
        sim.step()
        if progress:
            progress(len(sim.workers))
    return {"own": {a: sim.evaluate(a) for a in sim.agent_ids},
            "attack_pushes": sum(x.sent for x in sim.attackers.values()),
            "servers": sim.server_stats()}
