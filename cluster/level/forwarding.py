"""Forwarding to the level above: what a level owes its parent (:class:`Uplink`) and the link that
delivers it (:class:`LinkedLevel`).

A swarm server forwards to its domain server and a domain server to the foundation "the
same way" agents push: the merged gradient of every merge is summed into ``pending`` and
fed to a ``SyncGate`` (:func:`forwarding_gate`: the agents' test over windows of
``server.forward_min`` to ``server.forward_every`` merges); when the gate fires, the sum
becomes an outbox entry ``(seq, base_version, tensors)`` covering the level's merges
``first_step..last_step`` (its step interval, in this level's merges, counted by the uplink).
The uplink is part of its level's state: it is checkpointed with it, and replay recreates
outbox entries deterministically (every merge, a checkpoint's forced one included, comes from
journaled records), so nothing is lost or counted twice across a restart: the parent refuses a
seq it already holds (``DUPLICATE``, counted as delivered) and, should a replay ever number an
interval differently, any entry whose merges overlap what it holds (``OVERLAP``).

:class:`LinkedLevel` sends the outbox, synchronously inside the push that produced it
(servers form a tree: no cycles), and every ``propose_every`` merges, and right after a
consensus round added circuits to the level, proposes the level's circuits upward and
removes what the parent took. The Ray actor wraps one with a
``RemoteLevel`` parent; the in-process experiments wire ``LinkedLevel`` objects to each
other directly, so both run the very same protocol code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cluster.config import ServerConfig
from cluster.level.growth import send_growth
from cluster.level.protocol import Coverage, LevelClient, ProposeResult, PullReply, PushResult
from cluster.level.status import ForwardCounters
from layers.circuits import Proposal
from layers.dynamics import SyncGate
from layers.dynamics.config import SyncConfig

if TYPE_CHECKING:  # the core owns an Uplink: importing it here at run time would be circular
    from cluster.level.core import LevelCore


def forwarding_gate(sync: SyncConfig, server: ServerConfig) -> SyncConfig:
    """The sync gate of a server's uplink: the agents' test (``sync.alpha``) over windows of
    ``server.forward_min`` (capped at ``forward_every``) to ``server.forward_every`` merges. With the
    gate disabled (the fixed-interval ablation), a forward every ``forward_every`` merges."""
    top = server.forward_every
    if not sync.enabled:
        return dataclasses.replace(sync, min_interval=top, max_interval=top)
    return dataclasses.replace(sync, min_interval=min(server.forward_min, top), max_interval=top)


@dataclass(frozen=True)
class OutboxEntry:
    """Merged gradients summed since the previous entry (module -> (d_out, R)), to push upward as
    ``(seq, base_version)``; ``reason`` is why the gate fired (``coherent`` or ``max_interval``);
    ``first_step..last_step``: the merges of this level it sums (None: from an uplink checkpointed
    before merges were counted)."""

    seq: int
    base_version: int
    reason: str
    tensors: dict[str, Tensor]
    first_step: int | None = None
    last_step: int | None = None


class Uplink:
    """A level's debt to its parent: the pending sum, the sync gate and the unacknowledged outbox."""

    def __init__(self, sender: str, shapes: Mapping[str, tuple[int, int]], sync: SyncConfig | None = None) -> None:
        """``sender``: this level's server name, as the parent knows it; ``shapes``: module -> (d_out, R)."""
        self.sender = sender
        self.pending = {m: torch.zeros(s) for m, s in shapes.items()}  # (d_out, R) each
        self.gate = SyncGate(sync)
        self.seq = 0
        self.parent_version = 0
        self.merges = 0  # merges observed (this level's steps, as the parent counts them)
        self.through: int | None = 0  # the last merge an outbox entry covered (None: unknown)
        self.outbox: list[OutboxEntry] = []
        self.counters = ForwardCounters()

    def observe(self, merged: Mapping[str, Tensor]) -> str | None:
        """Add one merged gradient; when the gate fires, queue the sum for the parent and return why."""
        for m, t in merged.items():
            self.pending[m].add_(t)
        self.merges += 1
        reason = self.gate.observe(merged)
        if reason:
            self.seq += 1
            first = None if self.through is None else self.through + 1
            self.outbox.append(OutboxEntry(self.seq, self.parent_version, reason,
                                           {m: t.clone() for m, t in self.pending.items()},
                                           first, None if first is None else self.merges))
            self.through = self.merges
            for t in self.pending.values():
                t.zero_()
            self.gate.reset()
        return reason

    def acknowledged(self, seq: int, parent_version: int | None = None) -> None:
        """The parent holds every entry up to ``seq``: drop them (and remember its newest version)."""
        self.outbox = [e for e in self.outbox if e.seq > seq]
        if parent_version is not None:
            self.parent_version = max(self.parent_version, parent_version)

    def delivered(self, entry: OutboxEntry, result: PushResult) -> None:
        """Record the parent's answer to ``entry``: counted as forwarded if the parent holds it, else as
        refused under its code (dropped either way: a refused entry is never retried)."""
        if result.held:
            self.counters.forwarded += 1
        else:
            key = result.code.value if result.code is not None else "unknown"
            self.counters.rejected[key] = self.counters.rejected.get(key, 0) + 1
        self.acknowledged(entry.seq, result.version)

    def restore_counters(self, counters: ForwardCounters) -> None:
        """Take the counters back from a checkpoint (they live in the level's ``stats``)."""
        self.counters = counters.copy()

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint form (tensors and JSON values; the outbox as a list of dicts)."""
        return {"pending": dict(self.pending), "gate": self.gate.state_dict(), "seq": self.seq,
                "parent_version": self.parent_version, "merges": self.merges, "through": self.through,
                "outbox": [{"seq": e.seq, "base_version": e.base_version, "reason": e.reason, "tensors": e.tensors,
                            "first_step": e.first_step, "last_step": e.last_step} for e in self.outbox]}

    def load_state_dict(self, state: Mapping[str, Any], merges: int = 0) -> None:
        """Inverse of :meth:`state_dict` (tensors are copied). A state from before merges were counted
        starts counting at ``merges`` (the level's merge count) with its pending sum's interval unknown:
        the next entry goes up without one, and every later one with its interval."""
        for m, t in state["pending"].items():
            self.pending[m].copy_(t)
        self.gate.load_state_dict(state["gate"])
        self.seq, self.parent_version = int(state["seq"]), int(state["parent_version"])
        self.merges = int(state.get("merges", merges))
        self.through = state["through"] if "through" in state else None
        self.outbox = [OutboxEntry(int(e["seq"]), int(e["base_version"]), e["reason"],
                                   {m: t.clone() for m, t in e["tensors"].items()}, e.get("first_step"),
                                   e.get("last_step")) for e in state["outbox"]]


class LinkedLevel:
    """A :class:`LevelCore` plus its link to ``parent``; itself a ``LevelClient`` for the level below."""

    def __init__(self, core: LevelCore, parent: LevelClient | None = None) -> None:
        """``parent`` must be given exactly when the core has one (``core.parent``); raises ``ValueError``
        otherwise. Outbox entries the parent took before a crash are dropped, the rest sent now."""
        if (parent is None) != (core.uplink is None):
            raise ValueError(f"LinkedLevel {core.name!r}: core parent {core.parent!r} but "
                             f"{'no' if parent is None else 'a'} parent client")
        self.core, self.parent = core, parent
        self._proposed_at = -1  # the merge count of the last upward proposal
        self._growths_sent = 0  # the core's growths handed to the parent (a restart hands them again: no-ops)
        if parent is not None:
            core.uplink.acknowledged(parent.seen(core.name))
            self.forward()

    def forward(self) -> None:
        """Send the outbox to the parent; every ``propose_every`` merges, propose this level's circuits
        and remove those the parent accepted. A no-op without a parent."""
        core, uplink = self.core, self.core.uplink
        if self.parent is None or uplink is None:
            return
        if len(core.growths) > self._growths_sent:  # the parent grows first: else it would refuse (and the
            for _, event in core.growths[self._growths_sent:]:
                send_growth(self.parent, event)  # outbox drop) entries at the grown rank; a no-op when past it
            self._growths_sent = len(core.growths)
        for entry in list(uplink.outbox):
            uplink.delivered(entry, self.parent.push(core.name, entry.seq, entry.base_version, entry.tensors,
                                                     entry.first_step, entry.last_step))
        merges = core.merges
        if merges and merges % core.cfg.propose_every == 0 and merges != self._proposed_at:
            self._proposed_at = merges
            self.propose_up()

    def propose_up(self) -> None:
        """Propose this level's circuits to the parent and remove (journaled) what it took."""
        if self.parent is not None:
            self.core.remove(self.parent.propose(self.core.name, self.core.proposals_up()).removals)

    def push(self, sender: str, seq: int, base_version: int, tensors: dict[str, Tensor],
             first_step: int | None = None, last_step: int | None = None) -> PushResult:
        """:meth:`LevelCore.push`, then forward what an accepted push produced."""
        out = self.core.push(sender, seq, base_version, tensors, first_step, last_step)
        if self.parent is not None and out.accepted:
            self.forward()
        return out

    def pull(self, since_version: int = -1) -> PullReply:
        """:meth:`LevelCore.pull`."""
        return self.core.pull(since_version)

    def propose(self, sender: str, proposals: list[Proposal]) -> ProposeResult:
        """:meth:`LevelCore.propose`; when the round added circuits here, they go up at once (the parent
        waits for every child, and a level merges too rarely for ``propose_every`` merges to line its
        children up: in a 120-step run the two teams of a domain never proposed after both had circuits)."""
        before = self.core.status().counters.promotions
        out = self.core.propose(sender, proposals)
        if self.parent is not None and self.core.status().counters.promotions > before:
            self.propose_up()
        return out

    def seen(self, sender: str) -> int:
        """:meth:`LevelCore.seen`."""
        return self.core.seen(sender)

    def covered(self, sender: str) -> Coverage:
        """:meth:`LevelCore.covered`."""
        return self.core.covered(sender)
