"""``AgentHostActor``: K agents on ONE frozen base in one Ray actor (:class:`cluster.host.AgentHost`).

``swarm run`` places its agents in hosts (``run.agents_per_host``; :func:`host_groups` splits them,
:func:`host_share` sizes each host's CPUs) instead of one :class:`cluster.actors.AgentActor` each.
A host has the surface of an agent actor keyed by agent id (``run_agent``, ``checkpoint``,
``respond``, ``status``, ``evaluate``, ``held_out``) plus :meth:`AgentHostActor.run`, which steps
all its agents together, one batched forward and backward per round. :class:`HostedAgent` is one
agent of a host seen like an agent actor's handle (``h.run.remote(n)``, ``h.status.remote()``...),
so the driver's summary, the query service and the tests address an agent the same way wherever it
runs.

Durability: every agent keeps its own store (``<run>/agents/<id>``); Ray restarts a killed host
with the same arguments, and each of its agents resumes from its own last checkpoint, exactly as
an agent actor does (docs/durability.md). Nothing of the host is in a checkpoint, so a resumed run
may group the agents differently (another ``run.agents_per_host``, another number of nodes).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import ray
import torch

from cluster.actors import RemoteLevel, agent_resources, lower_priority
from cluster.config import RuntimeConfig
from cluster.host import AgentHost
from cluster.metrics import LiveAgentProbe
from cluster.snapshots import StatusBoard
from cluster.worker import AgentWorker

HOST_PREFIX = "host/"  # host actors are named host/<index>-<hash of their agents> in the run's namespace


def host_groups(agent_ids: list[str], hosts: int) -> list[list[str]]:
    """``agent_ids`` in ``hosts`` contiguous groups of balanced sizes (a team's agents stay together as
    far as the sizes allow); fewer groups when there are fewer agents. ``ValueError`` for ``hosts`` < 1."""
    if hosts < 1:
        raise ValueError(f"host_groups: hosts must be >= 1, got {hosts}")
    hosts = min(hosts, len(agent_ids))
    out, start = [], 0
    for h in range(hosts):
        size = len(agent_ids) // hosts + (h < len(agent_ids) % hosts)
        out.append(agent_ids[start:start + size])
        start += size
    return out


def host_count(agents: int, per_host: int | None, nodes: int, gpus: float, cuda: bool) -> int:
    """How many hosts ``agents`` agents need: ``ceil(agents / per_host)``, or with ``per_host`` None
    (``auto``) one per node, one per whole GPU when the agents run on CUDA (``cuda``)."""
    if per_host is not None:
        return max(1, math.ceil(agents / per_host))
    return max(1, min(agents, int(gpus) if cuda and gpus >= 1 else nodes))


def host_share(node_cpus: list[float], hosts: int) -> float:
    """The largest CPU count per host such that ``hosts`` of them fit on the nodes as they are (a host
    fits whole on one node: 2 hosts on one 2-CPU node get 1 each, 1 host on it gets 2)."""
    best = 0.0
    for c in node_cpus:
        for m in range(1, hosts + 1):
            x = c / m
            if x > best and sum(int(cc / x + 1e-9) for cc in node_cpus) >= hosts:
                best = x
    return best or 1.0 / hosts


def host_name(index: int, agent_ids: list[str]) -> str:
    """The actor name of host ``index`` holding ``agent_ids`` (a regrouped resume gets other names)."""
    return f"{HOST_PREFIX}{index}-{hashlib.sha256('|'.join(agent_ids).encode()).hexdigest()[:8]}"


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentHostActor:
    """The agents of one host (see the module doc); method calls run one at a time."""

    def __init__(self, name: str, specs: list, configs: dict[str, Any], routes: dict[str, dict[str, str]],
                 namespace: str, stores: dict[str, str], config_hash: str, runtime: RuntimeConfig,
                 threads: int = 1) -> None:
        """``specs``: the agents' :class:`agents.topology.AgentSpec`; ``routes``: agent id -> level ->
        server actor name; ``stores``: agent id -> its store directory. Builds ONE base on the device of
        ``configs['agent']``, then each agent on it; each resumes from its own store."""
        torch.set_num_threads(max(1, threads))
        self.nice = lower_priority(runtime.agent_nice)
        from agents.agent import Agent
        from agents.device import resolve_device
        from agents.model import shared_base

        self.name = name
        self.node = ray.get_runtime_context().get_node_id()
        device = resolve_device(configs["agent"].device) if configs.get("agent") is not None else "cpu"
        self.host = AgentHost(shared_base(configs["model"], configs["levels"], device))
        board = StatusBoard(namespace)
        servers: dict[str, RemoteLevel] = {}  # one client per server, shared by the host's agents
        for spec in specs:
            clients = {}
            for level, server in routes[spec.id].items():
                if server not in servers:
                    servers[server] = RemoteLevel(ray.get_actor(server, namespace=namespace))
                clients[level] = servers[server]
            agent = Agent(spec, **configs, base=self.host.base)
            worker = AgentWorker(agent, clients, runtime, store_dir=stores[spec.id], config_hash=config_hash)
            worker.probe = LiveAgentProbe(spec, board, self._where())
            worker.probe.publish(worker)
            self.host.add(worker)

    def _where(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": self.node, "host": self.name}

    def _worker(self, agent_id: str) -> AgentWorker:
        try:
            return self.host.workers[agent_id]
        except KeyError:
            raise ValueError(f"host {self.name}: no agent {agent_id!r} here (it holds "
                             f"{', '.join(self.host.workers)})") from None

    def agents(self) -> list[str]:
        """The ids of the agents this host holds, in stepping order."""
        return list(self.host.workers)

    def info(self) -> dict[str, Any]:
        """``name``, ``pid``, ``node``, ``agents``, ``rounds`` and ``phase_s`` (seconds per part of a round)."""
        return {**self._where(), "agents": self.agents(), "rounds": self.host.rounds,
                "phase_s": dict(self.host.phase_s)}

    def _chunk(self, ids: list[str], steps: int, until: int | None) -> dict[str, dict[str, Any]]:
        """``steps`` rounds of the agents ``ids`` (each stops at step ``until``); their chunk records."""
        bpbs: dict[str, list[float]] = {a: [] for a in ids}
        for r in range(steps):
            due = [a for a in ids if until is None or self.host.workers[a].agent.steps < until]
            if not due:
                break
            for aid, rec in zip(due, self.host.step(due, chunk_end=r == steps - 1), strict=True):
                bpbs[aid].append(rec["train_bpb"])
        out = {}
        for aid in ids:
            w = self.host.workers[aid]
            bpb = bpbs[aid]
            out[aid] = {**w.record(train_bpb=sum(bpb) / len(bpb) if bpb else math.nan), **self._where()}
            w.probe.publish(w)
        return out

    def run(self, steps: int, until: int | None = None, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """``steps`` batched rounds of every agent (an agent at step ``until`` or beyond sits out); agent
        id -> its chunk record (:meth:`AgentWorker.record` with ``train_bpb``, ``pid``, ``node``, ``host``).
        ``ids``: only those of its agents (the driver's members of it: a host Ray restarted rebuilds the
        agents it was made with, one that left since among them, and must not step that one)."""
        return self._chunk(self.agents() if ids is None else [a for a in self.agents() if a in ids], steps, until)

    def run_agent(self, agent_id: str, steps: int) -> dict[str, Any]:
        """``steps`` steps of one agent alone (as :meth:`cluster.actors.AgentActor.run`); its record."""
        return self._chunk([agent_id], steps, None)[agent_id]

    def checkpoint(self, agent_id: str | None = None) -> int | dict[str, int]:
        """Checkpoint one agent (the step it holds) or, with None, every agent (id -> step)."""
        if agent_id is not None:
            return self._worker(agent_id).checkpoint()
        return {a: w.checkpoint() for a, w in self.host.workers.items()}

    def remove_agent(self, agent_id: str) -> int:
        """Checkpoint ``agent_id`` and stop hosting it (it left the run; its store keeps it); the step
        its checkpoint holds. Its stack stays on the base, unused, until the host ends."""
        step = self._worker(agent_id).checkpoint()
        self.host.remove(agent_id)
        return step

    def respond(self, agent_id: str, prompt: bytes, max_new_tokens: int = 32) -> dict[str, Any]:
        """:meth:`AgentWorker.respond` of one agent: its own levels and trajectory cache only."""
        w = self._worker(agent_id)
        out = w.respond(prompt, max_new_tokens)
        w.probe.publish(w)  # its cache counters changed
        return out

    def status(self, agent_id: str | None = None) -> dict[str, Any]:
        """One agent's record plus ``pid``, ``node`` and ``host``; with None, every agent's (id -> record)."""
        if agent_id is not None:
            return {**self._worker(agent_id).record(), **self._where()}
        return {a: {**w.record(), **self._where()} for a, w in self.host.workers.items()}

    def evaluate(self, agent_id: str, levels: list[str] | None = None, windows=None) -> float:
        """Bits per byte of one agent on ``windows`` (default: its held-out windows) with ``levels``."""
        return self._worker(agent_id).agent.evaluate(levels, windows)

    def held_out(self, agent_id: str):
        """One agent's held-out :class:`agents.text.Windows`."""
        return self._worker(agent_id).agent.workload.held_out

    def level_state(self, agent_id: str) -> dict[str, dict[str, torch.Tensor]]:
        """One agent's levels: level -> module -> B (CPU copies), to compare where it ran."""
        stack = self._worker(agent_id).agent.stack
        return {lvl: {m: t.detach().cpu().clone() for m, t in stack.level_state(lvl).items()} for lvl in stack.levels}


class _AgentMethod:
    """A host method bound to one agent: ``.remote(*args)`` calls ``method.remote(agent_id, *args)``."""

    def __init__(self, method, agent_id: str) -> None:
        self.method, self.agent_id = method, agent_id

    def remote(self, *args: Any, **kwargs: Any):
        """The ObjectRef of the host's call for this agent."""
        return self.method.remote(self.agent_id, *args, **kwargs)


class HostedAgent:
    """One agent of a host, addressed like an agent actor's handle (``.run.remote(n)`` etc.)."""

    def __init__(self, host, agent_id: str) -> None:
        """``host``: an ``AgentHostActor`` handle; ``agent_id``: one of its agents."""
        self.host, self.agent_id = host, agent_id

    @property
    def run(self) -> _AgentMethod:
        """:meth:`AgentHostActor.run_agent` for this agent."""
        return _AgentMethod(self.host.run_agent, self.agent_id)

    @property
    def checkpoint(self) -> _AgentMethod:
        """:meth:`AgentHostActor.checkpoint` of this agent."""
        return _AgentMethod(self.host.checkpoint, self.agent_id)

    @property
    def respond(self) -> _AgentMethod:
        """:meth:`AgentHostActor.respond` as this agent."""
        return _AgentMethod(self.host.respond, self.agent_id)

    @property
    def status(self) -> _AgentMethod:
        """:meth:`AgentHostActor.status` of this agent."""
        return _AgentMethod(self.host.status, self.agent_id)

    @property
    def evaluate(self) -> _AgentMethod:
        """:meth:`AgentHostActor.evaluate` of this agent."""
        return _AgentMethod(self.host.evaluate, self.agent_id)

    @property
    def held_out(self) -> _AgentMethod:
        """:meth:`AgentHostActor.held_out` of this agent."""
        return _AgentMethod(self.host.held_out, self.agent_id)

    @property
    def level_state(self) -> _AgentMethod:
        """:meth:`AgentHostActor.level_state` of this agent."""
        return _AgentMethod(self.host.level_state, self.agent_id)


def agent_host(name: str, specs: list, *, namespace: str, num_cpus: float, configs: dict[str, Any], **kwargs):
    """Get or create the named host of ``specs`` (spread over the cluster's nodes). On CUDA it asks Ray
    for ``agent.gpus_per_agent`` of a GPU per agent, one whole GPU at most (``configs['agent'].device``
    is fixed here as for an agent actor: :func:`cluster.actors.agent_resources`)."""
    configs, gpus = agent_resources(configs, float(ray.cluster_resources().get("GPU", 0)))
    return AgentHostActor.options(name=name, namespace=namespace, get_if_exists=True, num_cpus=num_cpus,
                                  num_gpus=min(1.0, gpus * len(specs)), scheduling_strategy="SPREAD").remote(
        name, specs, configs=configs, namespace=namespace, **kwargs)
