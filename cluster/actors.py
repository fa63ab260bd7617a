"""Ray actors: thin wrappers that hold state and call the plain classes (DESIGN section 7).

``LevelServerActor`` wraps :class:`cluster.server.LevelServer`. It is a named actor in
the run's namespace (``get_if_exists``), restarted by Ray without limit; its constructor
recovers from the level's store, so a restart comes back with every acknowledged push.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from cluster.server import LevelServer, ServerConfig
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig


@ray.remote(max_restarts=-1, max_task_retries=-1)
class LevelServerActor:
    """One shared level instance, e.g. ``swarm/text``; method calls run one at a time."""

    def __init__(self, name: str, shapes: dict[str, tuple[int, int]], store_dir: str, config_hash: str,
                 merge: MergeConfig, dynamics: DynamicsConfig, circuits: CircuitsConfig, server: ServerConfig) -> None:
        self.core = LevelServer(name, shapes, merge=merge, dynamics=dynamics, circuits=circuits, server=server,
                                store_dir=Path(store_dir), config_hash=config_hash)

    def push(self, sender: str, seq: int, base_version: int, tensors: dict) -> dict[str, Any]:
        return self.core.push(sender, seq, base_version, tensors)

    def pull(self, since_version: int = -1) -> dict[str, Any]:
        return self.core.pull(since_version)

    def propose(self, proposals: list) -> dict[str, Any]:
        return self.core.propose(proposals)

    def status(self) -> dict[str, Any]:
        c = self.core
        return {"name": c.name, "version": c.version, "pending": len(c.window), "stats": c.stats,
                "last_seq": dict(c.last_seq), "warnings": list(c.warnings), "pid": os.getpid()}

    def checkpoint(self) -> int:
        self.core.checkpoint()
        return self.core.version


def level_server(name: str, *, namespace: str, shapes: dict[str, tuple[int, int]], store_dir: str | Path,
                 config_hash: str, merge: MergeConfig | None = None, dynamics: DynamicsConfig | None = None,
                 circuits: CircuitsConfig | None = None, server: ServerConfig | None = None,
                 resources: dict[str, float] | None = None):
    """Get or create the named server actor of one shared level (``resources`` places it, e.g. on the head)."""
    return LevelServerActor.options(name=name, namespace=namespace, get_if_exists=True, num_cpus=0,
                                    resources=resources or {}).remote(
        name, shapes, str(store_dir), config_hash, merge or MergeConfig(), dynamics or DynamicsConfig(),
        circuits or CircuitsConfig(), server or ServerConfig())
