"""Where the query service reads a run's level servers from: live Ray actors, or a stopped run's checkpoints.

Both backends offer the same surface to :class:`swarm.api.servicer.SharedMemoryService`:
``specs`` (server name -> spec with ``level`` and ``parent``), ``namespace``, ``agent_ids``,
``live``, ``where`` (a phrase naming the source), ``call(name, method, *args)`` for the level
methods ``pull``, ``info``, ``circuits``, ``status`` and ``events`` (those of
:class:`cluster.actors.LevelServerActor`), ``agent(id)`` (a running agent's actor, or its
:class:`cluster.host_actor.HostedAgent` view when it runs in an agent host; None when not running),
``agent_status(id)``, ``statuses()`` (every level's status and every agent's record at once, for
``Stats``), ``changed()`` (this process changed an agent: the next ``statuses()`` must show it)
``route(agent_id)`` (its team's servers) and ``refresh()`` (follow agents that joined or left:
``agent_ids`` and ``members``, agent id -> its :class:`agents.topology.AgentSpec`).

:class:`RayLevels` answers ``statuses()`` from the snapshots the servers and agents publish in
Ray's internal KV (:mod:`cluster.snapshots`), never from an actor call (an agent busy with a
chunk of steps answers one only when the chunk ends), read at most ``serve.level_ttl_ms`` ago.

:class:`CheckpointLevels` serves a finished or stopped run without Ray: every level server is
rebuilt from a *copy* of its store (checkpoint + journal replay, exactly what ``--resume`` would
recover), so the run directory is never written, even when a torn journal tail would be cut. The
status counters come from the run's last ``status.json``; there are no events and no agents.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.topology import AgentSpec
from cluster.renewing import RenewingRead
from cluster.snapshots import Snapshot, SnapshotCache, Snapshots, StatusBoard
from cluster.topology import Topology
from swarm.rundir import RunDir, liveness_of

ROSTER_TTL_S = 1.0  # how old the live roster a call reads may be (seconds) when it names known agents


class RayLevels:
    """The level servers of one live run, by name (handles looked up in the run's namespace)."""

    live = True

    def __init__(self, topology: Topology, namespace: str, status_ttl_s: float = 0.05) -> None:
        """``ValueError`` (Ray's) when a server of ``topology`` has no actor in ``namespace``.
        ``status_ttl_s``: how old the snapshots ``statuses()`` answers with may be (``serve.level_ttl_ms``)."""
        import ray

        self.topology = topology
        self.specs = {s.name: s for s in topology.servers}
        self.handles = {name: ray.get_actor(name, namespace=namespace) for name in self.specs}
        self.namespace = namespace
        self.where = f"Ray namespace {namespace}"  # where the levels come from, for people
        self.agent_ids = [a.id for a in topology.agents]
        self.members = {a.id: a for a in topology.agents}
        self.snapshots = SnapshotCache(StatusBoard(namespace), status_ttl_s)
        from swarm.api.membership import board_of

        self.board = board_of(namespace)  # the run's roster as agents join and leave (None: a fixed one)
        self.roster = None if self.board is None else RenewingRead(  # agent id -> {name, team, domain}
            lambda: self.board.roster.remote(), max(status_ttl_s, ROSTER_TTL_S), name="roster")
        self._view: tuple[Snapshots, Snapshots] | None = None  # (a read, what statuses() made of it)
        self._host_of: dict[str, str] = {}  # agent id -> the name of the host actor that holds it

    async def statuses(self) -> Snapshots:
        """Every level server's status JSON and every agent's record that were published (an agent that
        never published is left out; a server that never published is asked over Ray). The same read
        gives the very same object, so a caller may key what it derives from it by identity."""
        snaps = await self.snapshots.get()
        await self.refresh()  # a change of members drops the view
        if self._view is not None and self._view[0] is snaps:
            return self._view[1]
        levels = {n: snaps.levels[n] for n in self.specs if n in snaps.levels}
        complete = len(levels) == len(self.specs)
        for name in self.specs:
            if name not in levels:  # started before snapshots existed, or its first publish failed
                levels[name] = Snapshot(time.time(), await self.call(name, "status"))
        agents = {a: snaps.agents[a] for a in self.agent_ids if a in snaps.agents}
        view = Snapshots(levels, agents, snaps.read_at)
        if complete:
            self._view = (snaps, view)
        return view

    async def refresh(self, force: bool = False) -> bool:
        """Follow the run's membership board: True when this call saw the members change. The roster
        used is at most ``ROSTER_TTL_S`` old and renewed in the background (a Ray call, which a busy
        node makes slow: every concurrent ``Stats`` used to await it once a second), or
        read after this call began when ``force``: callers force it for a name they do not know and
        after a change of their own, so only a change made through another process can be that late."""
        if self.roster is None:
            return False
        roster = await self.roster.get(force)
        if list(roster) == self.agent_ids:
            return False
        self.members = {a: self.members.get(a) or AgentSpec(m["name"], m["team"], m["domain"])
                        for a, m in roster.items()}
        self.agent_ids = list(roster)
        self._view = None  # statuses() lists the new members
        return True

    def changed(self) -> None:
        """This process just changed an agent (an answer through its cache): the next ``statuses()`` reads anew."""
        self.snapshots.invalidate()

    async def call(self, name: str, method: str, *args: Any) -> Any:
        """Await ``method(*args)`` on the level server actor ``name``; its return value (Ray errors propagate)."""
        return await getattr(self.handles[name], method).remote(*args)

    def agent(self, agent_id: str):
        """A running agent's actor (``run.agents_per_host`` 1), or a view of it inside its host whose calls
        reach that agent only (:class:`cluster.host_actor.HostedAgent`); None (unknown id, or not alive)."""
        import ray

        from cluster.host_actor import HostedAgent

        if agent_id not in self.agent_ids:
            return None
        try:
            return ray.get_actor(f"agent/{agent_id}", namespace=self.namespace)
        except ValueError:
            pass
        if agent_id not in self._host_of:  # the host's name is in the agent's published record
            snap = StatusBoard(self.namespace).read().agents.get(agent_id)
            host = snap.status.get("host") if snap is not None else None
            if not host:
                return None
            self._host_of[agent_id] = host
        try:
            return HostedAgent(ray.get_actor(self._host_of[agent_id], namespace=self.namespace), agent_id)
        except ValueError:
            self._host_of.pop(agent_id)  # gone (a stopped run); a later run may place it elsewhere
            return None

    async def agent_status(self, agent_id: str) -> dict[str, Any] | None:
        """The running agent's record (:meth:`cluster.actors.AgentActor.status`, or its host's
        :meth:`cluster.host_actor.AgentHostActor.status` of it); None when it is not alive."""
        actor = self.agent(agent_id)
        return None if actor is None else await actor.status.remote()

    def route(self, agent_id: str) -> list[str]:
        """The shared-level servers the agent ``agent_id`` pushes to and pulls from (its team's chain)."""
        return team_route(self.topology, self.members, agent_id)


class CheckpointLevels:
    """The level servers of a finished or stopped run, recovered read-only from copies of their stores.

    Attributes (besides the common surface): ``state`` (the run's last status state, e.g.
    ``finished``, or ``dead`` when it says running but its driver is gone: :func:`swarm.rundir.liveness_of`),
    ``versions`` (server -> recovered version), ``warnings`` (what recovery reported).
    """

    live = False

    def __init__(self, cfg, run: RunDir) -> None:
        """``cfg``: the run's SwarmConfig; ``run``: its directory. ``FileNotFoundError`` when a server has
        no store (the run never started); ``ValueError`` when a store was written under another config."""
        from cluster.build import build_core, level_shapes, level_specs
        from swarm.config import config_hash

        self.topology = Topology(cfg.workload, cfg.levels.names[2:])
        self.namespace = run.namespace
        self.where = f"{run.path} (from its checkpoints)"
        self.members = {a.id: a for a in self.topology.agents}
        for m in run.read_members():  # the members at the run's end (swarm agents add/remove)
            if m["op"] == "add":
                self.members[m["agent"]] = AgentSpec(m["name"], m["team"], m["domain"])
            else:
                self.members.pop(m["agent"], None)
        self.agent_ids = list(self.members)
        try:
            self.snapshot = run.read_status()
        except FileNotFoundError:
            self.snapshot = {}
        # a status that still says running after its driver died reads "dead"
        self.state = liveness_of(self.snapshot).state if self.snapshot else "stopped"
        missing = [s.name for s in self.topology.servers if not run.level_store(s.name).is_dir()]
        if missing:
            raise FileNotFoundError(f"{run.path}: no checkpoints of {', '.join(missing)} under "
                                    f"{run.path / 'levels'} (did the run start?)")
        self._copy = tempfile.TemporaryDirectory(prefix="swarm-serve-")
        copies = {}
        for s in self.topology.servers:  # recovery may cut a torn journal tail: only ever in the copy
            copies[s.name] = Path(self._copy.name) / s.name
            shutil.copytree(run.level_store(s.name), copies[s.name],
                            ignore=shutil.ignore_patterns(".tmp-*"))
        specs = level_specs(self.topology, server=cfg.server, merge=cfg.merge, dynamics=cfg.dynamics,
                            circuits=cfg.circuits, stores=copies.__getitem__, config_hash=config_hash(cfg))
        shapes = level_shapes(cfg.model, cfg.levels)
        self.specs = {s.name: s for s in specs}
        self.cores = {s.name: build_core(s, shapes) for s in specs}  # parents first, as recovery expects
        self.versions = {n: c.version for n, c in self.cores.items()}
        self.warnings = [f"{n}: {w}" for n, c in self.cores.items() for w in c.warnings]

    async def call(self, name: str, method: str, *args: Any) -> Any:
        """The level method ``method`` of the recovered server ``name`` (same answers as the live actor;
        ``status`` from the run's last status.json when it has the server; ``events``: none)."""
        core = self.cores[name]
        if method == "pull":
            return core.pull(*args)
        if method == "info":
            return {"name": core.name, "version": core.version, "parent": core.parent, "shapes": dict(core.shapes)}
        if method == "circuits":
            return core.tracked_circuits()
        if method == "status":
            return self.snapshot.get("servers", {}).get(name) or core.status().to_dict()
        if method == "events":
            return []
        raise AttributeError(f"{name}: level servers have no method {method!r}")

    def agent(self, agent_id: str) -> None:
        """No agent runs in a stopped run."""
        return None

    async def agent_status(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's record in the run's last status.json (None when it has none)."""
        return self.snapshot.get("agents", {}).get(agent_id)

    async def statuses(self) -> Snapshots:
        """Every server's and agent's status as the run's last status.json holds them (a server it lacks:
        as recovered from its checkpoints), stamped with that file's last update."""
        when = float(self.snapshot.get("updated", 0.0))
        levels = {n: Snapshot(when, await self.call(n, "status")) for n in self.specs}
        agents = {a: Snapshot(when, r) for a in self.agent_ids if (r := await self.agent_status(a)) is not None}
        return Snapshots(levels, agents, time.time())

    def changed(self) -> None:
        """Nothing changes in a stopped run."""

    async def refresh(self, force: bool = False) -> bool:
        """Nobody joins or leaves a stopped run."""
        return False

    def route(self, agent_id: str) -> list[str]:
        """The shared-level servers of the agent ``agent_id``'s team chain."""
        return team_route(self.topology, self.members, agent_id)

    def close(self) -> None:
        """Remove the copies of the stores."""
        self._copy.cleanup()


def team_route(topology: Topology, members: dict[str, AgentSpec], agent_id: str) -> list[str]:
    """The servers of ``agent_id``'s team chain (an agent that joined: its team's, which every team has
    in the topology); ``KeyError`` for a non-member."""
    if agent_id in topology.routes:
        return sorted(topology.route(agent_id).values())
    team = members[agent_id].swarm
    return sorted(topology.route(next(a.id for a in topology.agents if a.swarm == team)).values())
