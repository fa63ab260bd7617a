"""The swarm's Prometheus metrics through ``ray.util.metrics`` (the one owner of their names), and the
probes that record them and publish status snapshots (:mod:`cluster.snapshots`).

Ray exports every metric of every process of a node on that node's metrics endpoint
(``ray start --metrics-export-port=PORT``; docs/metrics.md), with the prefix ``ray_``; a counter
also gets the suffix ``_total``. So the counter defined here as ``swarm_agent_steps`` is scraped as
``ray_swarm_agent_steps_total``. :data:`SERIES` lists every exported name with its kind, tags,
unit and meaning; :func:`exported_name` turns a definition into what Prometheus shows.

Probes: :class:`AgentProbe`, :class:`LevelProbe` and :class:`RpcProbe` do nothing; the plain classes
(:class:`cluster.worker.AgentWorker`, :class:`cluster.level.core.LevelCore`) hold those by default,
so the in-process experiments pay one no-op method call per event. The Ray actors install the live
ones (:class:`LiveAgentProbe`, :class:`LiveLevelProbe`), the query service :func:`rpc_probe` (and, for
the documents ``Learn`` refuses, :func:`inbox_probe`).
A live record costs about 4 microseconds (measured on the driver); an agent step records 3 to 5.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from cluster.snapshots import PUBLISH_EVERY_S, StatusBoard

# seconds: from a loopback RPC (sub-millisecond) to a slow merge or a GetLevel of a large level
SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]

AGENT_TAGS = ("run", "agent", "team", "domain")  # run: the run's Ray namespace (runs share a cluster)
LEVEL_TAGS = ("run", "level", "slot")

# definition name -> (kind, tag keys, unit, meaning)
SERIES: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "swarm_agent_steps": ("counter", AGENT_TAGS, "steps", "agent steps taken by this agent process"),
    "swarm_agent_bits_per_byte": ("gauge", AGENT_TAGS, "bits/byte",
                                  "held-out bits per byte at the agent's last evaluation"),
    "swarm_agent_train_bits_per_byte": ("gauge", AGENT_TAGS, "bits/byte", "training bits per byte of the last step"),
    "swarm_agent_server_call_seconds": ("histogram", (*AGENT_TAGS, "kind"), "seconds",
                                        "an agent's calls to its level servers, by kind (push, pull, propose, seen)"),
    "swarm_pushes": ("counter", (*LEVEL_TAGS, "sender"), "pushes",
                     "pushes a level server accepted (or already held), by sender (an agent, or a child level)"),
    "swarm_push_bytes": ("counter", (*LEVEL_TAGS, "sender"), "bytes", "tensor bytes of the accepted pushes"),
    "swarm_refusals": ("counter", (*LEVEL_TAGS, "reason"), "pushes",
                       "pushes a level server refused, by reason (the status JSON's rejected keys)"),
    "swarm_merges": ("counter", LEVEL_TAGS, "merges", "merges of a level's push window"),
    "swarm_merge_seconds": ("histogram", LEVEL_TAGS, "seconds",
                            "time of one merge: aggregation, the level optimizer's step, circuit tracking"),
    "swarm_promotions": ("counter", LEVEL_TAGS, "circuits", "circuits consensus added to the level"),
    "swarm_level_version": ("gauge", LEVEL_TAGS, "versions", "the level's version (changes applied)"),
    "swarm_level_pending_pushes": ("gauge", LEVEL_TAGS, "pushes", "pushes waiting in the merge window (inbox)"),
    "swarm_level_outbox": ("gauge", LEVEL_TAGS, "forwards", "forwards to the parent not yet acknowledged"),
    "swarm_level_screened_fraction": ("gauge", LEVEL_TAGS, "ratio",
                                      "fraction of the level's parameters the optimizer screens"),
    "swarm_inbox_depth_documents": ("gauge", AGENT_TAGS, "documents",
                                    "documents queued in the agent's inbox after its cursor (not yet learned)"),
    "swarm_inbox_depth_bytes": ("gauge", AGENT_TAGS, "bytes", "UTF-8 bytes of those documents"),
    "swarm_inbox_acked_documents": ("counter", AGENT_TAGS, "documents",
                                    "documents acknowledged into the agent's inbox after the cursor this "
                                    "agent process started from (its backlog then, and every one since)"),
    "swarm_inbox_acked_bytes": ("counter", AGENT_TAGS, "bytes", "UTF-8 bytes of those documents"),
    "swarm_inbox_learned_documents": ("counter", AGENT_TAGS, "documents",
                                      "inbox documents this agent process opened as a context"),
    "swarm_inbox_learned_bytes": ("counter", AGENT_TAGS, "bytes", "UTF-8 bytes of those documents"),
    "swarm_inbox_refusals": ("counter", (*AGENT_TAGS, "reason"), "documents",
                             "documents a Learn writer refused for the agent, by reason (full, too large, empty, "
                             "...): nothing of their stream was queued"),
    "swarm_rpc_seconds": ("histogram", ("method", "code"), "seconds",
                          "gRPC query service calls, by method and status code (a stream: until it ends)"),
}


INBOX_COUNTERS = ("acked_documents", "acked_bytes", "learned_documents", "learned_bytes")
INBOX_SERIES = ("depth_documents", "depth_bytes", *INBOX_COUNTERS)  # swarm_inbox_<name>, recorded by the agent


def exported_name(name: str) -> str:
    """The name Prometheus scrapes for the definition ``name`` (``ray_`` prefix, ``_total`` on counters)."""
    return f"ray_{name}_total" if SERIES[name][0] == "counter" else f"ray_{name}"


def ray_running() -> bool:
    """True when Ray is initialised in this process (never imports Ray to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


_METRICS: dict[str, Any] = {}
REEMIT_EVERY_S = 2.0  # well under Ray's metrics export interval (metrics_report_interval_ms, 10 s default)


class HeldGauge:
    """A ``ray.util.metrics.Gauge`` whose last value per tag set is set again every ``REEMIT_EVERY_S``.

    Since Ray's OpenTelemetry backend clears gauge observations after each export (ray PR #56405),
    a gauge set once, e.g. a level's version between merges, would vanish from Prometheus at the
    next export; live processes are expected to re-emit. One daemon thread per process does it."""

    _held: list[HeldGauge] = []
    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    def __init__(self, gauge) -> None:
        """``gauge``: the Ray gauge to write through."""
        self.gauge, self.values = gauge, {}
        with HeldGauge._lock:
            HeldGauge._held.append(self)
            if HeldGauge._thread is None:
                HeldGauge._thread = threading.Thread(target=HeldGauge._reemit, name="swarm-gauges", daemon=True)
                HeldGauge._thread.start()

    def set(self, value: float, tags: Mapping[str, str]) -> None:
        """Set the gauge for ``tags`` to ``value`` and keep it there until the next set."""
        key = tuple(sorted(tags.items()))
        with HeldGauge._lock:
            self.values[key] = float(value)
        self.gauge.set(float(value), dict(tags))

    @staticmethod
    def _reemit() -> None:
        while True:
            time.sleep(REEMIT_EVERY_S)
            with HeldGauge._lock:
                held = [(g.gauge, dict(k), v) for g in HeldGauge._held for k, v in g.values.items()]
            for gauge, tags, value in held:
                try:
                    gauge.set(value, tags)
                except Exception:  # Ray shutting down in this process: nothing left to export to
                    return


def _metric(name: str):
    """The ``ray.util.metrics`` object of ``name`` (one per process, made on first use)."""
    m = _METRICS.get(name)
    if m is None:
        from ray.util import metrics

        kind, tags, unit, meaning = SERIES[name]
        description = f"{meaning} ({unit})"
        if kind == "counter":
            m = metrics.Counter(name, description, tag_keys=tags)
        elif kind == "gauge":
            m = HeldGauge(metrics.Gauge(name, description, tag_keys=tags))
        else:
            m = metrics.Histogram(name, description, boundaries=SECONDS_BUCKETS, tag_keys=tags)
        m = _METRICS[name] = m
    return m


# ---------------------------------------------------------------------- agents
class AgentProbe:
    """An agent worker's events; this one ignores them (no Ray: the in-process experiments)."""

    def call(self, kind: str, seconds: float) -> None:
        """A server call of ``kind`` (push, pull, propose, seen) took ``seconds``."""

    def step(self, worker, bpb: float) -> None:
        """``worker`` (an AgentWorker) finished a step whose training bits per byte were ``bpb``."""

    def publish(self, worker) -> None:
        """Publish ``worker``'s record now (end of a chunk, after an answer)."""


class LiveAgentProbe(AgentProbe):
    """Records the agent metrics with its tags and publishes its record on ``board`` from the step
    loop at most every ``every_s`` (``extra``: fields added to the record, e.g. ``pid``, ``node``)."""

    def __init__(self, spec, board: StatusBoard | None, extra: Mapping[str, Any] | None = None,
                 every_s: float = PUBLISH_EVERY_S) -> None:
        """``spec``: the agent's :class:`agents.topology.AgentSpec` (id, team ``swarm``, ``domain``)."""
        self.id, self.board, self.extra, self.every_s = spec.id, board, dict(extra or {}), every_s
        self.tags = {"run": board.run if board else "", "agent": spec.id, "team": spec.swarm, "domain": spec.domain}
        self._kinds: dict[str, dict[str, str]] = {}
        self._published = -float("inf")
        self._eval: float | None = None
        self.steps, self.bpb, self.train_bpb = (_metric(n) for n in (
            "swarm_agent_steps", "swarm_agent_bits_per_byte", "swarm_agent_train_bits_per_byte"))
        self.calls = _metric("swarm_agent_server_call_seconds")
        self.inbox = {n: _metric(f"swarm_inbox_{n}") for n in INBOX_SERIES}
        self._inbox_sent = dict.fromkeys(INBOX_COUNTERS, 0)  # what the inbox counters hold in this process

    def call(self, kind: str, seconds: float) -> None:
        """As :meth:`AgentProbe.call`, recorded in the Ray metrics."""
        tags = self._kinds.get(kind)
        if tags is None:
            tags = self._kinds[kind] = {**self.tags, "kind": kind}
        self.calls.observe(seconds, tags)

    def step(self, worker, bpb: float) -> None:
        """As :meth:`AgentProbe.step`, recorded in the Ray metrics."""
        self.steps.inc(1, self.tags)
        if bpb == bpb:  # not NaN
            self.train_bpb.set(float(bpb), self.tags)
        if worker.last_eval is not None and worker.last_eval != self._eval:
            self._eval = worker.last_eval
            self.bpb.set(float(worker.last_eval), self.tags)
        if time.monotonic() - self._published >= self.every_s:
            self.publish(worker)

    def publish(self, worker) -> None:
        """As :meth:`AgentProbe.publish`, recorded in the Ray metrics; the inbox series too (from the
        record's ``inbox``: its depth is measured when published, so it follows writers in other processes)."""
        self._published = time.monotonic()
        record = worker.record()
        if record.get("inbox"):
            self._record_inbox(record["inbox"], getattr(worker, "inbox_start", None) or {})
        if self.board is not None:
            self.board.publish("agent", self.id, {**record, **self.extra})

    def _record_inbox(self, box: Mapping[str, Any], start: Mapping[str, int]) -> None:
        """Gauges from ``box`` (a record's ``inbox``); counters moved up to their totals since ``start`` (the
        documents and bytes learned when the process started): learned = learned now - learned then,
        acked = learned + depth (documents are numbered without gaps and learned in order, so this is
        every document after the starting cursor)."""
        self.inbox["depth_documents"].set(box["depth_docs"], self.tags)
        self.inbox["depth_bytes"].set(box["depth_bytes"], self.tags)
        learned_docs = box["learned_docs"] - start.get("docs", 0)
        learned_bytes = box["learned_bytes"] - start.get("bytes", 0)
        totals = {"learned_documents": learned_docs, "learned_bytes": learned_bytes,
                  "acked_documents": learned_docs + box["depth_docs"],
                  "acked_bytes": learned_bytes + box["depth_bytes"]}
        for name, total in totals.items():
            if total > self._inbox_sent[name]:
                self.inbox[name].inc(total - self._inbox_sent[name], self.tags)
                self._inbox_sent[name] = total


# ---------------------------------------------------------------------- Learn writers
class InboxProbe:
    """Refusals of documents sent to agents' inboxes (``Learn``); this one ignores them (no Ray)."""

    def refused(self, agent, reason: str, documents: int = 1) -> None:
        """``documents`` sent to ``agent`` (its :class:`agents.topology.AgentSpec`) were refused for
        ``reason``: ``full``, ``too large``, ``empty`` (the inbox's :class:`cluster.inbox.InboxFull` and
        ``DocumentRefused`` carry it as ``.reason``), or the writer's own (``unencodable``, ...)."""


class LiveInboxProbe(InboxProbe):
    """Records ``swarm_inbox_refusals`` with the agent's tags in run ``run`` (its Ray namespace)."""

    def __init__(self, run: str) -> None:
        self.run, self.refusals = run, _metric("swarm_inbox_refusals")
        self._tags: dict[tuple[str, str], dict[str, str]] = {}

    def refused(self, agent, reason: str, documents: int = 1) -> None:
        """As :meth:`InboxProbe.refused`, recorded in the Ray metrics."""
        if documents <= 0:
            return
        tags = self._tags.get((agent.id, reason))
        if tags is None:
            tags = self._tags[(agent.id, reason)] = {"run": self.run, "agent": agent.id, "team": agent.swarm,
                                                     "domain": agent.domain, "reason": reason}
        self.refusals.inc(documents, tags)


def inbox_probe(run: str) -> InboxProbe:
    """The live probe when Ray runs in this process (its metrics are exported), else the no-op one."""
    return LiveInboxProbe(run) if ray_running() else InboxProbe()


# ---------------------------------------------------------------------- level servers
class LevelProbe:
    """A level server's events; this one ignores them (no Ray, or replaying the journal)."""

    def merged(self, seconds: float) -> None:
        """One merge of the push window took ``seconds``."""

    def promoted(self, circuits: int) -> None:
        """Consensus added ``circuits`` circuits to the level."""

    def pushed(self, sender: str, tensors: Mapping[str, Any], result) -> None:
        """A push of ``tensors`` from ``sender`` was answered with ``result`` (a PushResult)."""

    def changed(self, status: Mapping[str, Any]) -> None:
        """The level changed; ``status`` is its status JSON (gauges, and the published snapshot)."""


class LiveLevelProbe(LevelProbe):
    """Records the level metrics of server ``name`` (slot: the level it holds, e.g. ``swarm``) and
    publishes its status on ``board`` on every change."""

    def __init__(self, name: str, board: StatusBoard | None) -> None:
        self.name, self.board = name, board
        self.tags = {"run": board.run if board else "", "level": name, "slot": name.split("/")[0]}
        self._senders: dict[str, dict[str, str]] = {}
        self._reasons: dict[str, dict[str, str]] = {}
        self.m = {n: _metric(n) for n in SERIES if n.startswith(("swarm_level_", "swarm_merge", "swarm_promotions",
                                                                 "swarm_push", "swarm_refusals"))}

    def merged(self, seconds: float) -> None:
        """As :meth:`LevelProbe.merged`, recorded in the Ray metrics."""
        self.m["swarm_merges"].inc(1, self.tags)
        self.m["swarm_merge_seconds"].observe(seconds, self.tags)

    def promoted(self, circuits: int) -> None:
        """As :meth:`LevelProbe.promoted`, recorded in the Ray metrics."""
        if circuits > 0:
            self.m["swarm_promotions"].inc(circuits, self.tags)

    def pushed(self, sender: str, tensors: Mapping[str, Any], result) -> None:
        """As :meth:`LevelProbe.pushed`, recorded in the Ray metrics."""
        if result.accepted:
            tags = self._senders.get(sender)
            if tags is None:
                tags = self._senders[sender] = {**self.tags, "sender": sender}
            self.m["swarm_pushes"].inc(1, tags)
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values() if hasattr(t, "numel"))
            if nbytes:
                self.m["swarm_push_bytes"].inc(nbytes, tags)
        elif result.code is not None:
            reason = result.code.value
            tags = self._reasons.get(reason)
            if tags is None:
                tags = self._reasons[reason] = {**self.tags, "reason": reason}
            self.m["swarm_refusals"].inc(1, tags)

    def changed(self, status: Mapping[str, Any]) -> None:
        """As :meth:`LevelProbe.changed`, recorded in the Ray metrics."""
        self.m["swarm_level_version"].set(status["version"], self.tags)
        self.m["swarm_level_pending_pushes"].set(status["pending"], self.tags)
        self.m["swarm_level_outbox"].set(status.get("outbox", 0), self.tags)
        if "screened_fraction" in status:
            self.m["swarm_level_screened_fraction"].set(float(status["screened_fraction"]), self.tags)
        if self.board is not None:
            self.board.publish("level", self.name, status)


# ---------------------------------------------------------------------- the gRPC service
class RpcProbe:
    """The query service's calls; this one ignores them (a stopped run served without Ray)."""

    def observe(self, method: str, code: str, seconds: float) -> None:
        """The call of ``method`` ended with status ``code`` (e.g. ``OK``, ``NOT_FOUND``) after ``seconds``."""


class LiveRpcProbe(RpcProbe):
    """Records ``swarm_rpc_seconds`` by method and code."""

    def __init__(self) -> None:
        self.seconds = _metric("swarm_rpc_seconds")
        self._tags: dict[tuple[str, str], dict[str, str]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        """As :meth:`RpcProbe.observe`, recorded in the Ray metrics."""
        tags = self._tags.get((method, code))
        if tags is None:
            tags = self._tags[(method, code)] = {"method": method, "code": code}
        self.seconds.observe(seconds, tags)


def rpc_probe() -> RpcProbe:
    """The live probe when Ray runs in this process (its metrics are exported), else the no-op one."""
    return LiveRpcProbe() if ray_running() else RpcProbe()
