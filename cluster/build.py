"""The level servers of a topology, as specs, and the shapes of their tensors: the one place that decides
how each server is built, for ``swarm run`` (Ray actors), ``swarm absorb`` (cores recovered from their
stores) and the experiments (linked cores in one process) alike.

Per server: its name, level, parent, members and children come from
:class:`~cluster.topology.Topology`; its merge window is ``server.window`` at the first shared
level (the team servers) and ``server.upper_window`` above it (default: its number of children,
so one forward from each child on average, following members as they join and leave); its step
size ``server.lr`` at the first shared level and ``server.upper_lr`` (default ``lr``) above; its store
directory is given by the caller (the run directory owns its layout).
Building a server the same way everywhere is what lets ``swarm absorb`` replay a run's journals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.config import ModelConfig
from agents.model import build_model
from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.forwarding import LinkedLevel
from cluster.topology import Topology, check_members
from layers import LevelsConfig, LevelStack
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig

Shapes = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class LevelSpec:
    """Everything one level server is built from (besides the tensor shapes).

    Attributes:
        name: the server (and Ray actor) name, e.g. ``swarm/text``.
        level: the level it holds, e.g. ``swarm``.
        parent: the server above it (None at the top).
        children: distinct proposers a consensus round waits for (at the start: members change it).
        server: the ``server`` section with ``window`` and ``lr`` resolved for this server.
        merge, dynamics, circuits: the level's merge, dynamics and circuit settings.
        store_dir: its checkpoints and journal (None: in memory only).
        config_hash: the run's config hash (a store written under another hash is refused).
        levels: the levels config whose ``max_rank``/``grow_after``/``grow_step`` drive the level's
            automatic growth (:mod:`cluster.level.growth`; None: no automatic growth).
        members: its children's names, sorted (:mod:`cluster.level.membership`; empty: only their
            number ``children`` is known); when given, ``children`` is their number.
        window_follows_members: ``server.window`` was sized from ``children`` (an upper level without
            ``server.upper_window``), so the merge window follows the members as they join and leave.

    Raises ``ValueError`` when ``members`` are not sorted distinct names numbering ``children``.
    """

    name: str
    level: str
    parent: str | None
    children: int
    server: ServerConfig
    merge: MergeConfig
    dynamics: DynamicsConfig
    circuits: CircuitsConfig
    store_dir: str | None = None
    config_hash: str = ""
    levels: LevelsConfig | None = None
    members: tuple[str, ...] = ()
    window_follows_members: bool = False

    def __post_init__(self) -> None:
        check_members(self.name, self.children, self.members)


def merge_window(server: ServerConfig, *, first: bool, children: int) -> int:
    """Pushes per merge: ``server.window`` at the first shared level, else ``server.upper_window`` or
    ``children``."""
    return server.window if first else server.upper_window or children


def server_section(server: ServerConfig, *, first: bool, children: int) -> ServerConfig:
    """The ``server`` section as one server applies it: its merge window and its step size
    (``server.lr`` at the first shared level, else ``server.upper_lr`` or ``server.lr``)."""
    lr = server.lr if first or server.upper_lr is None else server.upper_lr
    return dataclasses.replace(server, window=merge_window(server, first=first, children=children), lr=lr)


def level_specs(topology: Topology, *, server: ServerConfig, merge: MergeConfig, dynamics: DynamicsConfig,
                circuits: CircuitsConfig, stores: Callable[[str], str | Path] | None = None,
                config_hash: str = "", levels: LevelsConfig | None = None) -> list[LevelSpec]:
    """One spec per server of ``topology``, parents before children (the order to create them in).

    ``stores`` maps a server name to its store directory (None: no stores, nothing durable);
    ``levels``: the levels config for automatic growth (None: off).
    """
    first = topology.levels[0] if topology.levels else None
    return [LevelSpec(s.name, s.level, s.parent, s.children,
                      server_section(server, first=s.level == first, children=s.children),
                      merge, dynamics, circuits, None if stores is None else str(stores(s.name)), config_hash,
                      levels, s.members, s.level != first and server.upper_window is None)
            for s in topology.servers]


def level_shapes(model: ModelConfig, levels: LevelsConfig) -> Shapes:
    """Shape (d_out, R) of every adapted module's B, from a throwaway stack over the configured model."""
    stack = LevelStack.attach(build_model(model), levels)
    return {n: tuple(m.B[levels.names[-1]].shape) for n, m in stack.modules.items()}


def build_core(spec: LevelSpec, shapes: Shapes) -> LevelCore:
    """The level core of ``spec`` (recovered from its store when it has one; see :class:`LevelCore`)."""
    return LevelCore(spec.name, shapes, merge=spec.merge, dynamics=spec.dynamics, circuits=spec.circuits,
                     server=spec.server, store_dir=spec.store_dir, config_hash=spec.config_hash,
                     parent=spec.parent, children=spec.children, growth=spec.levels, members=spec.members,
                     window_follows_members=spec.window_follows_members)


def link_levels(specs: list[LevelSpec], shapes: Shapes) -> dict[str, LinkedLevel]:
    """Every level of ``specs`` (parents first) built and linked to its parent in this process, by name.

    Raises ``KeyError`` when a parent comes after its child or is missing.
    """
    levels: dict[str, LinkedLevel] = {}
    for spec in specs:
        levels[spec.name] = LinkedLevel(build_core(spec, shapes), levels[spec.parent] if spec.parent else None)
    return levels
