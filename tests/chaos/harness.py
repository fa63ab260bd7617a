"""A seeded chaos schedule over an in-process swarm with real stores, and the invariants checked from
the stores alone.

The swarm: one domain server over ``teams`` team servers (real :class:`LevelCore` + :class:`LinkedLevel`,
journals and checkpoints in real :class:`LevelStore` directories), ``agents`` synthetic agents per
team that push seeded gradients over step intervals exactly as ``AgentWorker`` does (a push every
``push_every`` steps, a checkpoint of ``(step, pushed_through, seq)`` every ``checkpoint_every``
steps, and on restart the team server's ``covered``/``seen`` adopted so held steps are not pushed
again). Each tick every live agent steps; then the schedule (``random.Random(seed)``) may kill:

- ``agent``: its memory is lost, it restarts from its checkpoint;
- ``team`` / ``domain``: the server object is dropped (no checkpoint) and rebuilt from its store;
- ``driver``: everything at once (every agent and server), all rebuilt;
- ``ack``: an agent's push is journaled by its server, then the agent dies before it sees the ack;
- ``checkpoint``: a server's next checkpoint fails half-way (the write raises), then it dies;
- ``forward``: a team's forward is taken by the domain, then the team dies before it sees the ack.

:func:`check` then verifies, from the stores alone: every store audits clean (no step interval
applied twice), every acknowledged push is held (each agent's team coverage reaches what the agent
saw acknowledged, with no gap: steps 1..last once each; the same for each team at the domain), a
fresh replay of every store equals the live level bit for bit, and every kept checkpoint and journal
verifies (``LevelStore.check_checkpoint``/``check_journal``, what ``swarm checkpoint verify`` runs).
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.forwarding import LinkedLevel
from cluster.level.records import audit
from cluster.storage import Storage
from cluster.store import LevelStore

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}
KINDS = ("agent", "team", "domain", "driver", "ack", "checkpoint", "forward")


class Crash(Exception):
    """A process dying at an injected moment (caught by the harness, which then kills that process)."""


@dataclass
class Report:
    """What a chaos run did and found: kills by kind, ticks, pushes acknowledged to agents, pushes
    checked in the stores, and every invariant violation (target: none)."""

    seed: int
    ticks: int = 0
    kills: Counter = field(default_factory=Counter)
    acked: int = 0
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form."""
        return {"seed": self.seed, "ticks": self.ticks, "kills": dict(self.kills), "kills_total": sum(
            self.kills.values()), "pushes_acked": self.acked, "pushes_checked": self.checked,
            "violations": list(self.violations)}


def _grad(agent: str, step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{agent}:{step}".encode()))
    return {m: torch.randn(s, generator=gen) for m, s in SHAPES.items()}


class SimAgent:
    """A synthetic agent: steps, pushes its accumulated gradient over the steps since its last push,
    checkpoints ``(step, pushed_through, seq)``; on restart adopts what its server holds."""

    def __init__(self, aid: str, team: str, path: Path, push_every: int, checkpoint_every: int) -> None:
        self.id, self.team, self.path = aid, team, path
        self.push_every, self.checkpoint_every = push_every, checkpoint_every
        self.acked_through = 0  # the highest step this agent (in any life) saw acknowledged: the invariant's side
        self.acks = 0  # pushes it saw acknowledged, in every life
        self.restore(None)

    def restore(self, server: LinkedLevel | None) -> None:
        """Back to the checkpoint; steps the server already covers are not pushed again."""
        saved = json.loads(self.path.read_text()) if self.path.exists() else {"step": 0, "pushed_through": 0, "seq": 0}
        self.step, self.pushed_through, self.seq = saved["step"], saved["pushed_through"], saved["seq"]
        if server is not None:
            self.pushed_through = max(self.pushed_through, server.covered(self.id).last)
            self.seq = max(self.seq, server.seen(self.id))

    def tick(self, server: LinkedLevel, crash_after_journal: bool = False) -> None:
        """One step; a push when due (``crash_after_journal``: the agent dies once the server journaled it)."""
        self.step += 1
        if self.step % self.push_every == 0 and self.step > self.pushed_through:
            first = self.pushed_through + 1
            tensors = {m: sum(_grad(self.id, s)[m] for s in range(first, self.step + 1)) for m in SHAPES}
            self.seq += 1
            out = server.push(self.id, self.seq, server.core.version, tensors, first, self.step)
            if crash_after_journal:
                raise Crash(f"{self.id} after its push was journaled")
            if out.held:
                self.pushed_through = self.step
                self.acked_through = max(self.acked_through, self.step)
                self.acks += 1
        if self.step % self.checkpoint_every == 0:
            text = json.dumps({"step": self.step, "pushed_through": self.pushed_through, "seq": self.seq})
            Storage(self.path.parent).write_atomic(self.path.name, text.encode())


class CrashingParent:
    """The domain as a team sees it; ``crash_next`` makes the next forward die after the domain took it."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm, self.crash_next = swarm, False

    def push(self, *args, **kwargs):
        """The domain's push; then, when armed, the team's death before it sees the ack."""
        out = self.swarm.domain.push(*args, **kwargs)
        if self.crash_next and out.accepted:
            self.crash_next = False
            raise Crash("a team after the domain took its forward")
        return out

    def __getattr__(self, name: str):
        return getattr(self.swarm.domain, name)


class Swarm:
    """The servers and agents of one chaos run, all stores under ``root``."""

    def __init__(self, root: Path, *, teams: int = 2, agents: int = 2, push_every: int = 2,
                 checkpoint_every: int = 5, levels: str | None = None) -> None:
        """``levels``: where the level servers' stores go, a local path or a URI (``s3://bucket/prefix``,
        as ``run.storage``); default ``root/levels``. The agents' checkpoints stay under ``root``."""
        self.root = root
        self.levels = levels.rstrip("/") if levels else str(root / "levels")
        self.server_cfg = ServerConfig(window=2, upper_window=2, checkpoint_every=3, max_staleness=10**6,
                                       forward_every=1, forward_min=1)
        self.team_names = [f"swarm/t{i}" for i in range(teams)]
        self.storages: dict[str, Storage] = {}
        self.parents = {t: CrashingParent(self) for t in self.team_names}
        self.domain = self._server("domain/d", None, teams)
        self.teams = {t: self._server(t, "domain/d", agents) for t in self.team_names}
        (root / "agents").mkdir(parents=True, exist_ok=True)
        self.agents = {f"a{i}{j}": SimAgent(f"a{i}{j}", t, root / "agents" / f"a{i}{j}.json", push_every,
                                            checkpoint_every) for i, t in enumerate(self.team_names)
                       for j in range(agents)}

    def store_dir(self, name: str) -> str:
        """The store of server ``name`` (a path or a URI: a string, as pathlib would collapse ``s3://``)."""
        return f"{self.levels}/{name}"

    def _server(self, name: str, parent: str | None, children: int) -> LinkedLevel:
        storage = self.storages.setdefault(name, Storage(self.store_dir(name)))
        while True:  # a team that dies again in its startup forward (an armed forward crash) starts again
            core = LevelCore(name, SHAPES, server=self.server_cfg, store_dir=storage, parent=parent,
                             children=children)
            try:
                return LinkedLevel(core, self.parents[name] if parent else None)
            except Crash:
                continue

    def restart(self, name: str) -> None:
        """Server ``name`` dies (its memory lost) and is rebuilt from its store."""
        self.storages[name].inject(None)
        if name == "domain/d":
            self.domain = self._server(name, None, len(self.teams))
        else:
            self.teams[name] = self._server(name, "domain/d", sum(a.team == name for a in self.agents.values()))

    def restart_agent(self, aid: str) -> None:
        """Agent ``aid`` dies and restarts from its checkpoint."""
        agent = self.agents[aid]
        agent.restore(self.teams[agent.team])

    def run(self, ticks: int, seed: int, kill_rate: float = 0.15) -> Report:
        """``ticks`` ticks of every agent under the seeded kill schedule."""
        rng, report = random.Random(seed), Report(seed)
        for _ in range(ticks):
            report.ticks += 1
            kill = rng.choice(KINDS) if rng.random() < kill_rate else None
            victim = rng.choice(sorted(self.agents))
            if kill == "checkpoint":  # the server's next checkpoint dies half-way: its files partly written
                name = rng.choice([*self.team_names, "domain/d"])
                self.storages[name].inject(_fail_in_checkpoint)
                self._pending_checkpoint_kill = name
            if kill == "forward":
                self.parents[self.agents[victim].team].crash_next = True
            for aid in sorted(self.agents):
                agent = self.agents[aid]
                try:
                    agent.tick(self.teams[agent.team], crash_after_journal=kill == "ack" and aid == victim)
                except Crash as e:
                    if "forward" in str(e):
                        self.restart(agent.team)
                    agent.restore(self.teams[agent.team])  # the pusher died with it, or before its ack
            self._after_tick(kill, victim, rng, report)
        return report

    _pending_checkpoint_kill: str | None = None

    def _after_tick(self, kill: str | None, victim: str, rng: random.Random, report: Report) -> None:
        pending = self._pending_checkpoint_kill
        if pending is not None and self.teams.get(pending, self.domain).core.storage_error:
            self._pending_checkpoint_kill = None  # it failed mid-checkpoint: now the process dies
            self.restart(pending)
            if pending == "domain/d":
                self._relink()
        if kill is None:
            return
        report.kills[kill] += 1
        if kill == "agent":
            self.restart_agent(victim)
        elif kill == "team":
            self.restart(self.agents[victim].team)
        elif kill == "domain":
            self.restart("domain/d")
            self._relink()
        elif kill == "driver":  # everything: the servers (parents first), then every agent
            self.restart("domain/d")
            for t in self.team_names:
                self.restart(t)
            for aid in self.agents:
                self.restart_agent(aid)

    def _relink(self) -> None:
        """A rebuilt domain is reached through the same parent clients; teams resend what it lacks."""
        for t in self.team_names:
            try:
                self.teams[t].forward()
            except Crash:
                self.restart(t)


def _fail_in_checkpoint(op: str, name: str) -> None:
    if "ckpt" in name:
        raise OSError(5, f"the process died here ({op} {name})")


def check(swarm: Swarm, report: Report) -> Report:
    """The invariants, from the stores alone (see the module doc); violations go into ``report``."""
    v = report.violations
    for agent in swarm.agents.values():
        report.acked += agent.acks
    proofs = {}
    for name in [*swarm.team_names, "domain/d"]:
        path = swarm.store_dir(name)
        proof = audit(path, "")
        proofs[name] = proof
        v += [f"{name}: {x}" for x in proof.violations]
        store = LevelStore(path, config_hash="")
        v += [f"{name}: {x}" for x in store.check_journal()]
        for ckpt in store._checkpoint_dirs():
            v += [f"{name}: {x}" for x in store.check_checkpoint(ckpt)]
        replay = LevelCore(name, SHAPES, server=swarm.server_cfg, store_dir=path,
                           parent=None if name == "domain/d" else "domain/d")
        live = swarm.domain if name == "domain/d" else swarm.teams[name]
        if replay.version != live.core.version or any(not torch.equal(replay.B[m], live.core.B[m]) for m in SHAPES):
            v.append(f"{name}: a replay of the store (version {replay.version}) differs from the live level "
                     f"(version {live.core.version})")
    for aid, agent in swarm.agents.items():
        held = proofs[agent.team].coverage.get(aid)
        last, steps = (held.last, held.steps) if held else (0, 0)
        report.checked += held.pushes if held else 0
        if last < agent.acked_through:
            v.append(f"{aid}: acknowledged through step {agent.acked_through}, its team holds only {last}")
        if steps != last:
            v.append(f"{aid}: its team holds {steps} steps of 1..{last} (a gap or a double)")
    for t in swarm.team_names:
        held = proofs["domain/d"].coverage.get(t)
        report.checked += held.pushes if held else 0
        if held and held.steps != held.last:
            v.append(f"{t}: the domain holds {held.steps} merges of 1..{held.last} (a gap or a double)")
    return report


def chaos(root: Path, *, seed: int, ticks: int, kill_rate: float = 0.15, teams: int = 2, agents: int = 2,
          levels: str | None = None) -> Report:
    """One chaos run under ``root`` (the level stores at ``levels``, default under ``root``): the schedule,
    then :func:`check`."""
    swarm = Swarm(root, teams=teams, agents=agents, levels=levels)
    return check(swarm, swarm.run(ticks, seed, kill_rate))
