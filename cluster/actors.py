"""Ray actors: thin wrappers that hold state and call the plain classes (DESIGN section 7).

``LevelServerActor`` wraps :class:`cluster.server.LevelServer`; ``AgentActor`` wraps
:class:`cluster.worker.AgentWorker`. Both are named actors in the run's namespace
(``get_if_exists``), restarted by Ray without limit (calls in flight are retried), and
their constructors recover from their stores, so a restart loses nothing acknowledged.
A server with a parent forwards and proposes upward through :class:`cluster.linked.LinkedLevel`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
import torch

from cluster.linked import LinkedLevel
from cluster.server import LevelServer, ServerConfig
from cluster.worker import AgentWorker, RuntimeConfig
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig


class RemoteLevel:
    """A level server actor seen through the plain ``LevelClient`` interface (blocking calls)."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def push(self, sender: str, seq: int, base_version: int, tensors: dict) -> dict:
        return ray.get(self.handle.push.remote(sender, seq, base_version, tensors))

    def pull(self, since_version: int = -1) -> dict:
        return ray.get(self.handle.pull.remote(since_version))

    def propose(self, sender: str, proposals: list) -> dict:
        return ray.get(self.handle.propose.remote(sender, proposals))

    def seen(self, sender: str) -> int:
        return ray.get(self.handle.seen.remote(sender))


@ray.remote(max_restarts=-1, max_task_retries=-1)
class LevelServerActor:
    """One shared level instance, e.g. ``swarm/text``; method calls run one at a time."""

    def __init__(self, name: str, shapes: dict[str, tuple[int, int]], store_dir: str, config_hash: str,
                 merge: MergeConfig, dynamics: DynamicsConfig, circuits: CircuitsConfig, server: ServerConfig,
                 parent: str | None = None, namespace: str | None = None, children: int = 1) -> None:
        self.core = LevelServer(name, shapes, merge=merge, dynamics=dynamics, circuits=circuits, server=server,
                                store_dir=Path(store_dir), config_hash=config_hash, parent=parent, children=children)
        self.level = LinkedLevel(self.core, RemoteLevel(ray.get_actor(parent, namespace=namespace)) if parent else None)

    def push(self, sender: str, seq: int, base_version: int, tensors: dict) -> dict[str, Any]:
        return self.level.push(sender, seq, base_version, tensors)

    def pull(self, since_version: int = -1) -> dict[str, Any]:
        return self.core.pull(since_version)

    def propose(self, sender: str, proposals: list) -> dict[str, Any]:
        return self.core.propose(sender, proposals)

    def seen(self, sender: str) -> int:
        return self.core.seen(sender)

    def absorb(self, tensors: dict, source: str) -> dict[str, Any]:
        return self.core.absorb(tensors, source)

    def status(self) -> dict[str, Any]:
        c = self.core
        return {"name": c.name, "version": c.version, "pending": len(c.window), "stats": c.stats,
                "last_seq": dict(c.last_seq), "warnings": list(c.warnings), "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(),
                "outbox": len(c.uplink.outbox) if c.uplink is not None else 0, **c.optimizer.report()}

    def checkpoint(self) -> int:
        self.core.checkpoint()
        return self.core.version

    def info(self) -> dict[str, Any]:
        c = self.core
        return {"name": c.name, "version": c.version, "parent": c.parent, "shapes": dict(c.shapes)}

    def circuits(self) -> list[dict[str, Any]]:
        return self.core.tracked_circuits()

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.core.events_since(since)


def level_server(name: str, *, namespace: str, shapes: dict[str, tuple[int, int]], store_dir: str | Path,
                 config_hash: str, merge: MergeConfig | None = None, dynamics: DynamicsConfig | None = None,
                 circuits: CircuitsConfig | None = None, server: ServerConfig | None = None,
                 parent: str | None = None, children: int = 1, resources: dict[str, float] | None = None):
    """Get or create the named server actor of one shared level (``resources`` places it, e.g. on the head).

    A parent must exist first: create servers top-down (``Topology.servers`` is in that order).
    """
    return LevelServerActor.options(name=name, namespace=namespace, get_if_exists=True, num_cpus=0,
                                    resources=resources or {}).remote(
        name, shapes, str(store_dir), config_hash, merge or MergeConfig(), dynamics or DynamicsConfig(),
        circuits or CircuitsConfig(), server or ServerConfig(), parent, namespace, children)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentActor:
    """One agent: builds its model, finds its servers by name, resumes from its own checkpoint."""

    def __init__(self, spec, configs: dict[str, Any], routes: dict[str, str], namespace: str, store_dir: str,
                 config_hash: str, runtime: RuntimeConfig, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        from agents.agent import Agent

        agent = Agent(spec, **configs)
        servers = {level: RemoteLevel(ray.get_actor(name, namespace=namespace)) for level, name in routes.items()}
        self.worker = AgentWorker(agent, servers, runtime, store_dir=store_dir, config_hash=config_hash)
        self.node = ray.get_runtime_context().get_node_id()  # which Ray node runs this agent

    def run(self, steps: int) -> dict[str, Any]:
        return {**self.worker.run(steps), "node": self.node}

    def checkpoint(self) -> int:
        return self.worker.checkpoint()

    def respond(self, prompt: bytes, max_new_tokens: int = 32) -> dict[str, Any]:
        return self.worker.respond(prompt, max_new_tokens)

    def status(self) -> dict[str, Any]:
        return {**self.worker.record(), "pid": os.getpid(), "node": self.node}

    def evaluate(self, levels: list[str] | None = None, windows=None) -> float:
        return self.worker.agent.evaluate(levels, windows)

    def held_out(self):
        """This agent's held-out windows (N, T+1), to evaluate others on them."""
        return self.worker.agent.workload.held_out


def agent_actor(spec, *, namespace: str, num_cpus: float, **kwargs):
    """Get or create the named actor of one agent (named by its id), spread over the cluster's nodes."""
    return AgentActor.options(name=f"agent/{spec.id}", namespace=namespace, get_if_exists=True,
                              num_cpus=num_cpus, scheduling_strategy="SPREAD").remote(
        spec, namespace=namespace, **kwargs)
