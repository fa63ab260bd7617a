"""Ray actors: thin wrappers that hold state and call the plain classes (DESIGN section 7).

``LevelServerActor`` wraps a :class:`cluster.level.core.LevelCore` linked to its parent by a
:class:`cluster.level.forwarding.LinkedLevel`; ``AgentActor`` wraps
:class:`cluster.worker.AgentWorker`. Both are named actors in the run's namespace
(``get_if_exists``), restarted by Ray without limit (calls in flight are retried), and
their constructors recover from their stores, so a restart loses nothing acknowledged.

Devices (docs/gpu.md): level servers always run on CPU and ask for no GPU. An agent actor
asks Ray for ``agent.gpus_per_agent`` of a GPU when it runs on CUDA (``agent.device`` cuda,
or auto on a cluster with GPUs); everything it sends or stores is on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import ray
import torch
from torch import Tensor

from agents.device import placement
from cluster.build import LevelSpec, Shapes, build_core
from cluster.config import RuntimeConfig
from cluster.level.forwarding import LinkedLevel
from cluster.level.protocol import Coverage, ProposeResult, PullReply, PushResult
from cluster.metrics import LiveAgentProbe, LiveLevelProbe
from cluster.snapshots import StatusBoard
from cluster.worker import AgentWorker
from layers.circuits import Proposal


class RemoteLevel:
    """A level server actor seen through the plain ``LevelClient`` interface (blocking ``ray.get``;
    raises what Ray raises when the actor is gone for good)."""

    def __init__(self, handle) -> None:
        """``handle``: a ``LevelServerActor`` handle."""
        self.handle = handle

    def push(self, sender: str, seq: int, base_version: int, tensors: dict[str, Tensor],
             first_step: int | None = None, last_step: int | None = None) -> PushResult:
        """See :meth:`cluster.level.protocol.LevelClient.push`."""
        return ray.get(self.handle.push.remote(sender, seq, base_version, tensors, first_step, last_step))

    def pull(self, since_version: int = -1) -> PullReply:
        """See :meth:`cluster.level.protocol.LevelClient.pull`."""
        return ray.get(self.handle.pull.remote(since_version))

    def propose(self, sender: str, proposals: list[Proposal]) -> ProposeResult:
        """See :meth:`cluster.level.protocol.LevelClient.propose`."""
        return ray.get(self.handle.propose.remote(sender, proposals))

    def seen(self, sender: str) -> int:
        """See :meth:`cluster.level.protocol.LevelClient.seen`."""
        return ray.get(self.handle.seen.remote(sender))

    def covered(self, sender: str) -> Coverage:
        """See :meth:`cluster.level.protocol.LevelClient.covered`."""
        return ray.get(self.handle.covered.remote(sender))


@ray.remote(max_restarts=-1, max_task_retries=-1)
class LevelServerActor:
    """One shared level instance, e.g. ``swarm/text``; method calls run one at a time.

    The level methods are those of :class:`cluster.level.core.LevelCore` (pushes go through the
    link, so they are forwarded upward); ``status`` adds the process id and Ray node.
    """

    def __init__(self, spec: LevelSpec, shapes: Shapes, namespace: str | None = None) -> None:
        """Recovers from ``spec.store_dir``; a server with a parent finds it by name in ``namespace``."""
        self.core = build_core(spec, shapes)
        parent = RemoteLevel(ray.get_actor(spec.parent, namespace=namespace)) if spec.parent else None
        self.level = LinkedLevel(self.core, parent)
        board = StatusBoard(namespace or ray.get_runtime_context().namespace)  # Stats reads it (cluster/snapshots.py)
        self.core.probe = LiveLevelProbe(spec.name, board)
        self._changed()

    def push(self, sender: str, seq: int, base_version: int, tensors: dict[str, Tensor],
             first_step: int | None = None, last_step: int | None = None) -> PushResult:
        """:meth:`LinkedLevel.push`: admitted, journaled, merged when due, forwarded upward."""
        out = self.level.push(sender, seq, base_version, tensors, first_step, last_step)
        self.core.probe.pushed(sender, tensors, out)
        return self._changed(out)

    def pull(self, since_version: int = -1) -> PullReply:
        """:meth:`LevelCore.pull`."""
        return self.core.pull(since_version)

    def propose(self, sender: str, proposals: list[Proposal]) -> ProposeResult:
        """:meth:`LinkedLevel.propose`: consensus here, and what it added goes upward at once."""
        return self._changed(self.level.propose(sender, proposals))

    def seen(self, sender: str) -> int:
        """:meth:`LevelCore.seen`."""
        return self.core.seen(sender)

    def covered(self, sender: str) -> Coverage:
        """:meth:`LevelCore.covered`."""
        return self.core.covered(sender)

    def absorb(self, tensors: dict[str, Tensor], source: str) -> PushResult:
        """:meth:`LevelCore.absorb`."""
        return self._changed(self.core.absorb(tensors, source))

    def add_member(self, member: str) -> dict[str, Any]:
        """:meth:`LevelCore.add_member` (:mod:`cluster.level.membership`), as a plain dict: ``ok``, ``code``
        (a ``RejectCode`` name, e.g. ``"DUPLICATE_MEMBER"``, or None), ``reason``, ``children``, ``version``."""
        return self._changed(self.core.add_member(member).to_dict())

    def remove_member(self, member: str) -> dict[str, Any]:
        """:meth:`LevelCore.remove_member`, as a plain dict (see :meth:`add_member`); the member's acknowledged
        pushes still merge, and what it sends later is refused (``NOT_MEMBER``)."""
        return self._changed(self.core.remove_member(member).to_dict())

    def status(self) -> dict[str, Any]:
        """The level's status JSON (:meth:`LevelStatus.to_dict`, with ``members`` and ``children``) plus ``pid``
        and ``node``."""
        return {**self.core.status().to_dict(), "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def checkpoint(self) -> int:
        """Checkpoint now; returns the version it holds."""
        self.core.checkpoint()
        return self._changed(self.core.version)

    def _changed(self, result=None):
        """Publish the status after a command (metrics gauges, the Stats snapshot); returns ``result``."""
        self.core.probe.changed(self.status())
        return result

    def info(self) -> dict[str, Any]:
        """``name``, ``version``, ``parent`` and ``shapes`` (module -> (d_out, R))."""
        c = self.core
        return {"name": c.name, "version": c.version, "parent": c.parent, "shapes": dict(c.shapes)}

    def circuits(self) -> list[dict[str, Any]]:
        """:meth:`LevelCore.tracked_circuits`."""
        return self.core.tracked_circuits()

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """:meth:`LevelCore.events_since` (numbering restarts with the process)."""
        return self.core.events_since(since)


def level_server(spec: LevelSpec, *, namespace: str, shapes: Shapes, resources: dict[str, float] | None = None):
    """Get or create the named server actor of ``spec`` (``resources`` places it, e.g. on the head).

    A parent must exist first: create servers top-down (:func:`cluster.build.level_specs` is in that order).
    """
    return LevelServerActor.options(name=spec.name, namespace=namespace, get_if_exists=True, num_cpus=0,
                                    resources=resources or {}).remote(spec, shapes, namespace)


def lower_priority(nice: int) -> int:
    """Lower this process's CPU priority to niceness ``nice`` (``run.agent_nice``; never raises it, which
    needs privileges); returns the niceness now."""
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    return current


@ray.remote(max_restarts=-1, max_task_retries=-1)
class AgentActor:
    """One agent: builds its model, finds its servers by name, resumes from its own checkpoint."""

    def __init__(self, spec, configs: dict[str, Any], routes: dict[str, str], namespace: str, store_dir: str,
                 config_hash: str, runtime: RuntimeConfig, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.nice = lower_priority(runtime.agent_nice)
        from agents.agent import Agent

        agent = Agent(spec, **configs)
        servers = {level: RemoteLevel(ray.get_actor(name, namespace=namespace)) for level, name in routes.items()}
        self.worker = AgentWorker(agent, servers, runtime, store_dir=store_dir, config_hash=config_hash)
        self.node = ray.get_runtime_context().get_node_id()  # which Ray node runs this agent
        self.worker.probe = LiveAgentProbe(spec, StatusBoard(namespace), {"pid": os.getpid(), "node": self.node})
        self.worker.probe.publish(self.worker)  # the step loop publishes at a bounded rate, chunk ends always

    def run(self, steps: int) -> dict[str, Any]:
        """:meth:`AgentWorker.run` for ``steps`` steps; its record plus the Ray ``node``."""
        out = {**self.worker.run(steps), "node": self.node}
        self.worker.probe.publish(self.worker)
        return out

    def checkpoint(self) -> int:
        """:meth:`AgentWorker.checkpoint`: the step the checkpoint holds."""
        return self.worker.checkpoint()

    def respond(self, prompt: bytes, max_new_tokens: int = 32) -> dict[str, Any]:
        """:meth:`AgentWorker.respond`."""
        out = self.worker.respond(prompt, max_new_tokens)
        self.worker.probe.publish(self.worker)  # its cache counters changed
        return out

    def status(self) -> dict[str, Any]:
        """:meth:`AgentWorker.record` plus ``pid`` and ``node``."""
        return {**self.worker.record(), "pid": os.getpid(), "node": self.node}

    def evaluate(self, levels: list[str] | None = None, windows=None) -> float:
        """Bits per byte of the agent on ``windows`` (default: its held-out windows) with ``levels``."""
        return self.worker.agent.evaluate(levels, windows)

    def held_out(self):
        """This agent's held-out :class:`agents.text.Windows`, to evaluate others on them."""
        return self.worker.agent.workload.held_out


def agent_resources(configs: dict[str, Any], cluster_gpus: float) -> tuple[dict[str, Any], float]:
    """``(configs, num_gpus)`` of an agent actor: ``configs`` with ``agent.device`` fixed to the device
    the actor will use (:func:`agents.device.placement`: ``auto`` decided by ``cluster_gpus``, a CUDA
    agent on the GPU Ray assigns it) and the share of a GPU it asks Ray for (0 on CPU)."""
    agent = configs.get("agent")
    if agent is None:
        return configs, 0.0
    device, gpus = placement(agent.device, agent.gpus_per_agent, cluster_gpus)
    return {**configs, "agent": dataclasses.replace(agent, device=device)}, gpus


def agent_actor(spec, *, namespace: str, num_cpus: float, configs: dict[str, Any], **kwargs):
    """Get or create the named actor of one agent (named by its id), spread over the cluster's nodes;
    on CUDA it asks for ``agent.gpus_per_agent`` of a GPU (:func:`agent_resources`)."""
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    configs, gpus = agent_resources(configs, cluster_gpus)
    if gpus and not cluster_gpus:
        warnings.warn(f"agent {spec.id}: agent.device={configs['agent'].device} asks Ray for {gpus} GPU but the "
                      "cluster has none now; the actor waits until a GPU node joins (an autoscaler's "
                      "gpu_agents node type, infra/cluster.yaml) - use agent.device=auto or cpu otherwise",
                      stacklevel=2)
    return AgentActor.options(name=f"agent/{spec.id}", namespace=namespace, get_if_exists=True,
                              num_cpus=num_cpus, num_gpus=gpus, scheduling_strategy="SPREAD").remote(
        spec, configs=configs, namespace=namespace, **kwargs)
