"""``LinkedLevel``: a level server wired to the server above it (no Ray; the actor wraps it).

A server with a parent forwards its outbox and proposes its circuits upward itself,
synchronously inside the push that produced them (servers form a tree: no cycles). The
Ray actor wraps one of these with a ``RemoteLevel`` parent; in-process runs (the
experiments) wire ``LinkedLevel`` objects to each other directly, so both run the very
same protocol code.
"""

from __future__ import annotations

from typing import Any

from cluster.server import LevelServer


class LinkedLevel:
    """The ``LevelClient`` interface over a ``LevelServer`` plus its link to ``parent`` (a ``LevelClient``)."""

    def __init__(self, core: LevelServer, parent=None) -> None:
        self.core, self.parent = core, parent
        self._proposed_at = -1  # the merge count of the last upward proposal
        if parent is not None:  # entries the parent took before a crash are not sent twice
            core.uplink.acknowledged(parent.seen(core.name))
            self.forward()

    def forward(self) -> None:
        """Send the outbox to the parent; every ``propose_every`` merges, propose this level's circuits."""
        core = self.core
        merges = core.stats["merges"]
        for entry in list(core.uplink.outbox):
            out = self.parent.push(core.name, entry["seq"], entry["base_version"], entry["tensors"])
            if out["status"] != "accepted" and not out["reason"].startswith("duplicate seq"):
                core.count("forward_rejected", out["reason"])  # refused upward: dropped, never retried
            else:
                core.stats["forwarded"] += 1
            core.uplink.acknowledged(entry["seq"], out["version"])
        if merges and merges % core.cfg.propose_every == 0 and merges != self._proposed_at:
            self._proposed_at = merges
            out = self.parent.propose(core.name, core.proposals_up())
            core.remove(out.get("removals", []))

    def push(self, sender: str, seq: int, base_version: int, tensors: dict) -> dict[str, Any]:
        out = self.core.push(sender, seq, base_version, tensors)
        if self.parent is not None and out["status"] == "accepted":
            self.forward()
        return out

    def pull(self, since_version: int = -1) -> dict[str, Any]:
        return self.core.pull(since_version)

    def propose(self, sender: str, proposals: list) -> dict[str, Any]:
        return self.core.propose(sender, proposals)

    def seen(self, sender: str) -> int:
        return self.core.seen(sender)
