"""A swarm in one process, for the experiments: the real ``AgentWorker`` and ``LevelCore`` code.

The servers are :class:`cluster.level.forwarding.LinkedLevel` objects wired to each other directly
(built from the topology by :mod:`cluster.build`, as ``swarm run`` builds its actors) and
the agents take one step each in turn (round-robin), so a run is deterministic given its
seed and every arm gets exactly the same agent steps. ``swarm run`` runs the same protocol
over Ray actors; the experiments leave Ray out so that 60+ runs fit an hour on 2 cores.

Oracle arms (``Arm.oracle``) replace the agents by one central learner per scope (team,
domain or everyone) trained on the union of its agents' train documents; every agent of the
scope is then evaluated with that learner (:attr:`Simulation.model_of`).

With ``experiment.host`` (the default) the agents run on ONE frozen base and a round is one
:meth:`cluster.host.AgentHost.step` (one forward and backward for all of them, then each agent's
exchanges in the same order): the same states as the round-robin, up to float rounding
(tests/cluster/test_host.py). Oracle arms keep one model per learner (their step counts differ).

Attackers (scenario d) are omniscient senders at a server: after every round of honest
pushes to it they push crafted gradients built from that round (``swarm.experiment.attackers``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from agents.agent import Agent
from agents.device import resolve_device
from agents.model import shared_base
from agents.sources import documents_for, union_documents
from agents.text import Windows
from agents.topology import AgentSpec
from agents.workload import Workload
from cluster.build import level_shapes, level_specs, link_levels
from cluster.host import AgentHost
from cluster.level.forwarding import LinkedLevel
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers.dynamics import DynamicsConfig
from swarm.config.arms import MECHANISMS, Arm
from swarm.experiment.attackers import Attackers

PROBE_COORDS = 2048  # coordinates of B sampled per level for the timescale estimate


def plain_dynamics(d: DynamicsConfig) -> DynamicsConfig:
    """Every section-6 mechanism off except sync (a server's sync gate only paces its forwards)."""
    return dataclasses.replace(d, **{m: dataclasses.replace(getattr(d, m), enabled=False)
                                     for m in MECHANISMS if m != "sync"})


class Simulation:
    """Servers and agents of one arm; :meth:`step` advances every agent by one step."""

    def __init__(self, cfg, arm: Arm, *, attackers: list[str] = (), attack_kind: str = "alie", seed: int = 0) -> None:
        self.cfg, self.arm = cfg, arm
        shared = list(cfg.levels.names[2:])
        self.topology = Topology(cfg.workload, shared, list(arm.scopes) if arm.scopes else None)
        self.shapes = level_shapes(cfg.model, cfg.levels) if shared else {}
        dynamics = plain_dynamics(cfg.dynamics) if arm.plain_servers else cfg.dynamics
        specs = level_specs(self.topology, server=cfg.server, merge=cfg.merge, dynamics=dynamics,
                            circuits=cfg.circuits, levels=cfg.levels)
        self.servers: dict[str, LinkedLevel] = link_levels(specs, self.shapes)
        # attackers: per first-level server, the attackers routed to it and the honest agents it serves
        self.attackers: dict[str, Attackers] = {}
        first = {spec.id: self.topology.route(spec.id)[shared[0]] for spec in self.topology.agents} if shared else {}
        for name in sorted(set(first.values())):
            bad = [a for a in attackers if first[a] == name]
            if bad:
                honest = sum(1 for a, n in first.items() if n == name and a not in attackers)
                self.attackers[name] = Attackers(self.servers[name], bad, honest, attack_kind, seed)
        self.specs = {spec.id: spec for spec in self.topology.agents}
        self.agent_ids = [spec.id for spec in self.topology.agents if spec.id not in attackers]  # evaluated agents
        self.workers: dict[str, AgentWorker] = {}
        self.model_of: dict[str, str] = {a: a for a in self.agent_ids}  # agent -> the worker that evaluates it
        self.steps_per_round: dict[str, int] = {}  # worker -> agent steps per round (default 1)
        self.host: AgentHost | None = None  # the agents' shared base and batched step (experiment.host)
        if getattr(getattr(cfg, "experiment", None), "host", True) and not arm.oracle:
            self.host = AgentHost(shared_base(cfg.model, cfg.levels, resolve_device(cfg.agent.device)), self.workers)
        if arm.oracle:
            self._make_oracles(arm.oracle)
        else:
            for a in self.agent_ids:
                self.workers[a] = self.make_worker(self.specs[a])
        self._held: dict[str, Windows] = {}
        self.probes: dict[str, list[torch.Tensor]] = {}
        self.screened: dict[str, list[float]] = {}
        self._index: dict[str, torch.Tensor] = {}

    def make_worker(self, spec: AgentSpec, route_like: str | None = None) -> AgentWorker:
        """A worker for ``spec``, connected like the agent ``route_like`` (default: its own route)."""
        cfg = self.cfg
        agent = Agent(spec, model=cfg.model, levels=cfg.levels, workload=cfg.workload, agent=cfg.agent,
                      dynamics=cfg.dynamics, circuits=cfg.circuits, base=self.host.base if self.host else None)
        route = self.topology.route(route_like or spec.id)
        clients = {lvl: self.attackers.get(name) or self.servers[name] for lvl, name in route.items()}
        return AgentWorker(agent, clients, cfg.run)

    def _make_oracles(self, scope: str) -> None:
        """One learner per ``scope`` (team | domain | all) on the union of its agents' train documents.

        ``experiment.oracle_steps``: ``agent``, a learner takes one step per round like one agent;
        ``scope``, one per agent of its scope (the scope's agents' steps together)."""
        groups: dict[tuple[str, str], list[AgentSpec]] = {}
        for a in self.agent_ids:
            spec = self.specs[a]
            key = {"team": (spec.domain, spec.swarm), "domain": (spec.domain, "all"), "all": ("all", "all")}[scope]
            groups.setdefault(key, []).append(spec)
        per_agent = getattr(getattr(self.cfg, "experiment", None), "oracle_steps", "agent") == "scope"
        for (domain, swarm), members in groups.items():
            oracle = AgentSpec("oracle", swarm, domain)
            worker = self.make_worker(members[0])  # the oracle arm has no shared levels: nothing to route
            docs = union_documents([documents_for(self.cfg.workload, m) for m in members])
            worker.agent.workload = Workload(self.cfg.workload, oracle, worker.agent.tokenizer, documents=docs)
            self.workers[oracle.id] = worker
            self.steps_per_round[oracle.id] = len(members) if per_agent else 1
            self.model_of.update({m.id: oracle.id for m in members})

    def step(self) -> int:
        """One round: every worker takes its steps (one, or an oracle's share); returns the agent steps taken."""
        if self.host is not None:  # one step each, one batched pass (self.workers is the host's dict)
            return len(self.host.step())
        taken = 0
        for wid, worker in self.workers.items():
            n = self.steps_per_round.get(wid, 1)
            worker.run(n)
            taken += n
        return taken

    # ------------------------------------------------------------------ probes
    def _sample(self, key: str, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([blocks[m].detach().flatten() for m in sorted(blocks)])  # (D,)
        if key not in self._index:
            g = torch.Generator().manual_seed(len(self._index))
            self._index[key] = torch.randperm(flat.numel(), generator=g)[:PROBE_COORDS]
        return flat[self._index[key]].clone()

    def probe(self) -> None:
        """Snapshot (a fixed random subset of) every level's B and its screened fraction."""
        for aid, w in self.workers.items():
            a = w.agent
            for lvl in (a.fast, a.slow):
                key = f"{lvl}@{aid}"
                self.probes.setdefault(key, []).append(self._sample(key, a.stack.level_state(lvl)))
                self.screened.setdefault(key, []).append(a.optimizers[lvl].screened_fraction())
        for name, s in self.servers.items():
            self.probes.setdefault(name, []).append(self._sample(name, s.core.B))
            self.screened.setdefault(name, []).append(s.core.optimizer.screened_fraction())

    # ------------------------------------------------------------------ evaluation
    def held_out(self, aid: str) -> Windows:
        """Agent ``aid``'s held-out windows: its worker's current stream's, or (oracle arms) its own,
        made once with the evaluating learner's tokenizer."""
        if aid in self.workers:
            return self.workers[aid].agent.workload.held_out
        if aid not in self._held:
            agent = self.workers[self.model_of[aid]].agent
            self._held[aid] = Workload(self.cfg.workload, self.specs[aid], agent.tokenizer).held_out
        return self._held[aid]

    @property
    def knowledge(self) -> list[str]:
        """The levels held-out files are evaluated with: every level but the context level, which is the
        working memory of the file being read (held-out files are other files)."""
        return list(self.cfg.levels.names[1:])

    def evaluate(self, aid: str, windows: Windows | None = None, levels: list[str] | None = None) -> float:
        """Bits per byte of agent ``aid`` on ``windows`` (its own held-out files by default) with
        ``levels`` (by default :attr:`knowledge`)."""
        windows = self.held_out(aid) if windows is None else windows
        return self.workers[self.model_of[aid]].agent.evaluate(self.knowledge if levels is None else levels, windows)

    def switch(self, aid: str, package: str) -> None:
        """The agent's stream moves to another package (a context switch; its identity stays)."""
        agent = self.workers[aid].agent
        spec = agent.spec
        agent.workload = Workload(self.cfg.workload, AgentSpec(package, spec.swarm, spec.domain), agent.tokenizer)

    def server_stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for n, s in self.servers.items():
            st = s.core.status()
            out[n] = {"merges": st.counters.merges, "accepted": st.counters.accepted,
                      "promotions": st.counters.promotions, "forwarded": st.forwarding.forwarded,
                      "rejected": sum(st.counters.rejected.values()), "level": n.split("/")[0],
                      "screened": s.core.optimizer.screened_fraction()}
        return out
