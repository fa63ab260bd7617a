"""A level's counters and its status snapshot, and their JSON form (the one owner of the ``stats`` keys).

The JSON form is what ``status.json``, ``metrics.jsonl``, the run summary and the gRPC
``Stats`` read, and what a checkpoint stores (so a restart resumes the counts):
``{"name", "version", "pending", "stats": {...}, "last_seq", "warnings", "outbox", "members", "children",
**optimizer report}``
with ``stats`` = ``accepted, merges, promotions, removed, forwarded, rejected, rejected_proposals``
plus ``absorbed`` once something was absorbed, ``deferred`` and ``bypassed`` once the bandwidth
limit deferred (or its bypass let through) a consensus circuit, and ``forward_rejected`` once the
parent refused a forward. Refusal counts are keyed by ``RejectCode`` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class LevelCounters:
    """What a level did since it was created (restored across restarts): pushes accepted, merges,
    circuits promoted into it and removed from it, absorbs, consensus circuits the bandwidth limit
    deferred or let through by the bypass, refusals by code value."""

    accepted: int = 0
    merges: int = 0
    promotions: int = 0
    removed: int = 0
    absorbed: int = 0
    deferred: int = 0
    bypassed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_proposals: dict[str, int] = field(default_factory=dict)

    def copy(self) -> LevelCounters:
        """A copy sharing nothing mutable."""
        return replace(self, rejected=dict(self.rejected), rejected_proposals=dict(self.rejected_proposals))

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> LevelCounters:
        """Read back from a ``stats`` dict (missing keys count 0)."""
        return cls(*(int(stats.get(k, 0)) for k in ("accepted", "merges", "promotions", "removed", "absorbed",
                                                    "deferred", "bypassed")),
                   rejected=dict(stats.get("rejected", {})),
                   rejected_proposals=dict(stats.get("rejected_proposals", {})))


@dataclass
class ForwardCounters:
    """Outbox entries the parent holds (``forwarded``) or refused (``rejected``, by code value)."""

    forwarded: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def copy(self) -> ForwardCounters:
        """A copy sharing nothing mutable."""
        return ForwardCounters(self.forwarded, dict(self.rejected))

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> ForwardCounters:
        """Read back from a ``stats`` dict (keys ``forwarded``, ``forward_rejected``)."""
        return cls(int(stats.get("forwarded", 0)), dict(stats.get("forward_rejected", {})))


def stats_dict(counters: LevelCounters, forwarding: ForwardCounters) -> dict[str, Any]:
    """The JSON ``stats`` of a level (see the module doc for the keys)."""
    out: dict[str, Any] = {"accepted": counters.accepted, "merges": counters.merges,
                           "promotions": counters.promotions, "removed": counters.removed,
                           "forwarded": forwarding.forwarded, "rejected": dict(counters.rejected),
                           "rejected_proposals": dict(counters.rejected_proposals)}
    for key in ("absorbed", "deferred", "bypassed"):  # only once they happened
        if getattr(counters, key):
            out[key] = getattr(counters, key)
    if forwarding.rejected:
        out["forward_rejected"] = dict(forwarding.rejected)
    return out


@dataclass(frozen=True)
class LevelStatus:
    """A snapshot of one level.

    Attributes:
        name: the server name, e.g. ``swarm/text``.
        version: merges, consensus rounds, removals and absorbs applied so far.
        pending: pushes waiting in the merge window.
        counters, forwarding: see :class:`LevelCounters`, :class:`ForwardCounters` (zero without a parent).
        last_seq: sender -> highest accepted seq.
        warnings: what recovery reported (skipped checkpoints, cut-off records).
        outbox: forwards not yet acknowledged by the parent.
        report: the level optimizer's numbers (screened and crystallised fractions, means, ...).
        storage_error: why the last store write failed (disk full, ...), until one succeeds; None: fine.
            In the JSON form only while set.
        members: the server's members by name, sorted (empty for a server built from a count only;
            cluster/level/membership.py).
        children: how many children merge into it (its members, or the count it was built with).
    """

    name: str
    version: int
    pending: int
    counters: LevelCounters
    forwarding: ForwardCounters
    last_seq: dict[str, int]
    warnings: list[str]
    outbox: int
    report: dict[str, float]
    storage_error: str | None = None
    members: tuple[str, ...] = ()
    children: int = 1

    @property
    def stats(self) -> dict[str, Any]:
        """The JSON ``stats`` (see :func:`stats_dict`)."""
        return stats_dict(self.counters, self.forwarding)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see the module doc); the optimizer's report is flattened into it."""
        return {"name": self.name, "version": self.version, "pending": self.pending, "stats": self.stats,
                "last_seq": dict(self.last_seq), "warnings": list(self.warnings), "outbox": self.outbox,
                "members": list(self.members), "children": self.children,
                **self.report, **({"storage_error": self.storage_error} if self.storage_error else {})}
