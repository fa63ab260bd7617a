"""The dashboard's data: one run's levels, agents, events, curves and circuits, pushed to every open page.

A :class:`Feed` reads a run the way ``swarm serve`` does (:mod:`swarm.api.backends`): a live run
through its Ray namespace (:class:`RayLevels`: the status snapshots the servers and agents publish
in Ray's internal KV, no actor call per refresh; the servers' ``events(since)`` as ``Watch``
polls them), a finished or stopped one from copies of its stores (:class:`CheckpointLevels`, no
Ray). ``metrics.jsonl`` gives the history (curves, merge rates) from before the page opened.
Snippets come from :class:`swarm.api.circuit_snippets.SnippetFinder` in a worker thread, once
per level version and at most every ``circuits_every_s``.

Subscribers get dicts: ``{"type": "state", ...}`` (tree, curves, run), ``{"type": "event", ...}``
(each merge, promotion, refusal as it happens) and ``{"type": "circuits", ...}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

from swarm.dashboard.view import EVENTS_KEPT, Curves, MetricsTail, Rates, circuit_row, event_item, tree
from swarm.rundir import RunDir

CIRCUITS_PER_LEVEL = 8  # the most stable ones
START_WAIT_S = 600.0  # how long a page waits for the servers of a run that is still starting


class Feed:
    """Polls one run and broadcasts what changed (see the module doc).

    ``live``: True to read the run's actors (Ray must be initialised here, or joinable), False for its
    checkpoints, None to decide from its ``status.json`` (and fall back to the checkpoints when its actors
    cannot be reached). ``snippets``: snippets per circuit (0: none, no model is loaded).
    """

    def __init__(self, run_dir: str | Path, *, live: bool | None = None, snippets: int = 3, poll_s: float = 0.2,
                 circuits_every_s: float = 3.0) -> None:
        from swarm.config import load_config

        self.run = RunDir(run_dir).require_run()
        self.cfg = load_config(self.run.config)
        self.want_live, self.k, self.poll_s, self.circuits_every_s = live, snippets, poll_s, circuits_every_s
        self.levels = None  # RayLevels | CheckpointLevels, once started
        self.rates, self.curves, self.metrics = Rates(), Curves(), MetricsTail(self.run.metrics)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.circuits: dict[str, list[dict[str, Any]]] = {}
        self.state: dict[str, Any] = {}
        self.note = ""  # why the run is read from its checkpoints, for the page
        self.subscribers: set[asyncio.Queue] = set()
        self._seen: dict[str, int] = {}
        self._circuit_versions: dict[str, int] = {}
        self._finder = None
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the run (live or from checkpoints) and start polling in the running event loop."""
        await asyncio.to_thread(self._open)
        for rec in self.metrics.read():
            self._take_metric(rec)
        if self.levels.live:  # only what happens from now on is an event; the recent past fills the list
            for name in self.levels.specs:
                past = await self.levels.call(name, "events", 0)
                self._seen[name] = past[-1]["seq"] if past else 0
                self.events.extend(event_item(name, e) for e in past[-20:])
        await self._refresh()
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._circuits_loop())]

    async def stop(self) -> None:
        """Stop polling (and remove a copy of the stores)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hasattr(self.levels, "close"):
            self.levels.close()

    def _open(self) -> None:
        from cluster.topology import Topology
        from swarm.api.backends import CheckpointLevels, RayLevels

        self.topology = Topology(self.cfg.workload, self.cfg.levels.names[2:])
        live = self.want_live
        if live is None:
            live = self.run.liveness().live
        if live:
            deadline = time.monotonic() + START_WAIT_S
            try:
                import ray

                if not ray.is_initialized():  # (a process already in Ray, a driver or a test, is in the run's)
                    from swarm.ray_session import join_ray, run_ray_address

                    while self.want_live is None and not self._servers_up() and time.monotonic() < deadline:
                        time.sleep(1.0)  # a starting run's Ray and servers come up after its first status
                    if self.want_live is None and not self.run.liveness().live:
                        raise ValueError("it ended while starting")  # (read from its directory, below)
                    join_ray(self.run.namespace, run_ray_address(self.run))
                while True:
                    try:
                        self.levels = RayLevels(self.topology, self.run.namespace,
                                                self.cfg.serve.level_ttl_ms / 1000)
                        return
                    except ValueError:  # a run still starting creates its servers after its status
                        if time.monotonic() > deadline or not self.run.liveness().live:
                            raise
                        time.sleep(1.0)
            except (ConnectionError, ValueError) as e:
                if self.want_live:
                    raise
                self.note = f"its actors cannot be reached ({type(e).__name__}: {str(e).splitlines()[0]})"
        self.levels = CheckpointLevels(self.cfg, self.run)
        self.note = self.note or f"the run is {self.run.liveness().describe()}"

    def _servers_up(self) -> bool:
        """True once the run's status lists its level servers (written once its agents are built: its Ray is
        up, so joining "auto" finds it rather than an older local cluster), or once it is no longer live."""
        try:
            status = self.run.read_status()
        except (FileNotFoundError, ValueError):
            return False
        return bool(status.get("servers")) or not self.run.liveness().live

    def _reopen_offline(self) -> None:
        from swarm.api.backends import CheckpointLevels

        self.levels = CheckpointLevels(self.cfg, self.run)
        self.note = f"the run is {self.run.liveness().describe()}"
        self._circuit_versions.clear()

    def subscribe(self) -> asyncio.Queue:
        """A queue that receives every broadcast from now on (:meth:`unsubscribe` when done)."""
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        """Stop sending to ``q``."""
        self.subscribers.discard(q)

    def snapshot(self) -> dict[str, Any]:
        """Everything a newly opened page needs: the state, the recent events and the circuits tables."""
        return {"type": "snapshot", **self.state, "events": list(self.events), "circuits": self.circuits}

    def _broadcast(self, message: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            if q.full():  # a page that stopped reading: drop it (it reconnects and gets a snapshot)
                self.subscribers.discard(q)
            else:
                q.put_nowait(message)

    # ------------------------------------------------------------------ polling
    async def _poll(self) -> None:
        last_metrics = last_alive = 0.0
        while True:
            await asyncio.sleep(self.poll_s if self.levels.live else 1.0)  # nothing moves in a stopped run
            try:
                if self.levels.live and self.want_live is None and time.monotonic() - last_alive > 2.0:
                    last_alive = time.monotonic()
                    if not self.run.liveness().live:  # the run ended: its page goes on from its checkpoints
                        await asyncio.to_thread(self._reopen_offline)
                if self.levels.live:
                    await self._poll_events()
                if time.monotonic() - last_metrics > 1.0:
                    for rec in self.metrics.read():
                        self._take_metric(rec)
                    last_metrics = time.monotonic()
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the run ended under us (actors gone): keep the page, say so
                self.note = f"lost the live run ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                self.state = {**self.state, "run": {**self.state.get("run", {}), "note": self.note}}
                self._broadcast({"type": "state", **self.state})
                await asyncio.sleep(2.0)

    async def _poll_events(self) -> None:
        names = list(self.levels.specs)  # every server at once: one slow server does not delay the others
        answers = await asyncio.gather(*(self.levels.call(n, "events", self._seen.get(n, 0)) for n in names))
        for name, events in zip(names, answers, strict=True):
            if events and events[0]["seq"] <= self._seen.get(name, 0):  # a restarted server numbers anew
                self._seen[name] = 0
            for e in events:
                self._seen[name] = e["seq"]
                item = event_item(name, e)
                self.events.append(item)
                self._broadcast({"type": "event", **item})

    def _take_metric(self, rec: dict[str, Any]) -> None:
        if rec.get("kind") == "agent":
            self.curves.add(rec)
        elif rec.get("kind") == "server" and "name" in rec:
            self.rates.add(rec["name"], float(rec.get("time", 0.0)), int(rec.get("stats", {}).get("merges", 0)))

    async def _refresh(self) -> None:
        snaps = await self.levels.statuses()
        levels = {n: s.status for n, s in snaps.levels.items()}
        if self.levels.live:  # a stopped run's rates come from its metrics.jsonl history only
            for name, snap in snaps.levels.items():
                self.rates.add(name, snap.time, int(snap.status.get("stats", {}).get("merges", 0)))
        agents = {a: s.status for a, s in snaps.agents.items()}
        for rec in agents.values():
            self.curves.add(rec)
        state = self._state(levels, agents)
        if state != self.state:
            self.state = state
            self._broadcast({"type": "state", **state})

    def _state(self, levels: dict[str, Any], agents: dict[str, Any]) -> dict[str, Any]:
        from cluster.build import merge_window

        routes = {a.id: self.topology.route(a.id) for a in self.topology.agents}
        first = self.cfg.levels.names[2] if len(self.cfg.levels.names) > 2 else None
        windows = {s.name: merge_window(self.cfg.server, first=s.level == first, children=s.children)
                   for s in self.topology.servers}
        below = {s.name: [a for a, r in routes.items() if s.name in r.values()] for s in self.topology.servers}
        try:
            status = self.run.read_status()
        except (FileNotFoundError, ValueError):
            status = {}
        return {"tree": tree(self.topology.servers, routes, levels, agents, self.rates, self.curves),
                "windows": windows,
                "curves": {"agents": {a: self.curves.agent(a) for a in routes},
                           "levels": {s: self.curves.mean(ags) for s, ags in below.items()},
                           "below": below, "eval_every": self.cfg.run.eval_every},
                "run": {"name": self.run.path.name, "state": self.run.liveness().describe(),
                        "live": bool(self.levels.live), "namespace": self.run.namespace, "note": self.note,
                        "started": status.get("started"), "steps": self.cfg.run.steps}}

    # ------------------------------------------------------------------ circuits
    async def _circuits_loop(self) -> None:
        while True:
            try:
                changed = await self._update_circuits()
                if changed:
                    self._broadcast({"type": "circuits", "circuits": self.circuits})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # snippets are an extra: a failure shows as a note, polling goes on
                self.circuits["_error"] = [{"error": f"{type(e).__name__}: {e}"}]
            await asyncio.sleep(self.circuits_every_s)

    async def _update_circuits(self) -> bool:
        changed = False
        promotions = [e for e in self.events if e["kind"] == "promotion"]
        for name in self.levels.specs:
            version = (self.state.get("tree") and _find(self.state["tree"], name) or {}).get("version")
            if version is not None and self._circuit_versions.get(name) == version:
                continue
            found = sorted(await self.levels.call(name, "circuits"), key=lambda c: -c["score"])[:CIRCUITS_PER_LEVEL]
            if not found and not self.levels.live:  # trackers are not checkpointed: read the level's own matrices
                tensors = (await self.levels.call(name, "pull", -1))["tensors"]
                found = (await asyncio.to_thread(extracted, tensors, self.cfg.circuits))[:CIRCUITS_PER_LEVEL]
            snippets = await self._snippets(name, found)
            mine = [e for e in promotions if e["level"] == name]
            self.circuits[name] = [circuit_row(name, c, s, mine) for c, s in zip(found, snippets, strict=True)]
            self._circuit_versions[name] = version
            changed = True
        return changed

    async def _snippets(self, name: str, found: list[dict[str, Any]]) -> list[list]:
        if not self.k or not found:
            return [[] for _ in found]
        if self._finder is None:
            self._finder = await asyncio.to_thread(self._make_finder)
        finder = self._finder
        for server in finder.chain(name):
            slot = self.levels.specs[server].level
            out = await self.levels.call(server, "pull", -1)
            if not finder.memory.holds(slot, server, out["version"]):
                finder.memory.load(slot, server, out["version"], out["tensors"])
        return await asyncio.to_thread(finder.find, name, found, self.k)

    def _make_finder(self):
        from swarm.api.circuit_snippets import SnippetFinder
        from swarm.api.model import MemoryModel

        return SnippetFinder(self.cfg, MemoryModel(self.cfg.model, self.cfg.levels))


def extracted(tensors: dict[str, Any], config) -> list[dict[str, Any]]:
    """The strongest rank-1 components of a level's write matrices (module -> (d_out, R)) as circuit dicts,
    strongest first: what a stopped run's level holds when its tracker (in memory only, rebuilt from the
    journal after the last checkpoint) follows nothing yet. No stability or age: one look, not a track."""
    from layers.circuits.extract import extract

    out = []
    for module, b in sorted(tensors.items()):
        for i, c in enumerate(extract(b, min_energy=config.min_energy, noise_floor=config.noise_floor,
                                      max_components=config.max_per_module)):
            out.append({"id": i, "module": module, "strength": c.sigma, "score": float("nan"), "age": 0,
                        "u": c.u, "w": c.w, "origin": "extracted from the checkpoint"})
    return sorted(out, key=lambda c: -c["strength"])


def _find(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    if node.get("name") == name and node.get("kind") == "level":
        return node
    for child in node.get("children", []):
        hit = _find(child, name)
        if hit is not None:
            return hit
    return None


def dumps(message: dict[str, Any]) -> str:
    """A broadcast as compact JSON; NaN and infinities (which JSON lacks) become null."""
    return json.dumps(_finite(message), separators=(",", ":"), default=str)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
