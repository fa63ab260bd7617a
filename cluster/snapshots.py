"""Status snapshots that level servers and agents publish, read without a Ray call to any of them.

A level server publishes its status JSON (:meth:`cluster.level.status.LevelStatus.to_dict` plus
``pid`` and ``node``) after every command that changed it; an agent publishes its progress record
(:meth:`cluster.worker.AgentWorker.record` plus ``pid`` and ``node``) from inside its step loop at
most every :data:`PUBLISH_EVERY_S`, and at the end of every chunk and answer. A reader (the gRPC
``Stats``) gets all of them with one listing and one multi-get, however busy the publishers are:
an agent in the middle of ``run(steps)`` cannot answer an actor call until the chunk ends (25 s
measured), but its last snapshot is always there.

Where: Ray's internal key-value store, held by the GCS on the head node. Every process of the
cluster reaches it (an agent on a worker node too, where a file in the run directory would land
on that node's disk), it needs no actor whose lifetime someone must own (a holder actor would die
with its creator or outlive the run), a write is one small RPC (0.26 ms measured on loopback), and
a read does not queue behind a busy actor. The keys live in the KV namespace
:data:`KV_NAMESPACE`, under ``<run namespace>/level/<server>`` and ``<run namespace>/agent/<id>``;
each value is JSON ``{"time": publisher's Unix seconds, "status": {...}}``. They outlive the run's
actors (a few KB per run; :meth:`StatusBoard.clear` removes them); a resumed run overwrites them.

Outside Ray nothing is published: the plain classes (the in-process experiments) never see a board.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.renewing import RenewingRead

KV_NAMESPACE = "swarm_status"
PUBLISH_EVERY_S = 0.5  # an agent in its step loop publishes at most this often
KINDS = ("level", "agent")


@dataclass(frozen=True)
class Snapshot:
    """One published status: ``time`` (the publisher's Unix seconds) and ``status`` (its JSON dict)."""

    time: float
    status: dict[str, Any]

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it was published (by this machine's clock)."""
        return (time.time() if now is None else now) - self.time


@dataclass(frozen=True)
class Snapshots:
    """Everything a run published: ``levels`` (server name -> snapshot), ``agents`` (agent id ->
    snapshot), and ``read_at`` (Unix seconds of the read)."""

    levels: dict[str, Snapshot] = field(default_factory=dict)
    agents: dict[str, Snapshot] = field(default_factory=dict)
    read_at: float = 0.0


class StatusBoard:
    """The snapshots of one run (by its Ray namespace) in Ray's internal KV. Needs Ray initialised in
    this process (a driver, an actor, or a service that joined the cluster)."""

    def __init__(self, run_namespace: str) -> None:
        """``run_namespace``: the Ray namespace of the run's actors, e.g. ``swarm-20260101-120000``."""
        if not run_namespace:
            raise ValueError("StatusBoard: run_namespace is empty")
        self.run, self.prefix = run_namespace, f"{run_namespace}/"
        self.failures = 0  # publishes that failed (the first one warns)

    def key(self, kind: str, name: str) -> bytes:
        """The KV key of ``name``'s snapshot; ``kind`` is ``level`` or ``agent`` (else ``ValueError``)."""
        if kind not in KINDS:
            raise ValueError(f"StatusBoard: kind must be one of {KINDS}, got {kind!r}")
        return f"{self.prefix}{kind}/{name}".encode()

    def publish(self, kind: str, name: str, status: Mapping[str, Any]) -> None:
        """Write ``status`` (JSON values; others become strings) as ``name``'s snapshot, stamped now. A
        failed write is counted in ``failures`` (the first one warns), never raised."""
        from ray.experimental import internal_kv

        value = json.dumps({"time": time.time(), "status": dict(status)}, default=str)
        try:
            internal_kv._internal_kv_put(self.key(kind, name), value.encode(), overwrite=True,
                                         namespace=KV_NAMESPACE)
        except Exception as e:  # a snapshot must never fail the push or step that changed the status
            self.failures += 1
            if self.failures == 1:
                warnings.warn(f"StatusBoard: could not publish {kind} {name!r} ({type(e).__name__}: {e}); "
                              "Stats shows its older snapshot until a publish succeeds", stacklevel=2)

    def read(self) -> Snapshots:
        """Every snapshot of the run: one key listing and one multi-get (blocking; a few GCS round trips)."""
        from ray.experimental import internal_kv

        keys = internal_kv._internal_kv_list(self.prefix, namespace=KV_NAMESPACE)
        client = internal_kv.internal_kv_get_gcs_client()
        multi_get = getattr(client, "internal_kv_multi_get", None)
        if multi_get is not None and keys:
            values = multi_get(list(keys), KV_NAMESPACE.encode())
        else:  # older clients: one get per key
            values = {k: internal_kv._internal_kv_get(k, namespace=KV_NAMESPACE) for k in keys}
        out = Snapshots(read_at=time.time())
        for key, value in values.items():
            kind, _, name = key.decode()[len(self.prefix):].partition("/")
            if value is None or kind not in KINDS:
                continue
            doc = json.loads(value)
            (out.levels if kind == "level" else out.agents)[name] = Snapshot(float(doc["time"]), doc["status"])
        return out

    def clear(self) -> int:
        """Remove every snapshot of the run; returns how many keys went."""
        from ray.experimental import internal_kv

        return int(internal_kv._internal_kv_del(self.prefix, del_by_prefix=True, namespace=KV_NAMESPACE))


class SnapshotCache(RenewingRead[Snapshots]):
    """The board as a reader on an event loop sees it: an answer is never older than ``ttl_s``
    (:class:`cluster.renewing.RenewingRead`; the board is read in a thread)."""

    def __init__(self, board: StatusBoard, ttl_s: float) -> None:
        super().__init__(lambda: asyncio.to_thread(board.read), ttl_s, name="SnapshotCache")
