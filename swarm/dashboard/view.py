"""What the dashboard page shows, as JSON: the hierarchy tree, rates, learning curves, events, circuits.

Pure functions and small accumulators over status dicts (a level server's status JSON, an agent's
progress record: the same dicts ``status.json``, ``metrics.jsonl`` and the status snapshots hold).
No Ray, no torch: the feed (:mod:`swarm.dashboard.feed`) gathers the dicts, this module shapes them.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RATE_WINDOW_S = 60.0  # merges per minute over this much recent history
EVENTS_KEPT = 200  # events the page is sent at (re)connection


class Rates:
    """Merges per minute of each level from ``(time, merges)`` samples over the last :data:`RATE_WINDOW_S`
    seconds of history (or all of a finished run's history), and the mean seconds between merges."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[tuple[float, int]]] = {}

    def add(self, level: str, when: float, merges: int) -> None:
        """Record that ``level`` had made ``merges`` merges at Unix time ``when`` (older samples are ignored)."""
        q = self.samples.setdefault(level, deque())
        if q and when <= q[-1][0]:
            return
        if q and merges < q[-1][1]:  # a restarted server counted again from its recovered state
            q.clear()
        q.append((when, merges))
        while len(q) > 2 and q[-1][0] - q[1][0] >= RATE_WINDOW_S:
            q.popleft()

    def per_minute(self, level: str) -> float | None:
        """Merges per minute over the held window; None with fewer than two samples or no time between them."""
        q = self.samples.get(level)
        if not q or len(q) < 2 or q[-1][0] <= q[0][0]:
            return None
        return 60.0 * (q[-1][1] - q[0][1]) / (q[-1][0] - q[0][0])


class Curves:
    """Held-out bits per byte over steps, per agent: ``(step, bpb)`` points from agent records (the worker
    evaluates every ``run.eval_every`` steps; ``eval_start`` is step 0), each step once."""

    def __init__(self) -> None:
        self.points: dict[str, dict[int, float]] = {}

    def add(self, record: Mapping[str, Any]) -> bool:
        """Take an agent record's evaluations; True when it added a point."""
        agent = record.get("agent")
        if not agent:
            return False
        mine = self.points.setdefault(agent, {})
        added = False
        for step, bpb in ((0, record.get("eval_start")), (record.get("eval_step"), record.get("eval_bpb"))):
            if step is None or bpb is None or not math.isfinite(float(bpb)):
                continue
            if mine.get(int(step)) != float(bpb):
                mine[int(step)] = float(bpb)
                added = True
        return added

    def agent(self, agent: str) -> list[list[float]]:
        """The agent's points ``[step, bpb]``, by step."""
        return [[s, b] for s, b in sorted(self.points.get(agent, {}).items())]

    def mean(self, agents: Iterable[str]) -> list[list[float]]:
        """A level's curve: at each step where any of ``agents`` has a point, the mean over those that do."""
        by_step: dict[int, list[float]] = {}
        for a in agents:
            for s, b in self.points.get(a, {}).items():
                by_step.setdefault(s, []).append(b)
        return [[s, sum(v) / len(v)] for s, v in sorted(by_step.items())]


class MetricsTail:
    """Reads ``metrics.jsonl`` (the driver's log: one record per agent chunk and server poll) from where it
    stopped last time; a torn last line is read again once complete."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.offset = Path(path), 0

    def read(self) -> list[dict[str, Any]]:
        """The records appended since the last call (none when the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line from a crashed writer: skip it
                continue
        return out


def refusals(status: Mapping[str, Any]) -> int:
    """Pushes a level refused, all reasons together (its status JSON's ``stats.rejected``)."""
    rejected = status.get("stats", {}).get("rejected", {})
    return int(sum(rejected.values())) if isinstance(rejected, Mapping) else int(rejected or 0)


def level_node(name: str, slot: str, status: Mapping[str, Any] | None, rate: float | None,
               curve: list[list[float]]) -> dict[str, Any]:
    """One level server's node: version, merges (and per minute), screened fraction, refusals, pending pushes,
    the timescale (seconds per merge at the current rate) and the mean held-out bits per byte below it."""
    st = status or {}
    stats = st.get("stats", {})
    return {"kind": "level", "name": name, "slot": slot, "version": st.get("version", 0),
            "merges": stats.get("merges", 0), "merges_per_min": rate,
            "seconds_per_merge": (60.0 / rate) if rate else None,
            "screened_fraction": st.get("screened_fraction"), "refusals": refusals(st),
            "promotions": stats.get("promotions", 0), "pending": st.get("pending", 0),
            "bpb": curve[-1][1] if curve else None, "children": []}


def agent_node(agent: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """One agent's node: step, held-out bits per byte (and at which step), pushes and refused pushes."""
    r = record or {}
    return {"kind": "agent", "name": agent, "step": r.get("step", 0), "bpb": r.get("eval_bpb"),
            "bpb_step": r.get("eval_step"), "pushes": r.get("pushes", 0), "refusals": r.get("rejected", 0),
            "versions": r.get("versions", {}), "children": []}


def tree(servers: Iterable[Any], routes: Mapping[str, Mapping[str, str]], levels: Mapping[str, Mapping[str, Any]],
         agents: Mapping[str, Mapping[str, Any]], rates: Rates, curves: Curves) -> dict[str, Any]:
    """The hierarchy as nested nodes: the top level server (foundation) down to the agents.

    ``servers``: specs with ``name``, ``level`` (slot) and ``parent``; ``routes``: agent id -> {slot:
    server}; ``levels``: server -> status JSON; ``agents``: agent id -> progress record. A run without
    shared levels gets a root named ``swarm`` holding the agents."""
    servers = list(servers)
    below: dict[str, list[str]] = {s.name: [] for s in servers}
    for aid, route in routes.items():
        for server in route.values():
            below.setdefault(server, []).append(aid)
    nodes = {s.name: level_node(s.name, s.level, levels.get(s.name), rates.per_minute(s.name),
                                curves.mean(below.get(s.name, []))) for s in servers}
    roots = []
    for s in servers:
        (nodes[s.parent]["children"] if s.parent else roots).append(nodes[s.name])
    lowest = {aid: _lowest(route, nodes) for aid, route in routes.items()}
    for aid in routes:
        target = nodes[lowest[aid]]["children"] if lowest[aid] else roots
        target.append(agent_node(aid, agents.get(aid)))
    if len(roots) == 1 and roots[0]["kind"] == "level":
        return roots[0]
    return {"kind": "level", "name": "swarm", "slot": "", "version": None, "children": roots}


def _lowest(route: Mapping[str, str], nodes: Mapping[str, Any]) -> str | None:
    """The narrowest server of an agent's route (routes list the shared levels narrowest first)."""
    return next((n for n in route.values() if n in nodes), None)


def origin(module: str, promotions: Iterable[Mapping[str, Any]]) -> str:
    """Where a level's circuit of ``module`` came from: ``promoted from A, B`` when a promotion event of the
    level names that module (its detail: ``<module>: sigma ... from <carriers>``), else ``grown here``
    (from this level's own merges)."""
    for e in reversed(list(promotions)):
        detail = str(e.get("detail", ""))
        if detail.startswith(f"{module}:") and " from " in detail:
            return "promoted from " + detail.rsplit(" from ", 1)[1]
    return "grown here"


def circuit_row(level: str, c: Mapping[str, Any], snippets: Iterable[Any], promotions) -> dict[str, Any]:
    """One row of a level's circuits table: id, module, stability, strength, age (merges), origin (the
    circuit's own ``origin`` when it has one, else from ``promotions``: :func:`origin`) and its snippets
    (``before``/``focus``/``after`` as text, activation, agent)."""
    return {"id": f"{level}#{c['module']}#{c['id']}", "module": c["module"], "stability": float(c["score"]),
            "strength": float(c["strength"]), "age": int(c["age"]),
            "origin": c.get("origin") or origin(c["module"], promotions),
            "snippets": [{"before": _text(s.before), "focus": _text(s.focus), "after": _text(s.after),
                          "activation": float(s.activation), "agent": s.source} for s in snippets]}


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def event_item(level: str, e: Mapping[str, Any]) -> dict[str, Any]:
    """A level server's event (seq, kind, version, detail, time) as the page lists it."""
    return {"level": level, "seq": int(e["seq"]), "kind": str(e["kind"]), "version": int(e["version"]),
            "detail": str(e["detail"]), "time": float(e["time"])}
