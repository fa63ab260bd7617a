"""A server's link to the level above: its merged gradients, accumulated, pushed when coherent.

A swarm server forwards to its domain server and a domain server to the foundation
"the same way" agents push: the merged gradient of every merge is summed into
``pending`` and fed to a ``SyncGate``; when the gate fires, the sum becomes an outbox
entry ``(seq, base_version, tensors)``. The actor sends outbox entries and drops them
when the parent acknowledges (or reports the seq as already seen). The outbox is part
of the server's checkpoint and replay recreates entries deterministically, so nothing
is lost or double-counted across a restart (the parent refuses a seq it has).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layers.dynamics import SyncGate
from layers.dynamics.config import SyncConfig


class Uplink:
    def __init__(self, sender: str, shapes: Mapping[str, tuple[int, int]], sync: SyncConfig | None = None) -> None:
        self.sender = sender
        self.pending = {m: torch.zeros(s) for m, s in shapes.items()}
        self.gate = SyncGate(sync)
        self.seq = 0
        self.parent_version = 0
        self.outbox: list[dict[str, Any]] = []

    def observe(self, merged: Mapping[str, Tensor]) -> str | None:
        """Add one merged gradient; when the gate fires, queue the sum for the parent and return why."""
        for m, t in merged.items():
            self.pending[m].add_(t)
        reason = self.gate.observe(merged)
        if reason:
            self.seq += 1
            self.outbox.append({"seq": self.seq, "base_version": self.parent_version, "reason": reason,
                                "tensors": {m: t.clone() for m, t in self.pending.items()}})
            for t in self.pending.values():
                t.zero_()
            self.gate.reset()
        return reason

    def acknowledged(self, seq: int, parent_version: int | None = None) -> None:
        """The parent holds every entry up to ``seq``: drop them."""
        self.outbox = [e for e in self.outbox if e["seq"] > seq]
        if parent_version is not None:
            self.parent_version = max(self.parent_version, parent_version)

    def state_dict(self) -> dict[str, Any]:
        return {"pending": dict(self.pending), "gate": self.gate.state_dict(), "seq": self.seq,
                "parent_version": self.parent_version, "outbox": list(self.outbox)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for m, t in state["pending"].items():
            self.pending[m].copy_(t)
        self.gate.load_state_dict(state["gate"])
        self.seq, self.parent_version = int(state["seq"]), int(state["parent_version"])
        self.outbox = [{**e, "tensors": {m: t.clone() for m, t in e["tensors"].items()}} for e in state["outbox"]]
