"""The runtime's config sections, ``server`` and ``run``: schema only (importing this loads no torch or Ray).

``swarm.config`` nests both in the run's config; :mod:`cluster.build` resolves the per-server
merge window from :class:`ServerConfig`; :class:`cluster.worker.AgentWorker` paces its exchanges
by :class:`RuntimeConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from layers.config import check_fields


@dataclass
class ServerConfig:
    """The ``server`` section: merge window, admission limits, step size, checkpoint period.

    Attributes:
        window: pushes per merge at the first shared level (team servers).
        upper_window: pushes per merge above it (None: the server's number of children, so one
            forward from each child on average).
        max_staleness: versions a push's base may lag behind before it is refused.
        max_norm: pushes with a larger L2 norm are refused.
        lr: the step size of the first shared level's servers (``step`` says what it sizes).
        upper_lr: the step size of the servers above it (None: ``lr``). They merge fewer times per
            run than the team servers below them (one forward sums several team merges), so at the
            same per-merge step they move less over a run (docs/experiments.md).
        step: how a merged gradient becomes the level's drive (:mod:`cluster.level.server_step`):
            ``rms`` scales it to unit RMS (every merge moves B by ``lr`` in RMS); ``adam`` keeps Adam
            moments of the merged gradients (FedAdam), so each coordinate moves by about ``lr``.
        checkpoint_every: merges between checkpoints.
        propose_every: merges between upward circuit proposals (servers with a parent).
        forward_every: at most this many merges between forwards to the parent (the server's sync
            gate's ``max_interval``); earlier, from ``forward_min`` merges on, when the gate finds the
            merged gradients summed since the last forward coherent (``dynamics.sync.alpha``). With
            ``dynamics.sync.enabled: false``, exactly every ``forward_every`` merges.
        forward_min: the fewest merges a coherent forward sums (the gate's ``min_interval``, capped
            at ``forward_every``; the test needs 2).

    Raises ``ValueError`` naming the first invalid field (``server.<field>``).
    """

    window: int = 4
    max_staleness: int = 8
    max_norm: float = 1e4
    lr: float = 1e-3
    checkpoint_every: int = 10
    propose_every: int = 5
    forward_every: int = 4
    forward_min: int = 2
    upper_window: int | None = None
    upper_lr: float | None = None
    step: str = "rms"

    def __post_init__(self) -> None:
        check_fields("server", self, step=self.step in ("rms", "adam"), window=self.window >= 1,
                     max_staleness=self.max_staleness >= 0,
                     checkpoint_every=self.checkpoint_every >= 1,
                     propose_every=self.propose_every >= 1, forward_every=self.forward_every >= 1,
                     forward_min=self.forward_min >= 1,
                     upper_window=self.upper_window is None or self.upper_window >= 1,
                     max_norm=math.isfinite(self.max_norm) and self.max_norm > 0,
                     lr=math.isfinite(self.lr) and self.lr > 0,
                     upper_lr=self.upper_lr is None or (math.isfinite(self.upper_lr) and self.upper_lr > 0))


@dataclass
class RuntimeConfig:
    """The ``run`` section: how long agents run and how often they talk to the servers.

    Attributes:
        steps: steps per agent in the run; None (``run.steps: null``): no end, the swarm learns
            until Ctrl-C, SIGTERM or ``swarm stop RUN_DIR`` (docs/durability.md).
        chunk: steps per actor call (the granularity of progress and Ctrl-C).
        pull_every, propose_every, eval_every, checkpoint_every: periods in agent steps.
        out_dir: parent of run directories; name: this run's directory (None: a timestamp).
        agent_cpus: CPUs reserved per agent actor (None: the machine's CPUs shared by the agents); with
            agent hosts, per agent of a host (a host of K agents reserves K times as much, capped by its node).
        agents_per_host: agents per host actor (:mod:`cluster.host_actor`, one frozen base for all of
            them): ``auto`` is one host per Ray node (one per GPU when agents run on CUDA); ``1`` is one
            plain agent actor per agent. Where an agent runs does not change what it learns: a run may
            resume with another value.
        agent_nice: the niceness agent actors and hosts lower themselves to (0-19; 0: as started). Training
            is batch work: the level servers, the driver and the query service keep the default priority,
            so on a node whose cores the agents fill they still answer in milliseconds (bench/learn.py,
            bench/grpc_stats.py); it changes no result, only who waits for a core.
        storage: where the level servers' and agents' stores live (None: inside the run directory):
            a local or NFS path, or a URI of a durable filesystem (``s3://bucket/prefix``, ``gs://...``);
            the run's stores go under ``<storage>/<run name>/`` (docs/durability.md).
        storage_options: options for that filesystem (e.g. ``{endpoint_url: http://...}``; secrets
            belong in the environment: ``AWS_ACCESS_KEY_ID``, ...).

    Raises ``ValueError`` naming the first invalid field (``run.<field>``).
    """

    steps: int | None = 200
    chunk: int = 10
    pull_every: int = 5
    propose_every: int = 25
    eval_every: int = 50
    checkpoint_every: int = 50
    out_dir: str = "runs"
    name: str | None = None
    agent_cpus: float | None = None
    storage: str | None = None
    storage_options: dict[str, Any] | None = None
    agents_per_host: str = "auto"
    agent_nice: int = 5

    def __post_init__(self) -> None:
        self.agents_per_host = str(self.agents_per_host).strip().lower()  # YAML may give an int
        check_fields("run", self, agents_per_host=self.agents_per_host == "auto" or (
            self.agents_per_host.isdigit() and int(self.agents_per_host) >= 1))
        check_fields("run", self, storage=self.storage is None or bool(str(self.storage).strip()),
                     **{k: getattr(self, k) >= 1 for k in (
            "chunk", "pull_every", "propose_every", "eval_every", "checkpoint_every")},
            steps=self.steps is None or self.steps >= 1,
            agent_cpus=self.agent_cpus is None or self.agent_cpus > 0, agent_nice=0 <= self.agent_nice <= 19)

    @property
    def per_host(self) -> int | None:
        """``agents_per_host`` as a number (None: ``auto``)."""
        return None if self.agents_per_host == "auto" else int(self.agents_per_host)
