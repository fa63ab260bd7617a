"""What a run looks like while it runs: one snapshot dict, rendered by ``swarm run`` and ``swarm status``.

The driver keeps a snapshot (agents' latest records, servers' statuses) and writes it to
``<run dir>/status.json`` atomically on every refresh, so ``swarm status`` can show a
running (or finished) swarm from any shell without joining its Ray cluster.

Every figure says when it was measured: held-out bits per byte carry the step of their
evaluation (``6.170 @40``), train bits per byte are the mean of the agent's last chunk, and a
figure not measured yet is ``-``. One name per concept in every table (the summary's too):

- ``ctx->agent``: context-level circuits promoted into the agent's own level (inside the agent);
- ``circuits up``: circuits of an agent (or level) that the level above adopted by consensus
  and that were then removed where they came from;
- ``circuits in``: circuits a level server adopted by consensus from its children.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.text import Text

from swarm.console import FitTable
from swarm.rundir import HEARTBEAT_S, RunDir, driver_identity

AGENT_HEADERS = ("agent", "step", "steps/s", "train bpb (last chunk)", "held-out bpb @step", "pushes",
                 "pushes refused", "ctx->agent", "circuits up", "comm %")
CACHE_HEADERS = ("cache hits", "internalised")
SERVER_HEADERS = ("level server", "version", "merges", "pushes in", "pushes refused", "forwards up", "circuits in",
                  "circuits up", "proposals refused", "screened", "rank", "crystallised")
SHORT_SERVER_COLUMNS = 5  # level server .. circuits in: what a short terminal shows while the run goes


def fmt(x: float | None, spec: str = ".3f") -> str:
    """``x`` formatted, ``-`` when not measured (None)."""
    return "-" if x is None else format(x, spec)


def held_out(rec: dict[str, Any]) -> str:
    """An agent's latest held-out bits per byte with the step it was measured at, ``-`` before any."""
    if rec.get("eval_bpb") is None:
        return "-"
    step = rec.get("eval_step")
    return f"{rec['eval_bpb']:.3f} @{'?' if step is None else step}"


def comm_percent(comm_s: float, compute_s: float) -> str:
    """Share of an agent's busy time spent in server calls; ``-`` before it has computed a step
    (its first pull alone is not a share of anything)."""
    return "-" if compute_s <= 0 else f"{100 * comm_s / (comm_s + compute_s):.1f}"


def _cache(c: dict[str, Any] | None) -> str:
    """Trajectory-cache hits as ``hits/lookups``, '-' before any lookup."""
    return f"{c['hits']}/{c['lookups']}" if c and c.get("lookups") else "-"


def _internalised(c: dict[str, Any] | None) -> str:
    """Internalised (and failed, if any) cache entries."""
    if not c or not (c.get("internalised") or c.get("failed")):
        return "-"
    return f"{c['internalised']}" + (f" ({c['failed']} failed)" if c.get("failed") else "")


def step_of(snap: dict[str, Any], step: int) -> str:
    """An agent's step out of the run's steps per agent (``12/40``); the step alone in a run without an
    end (``run.steps: null``)."""
    return str(step) if snap.get("steps") is None else f"{step}/{snap['steps']}"


def agents_table(snap: dict[str, Any], now: float | None = None) -> FitTable:
    """The agents of a snapshot as of ``now`` (default: its last write); the cache columns only once
    some agent's cache was asked. steps/s counts from when the agents were ready (startup excluded)."""
    now = snap.get("updated", time.time()) if now is None else now
    elapsed = max(1e-9, now - snap["started"])
    stepping = max(1e-9, now - snap.get("ready", snap["started"]))
    cached = any((r.get("cache") or {}).get("lookups") for r in snap["agents"].values())
    rows = []
    for aid, r in sorted(snap["agents"].items()):
        done = r["step"] - snap.get("start_steps", {}).get(aid, 0)
        row = [aid, step_of(snap, r["step"]), f"{done / stepping:.2f}", fmt(r.get("train_bpb")), held_out(r),
               str(r.get("pushes", 0)), str(r.get("rejected", 0)), str(r.get("promoted", 0)), str(r.get("removed", 0)),
               comm_percent(r.get("comm_s", 0.0), r.get("compute_s", 0.0))]
        rows.append(row + ([_cache(r.get("cache")), _internalised(r.get("cache"))] if cached else []))
    headers = AGENT_HEADERS + (CACHE_HEADERS if cached else ())
    return FitTable(f"agents ({snap['state']}, {elapsed:.0f} s)", headers, rows)


def servers_table(servers: dict[str, dict[str, Any]], title: str = "level servers", short: bool = False) -> FitTable:
    """The level servers of a snapshot (their ``status`` dicts by name); ``short``: the first
    :data:`SHORT_SERVER_COLUMNS` columns only (version, merges, pushes in, circuits in)."""
    rows = []
    for name, s in servers.items():
        st = s.get("stats", {})
        rows.append([name, str(s.get("version", "-")), str(st.get("merges", 0)), str(st.get("accepted", 0)),
                     str(sum(st.get("rejected", {}).values())), str(st.get("forwarded", 0)),
                     str(st.get("promotions", 0)), str(st.get("removed", 0)),
                     str(sum(st.get("rejected_proposals", {}).values())), fmt(s.get("screened_fraction"), ".2f"),
                     fmt(s.get("rank"), ".0f"), fmt(s.get("crystallised_fraction"), ".2f")])
    if short:
        keep = [0, 1, 2, 3, 6][:SHORT_SERVER_COLUMNS]
        return FitTable(title + " (all columns: swarm status)", [SERVER_HEADERS[i] for i in keep],
                        [[r[i] for i in keep] for r in rows])
    return FitTable(title, SERVER_HEADERS, rows)


MEMBER_HEADERS = ("time", "after start", "change", "agent", "team", "members of team")


def members_table(snap: dict[str, Any]) -> FitTable | None:
    """The run's membership changes over time (``swarm agents``), with each team's member count after
    each change (counted from the first known roster); None when there were none."""
    history = snap.get("members") or []
    if not history:
        return None
    sizes: dict[str, int] = {}
    for aid in snap["agents"]:  # the current roster, walked back to the start for the counts
        team = aid.split("/")[1] if aid.count("/") == 2 else ""
        sizes[team] = sizes.get(team, 0) + 1
    for h in reversed(history):
        sizes[h["team"]] = sizes.get(h["team"], 0) + (-1 if h["op"] == "add" else 1)
    rows = []
    for h in history:
        sizes[h["team"]] += 1 if h["op"] == "add" else -1
        rows.append([time.strftime("%H:%M:%S", time.localtime(h["time"])), f"{h['time'] - snap['started']:.0f} s",
                     "joined" if h["op"] == "add" else "left", h["agent"], h["team"], str(sizes[h["team"]])])
    return FitTable("members over time", MEMBER_HEADERS, rows)


def render(snap: dict[str, Any]) -> Group:
    """Tables of agents, servers and (when they changed) members for a snapshot (see :class:`Snapshot`);
    they fit any width."""
    members = members_table(snap)
    return Group(agents_table(snap), servers_table(snap["servers"]), *([members] if members else []))


def progress_line(snap: dict[str, Any]) -> str:
    """One plain line of progress (pipes, log files, ``--quiet``): steps done, mean train bits per
    byte of the last chunks, mean held-out bits per byte with the step(s) they were measured at,
    and the servers' versions."""
    recs = list(snap["agents"].values())
    elapsed = snap.get("updated", time.time()) - snap["started"]
    done = sum(r["step"] for r in recs)
    limit = "" if snap.get("steps") is None else f"/{snap['steps'] * len(recs)}"
    parts = [f"[{elapsed:5.0f} s] steps {done}{limit}"]
    train = [r["train_bpb"] for r in recs if r.get("train_bpb") is not None]
    if train:
        parts.append(f"train bpb {sum(train) / len(train):.3f}")
    evals = [r for r in recs if r.get("eval_bpb") is not None]
    if evals:
        steps = sorted({-1 if r.get("eval_step") is None else r["eval_step"] for r in evals})
        at = "?" if steps[0] < 0 else str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
        parts.append(f"held-out bpb {sum(r['eval_bpb'] for r in evals) / len(evals):.3f} @{at}")
    versions = ", ".join(f"{n} v{s.get('version')}" for n, s in snap["servers"].items())
    return ", ".join(parts) + (f"; {versions}" if versions else "")


class LiveView:
    """What ``swarm run`` redraws on a terminal: :func:`render`, or, when that is taller than the
    terminal (which would crop it), the agents and fewer server columns, or the agents and one line
    of server versions."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.size.height - 1  # the cursor's line
        agents = agents_table(self.snap, time.time())
        versions = Text("level servers: " + ", ".join(f"{n} v{s.get('version')}"
                                                      for n, s in self.snap["servers"].items()))
        for view in (Group(agents, servers_table(self.snap["servers"])),
                     Group(agents, servers_table(self.snap["servers"], short=True)), Group(agents, versions)):
            if len(console.render_lines(view, options.update(height=None), pad=False)) <= height:
                break
        yield view


class Snapshot(dict):
    """The run's live state; ``write`` puts it in the run directory's ``status.json``.

    Keys: ``started`` (the run object made), ``ready`` (its agents built; absent while starting),
    ``updated`` (last write by the driver loop), ``heartbeat`` (the driver's last sign of life: every
    write, and :meth:`beat` every :data:`swarm.rundir.HEARTBEAT_S` from a thread), all Unix seconds;
    ``driver`` (pid, create_time, host: :func:`swarm.rundir.driver_identity`); ``state``; ``steps``
    (per agent; None: no end); ``agents``: id -> the worker's latest record (``eval_bpb`` measured at
    ``eval_step``); ``start_steps``: id -> step at this invocation's start; ``servers``: name ->
    status (:mod:`cluster.level.status`); while a stop is under way ``stopping`` (``by``, ``since``);
    ``ray_address`` (the GCS address others join the run's Ray with); ``members``: the membership
    changes so far (``time``, ``op`` add or remove, ``agent``, ``team``: :mod:`swarm.run.membership`);
    at the end ``stopped_by`` (None, ``SIGINT``, ``SIGTERM`` or ``swarm stop``)."""

    def __init__(self, run_dir: RunDir, steps: int | None) -> None:
        now = time.time()
        super().__init__(run_dir=str(run_dir.path), started=now, updated=now, heartbeat=now, driver=driver_identity(),
                         state="starting", steps=steps, agents={}, servers={}, start_steps={}, members=[])
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._written: dict[str, Any] | None = None  # what the last write put on disk, for beat()

    def write(self) -> None:
        """Write the snapshot as it is now (called by the driver's thread, the only one that changes it)."""
        with self._lock:
            self["updated"] = self["heartbeat"] = time.time()
            self._written = json.loads(json.dumps(self, default=str))  # a private copy: beat() never reads self
            self.run_dir.write_status(self._written)

    def beat(self) -> None:
        """Rewrite the last written snapshot with a new heartbeat (safe from another thread)."""
        with self._lock:
            if self._written is not None:
                self._written["heartbeat"] = time.time()
                self.run_dir.write_status(self._written)


class Heartbeat:
    """A daemon thread that calls ``snapshot.beat()`` every ``every_s`` seconds while the driver is busy
    elsewhere (starting Ray, launching actors, checkpointing), so a live run never looks dead. Use as a
    context manager; leaving it stops and joins the thread."""

    def __init__(self, snapshot: Snapshot, every_s: float = HEARTBEAT_S) -> None:
        self.snapshot, self.every_s = snapshot, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swarm-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.snapshot.beat()
            except OSError:  # a full or vanished disk: the next beat tries again; the driver reports it
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
