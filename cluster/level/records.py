"""The journal's records: every change of a level, typed, with its on-disk form.

A level changes only by applying one of these (:meth:`cluster.level.core.LevelCore.apply`),
live and at replay alike. Each record converts to and from the journal's form
``(tensors, meta)`` that :meth:`cluster.store.LevelStore.append` writes (msgpack meta plus
raw tensors); the meta keys are the ones journals have always held, so old journals replay:

=========  ======================================================  ==========================
kind       meta                                                    tensors
=========  ======================================================  ==========================
push       ``sender, seq, base_version`` (no ``kind`` key)         module -> (d_out, R)
circuits   ``kind, circuits: [{module, sigma, agents, ...}]`` (1)  ``i/u`` (d_out,), ``i/w`` (R,)
removals   ``kind, modules: [module], coefficients`` (2)           ``i/u`` (d_out,), ``i/w`` (R,)
absorb     ``kind, source, modules: [module] (sorted)``            module -> (d_out, R)
=========  ======================================================  ==========================

(1) plus ``bypassed``, ``exact`` and ``score`` per circuit; (2) one float (or None) per removal. Both are
absent from journals written before the joint consensus, which read as ``exact`` False and
coefficients None: those removals take the receiver's whole projection, as they did then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from cluster.level.protocol import CircuitRef

Journal = tuple[dict[str, Tensor], dict[str, Any]]  # (tensors, meta): what the store appends


@dataclass(frozen=True)
class PushRecord:
    """An accepted push: ``sender``'s gradient (module -> (d_out, R)) against ``base_version``."""

    kind: ClassVar[str] = "push"
    sender: str
    seq: int
    base_version: int
    tensors: dict[str, Tensor]

    def to_journal(self) -> Journal:
        """``(tensors, meta)`` to append; tensors are not copied."""
        return dict(self.tensors), {"sender": self.sender, "seq": self.seq, "base_version": self.base_version}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> PushRecord:
        """Inverse of :meth:`to_journal`; raises ``KeyError`` for a missing meta key."""
        return cls(str(meta["sender"]), int(meta["seq"]), int(meta["base_version"]), dict(tensors))


@dataclass(frozen=True)
class AcceptedCircuit:
    """One circuit a consensus round accepted: ``sigma u w^T`` joins ``module``; ``agents`` (its
    carriers) each remove ``sigma u w^T`` from their own level. ``u``: (d_out,), ``w``: (R,), float32."""

    module: str
    sigma: float
    agents: tuple[str, ...]
    u: Tensor
    w: Tensor
    bypassed: bool = False  # taken by the emergency bypass (no token spent)
    exact: bool = True  # carriers remove exactly sigma (False: records from before, their whole projection)
    score: float = 0.0  # the carriers' lowest stability score: the level proposes it upward with it


@dataclass(frozen=True)
class ConsensusRecord:
    """The circuits one consensus round accepted (at least one)."""

    kind: ClassVar[str] = "circuits"
    circuits: tuple[AcceptedCircuit, ...]

    def to_journal(self) -> Journal:
        """``(tensors, meta)``: ``i/u``, ``i/w`` per circuit; module, sigma and agents in the meta."""
        tensors: dict[str, Tensor] = {}
        for i, c in enumerate(self.circuits):
            tensors[f"{i}/u"], tensors[f"{i}/w"] = c.u, c.w
        return tensors, {"kind": self.kind, "circuits": [{"module": c.module, "sigma": float(c.sigma),
                                                          "agents": list(c.agents), "bypassed": c.bypassed,
                                                          "exact": c.exact, "score": float(c.score)}
                                                         for c in self.circuits]}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> ConsensusRecord:
        """Inverse of :meth:`to_journal`; raises ``KeyError`` for a missing key or tensor."""
        return cls(tuple(AcceptedCircuit(c["module"], float(c["sigma"]), tuple(c["agents"]),
                                         tensors[f"{i}/u"], tensors[f"{i}/w"], bool(c.get("bypassed", False)),
                                         bool(c.get("exact", False)), float(c.get("score", 0.0)))
                         for i, c in enumerate(meta["circuits"])))


@dataclass(frozen=True)
class RemovalRecord:
    """Circuits the level above accepted from this level: this level removes its projection onto each."""

    kind: ClassVar[str] = "removals"
    removals: tuple[CircuitRef, ...]

    def to_journal(self) -> Journal:
        """``(tensors, meta)``: ``i/u``, ``i/w`` per circuit; the modules and coefficients in the meta."""
        tensors = {f"{i}/{k}": getattr(r, k) for i, r in enumerate(self.removals) for k in ("u", "w")}
        return tensors, {"kind": self.kind, "modules": [r.module for r in self.removals],
                         "coefficients": [r.coefficient for r in self.removals]}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> RemovalRecord:
        """Inverse of :meth:`to_journal` (journals without ``coefficients``: None each); raises
        ``KeyError`` for a missing key or tensor."""
        coefs = meta.get("coefficients") or [None] * len(meta["modules"])
        return cls(tuple(CircuitRef(m, tensors[f"{i}/u"], tensors[f"{i}/w"], None if c is None else float(c))
                         for i, (m, c) in enumerate(zip(meta["modules"], coefs, strict=True))))


@dataclass(frozen=True)
class AbsorbRecord:
    """An outside delta (module -> (d_out, R), float32, a subset of modules) added to the level."""

    kind: ClassVar[str] = "absorb"
    source: str
    tensors: dict[str, Tensor]

    def to_journal(self) -> Journal:
        """``(tensors, meta)``, modules in sorted order."""
        modules = sorted(self.tensors)
        return {m: self.tensors[m] for m in modules}, {"kind": self.kind, "source": self.source, "modules": modules}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> AbsorbRecord:
        """Inverse of :meth:`to_journal`; raises ``KeyError`` for a missing key or tensor."""
        return cls(str(meta["source"]), {m: tensors[m] for m in meta["modules"]})


Record = PushRecord | ConsensusRecord | RemovalRecord | AbsorbRecord
_KINDS: dict[str, type[Record]] = {cls.kind: cls for cls in (PushRecord, ConsensusRecord, RemovalRecord, AbsorbRecord)}


def from_journal(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Record:
    """The record a journal entry holds (a meta without ``kind`` is a push).

    Raises ``ValueError`` for an unknown kind and ``KeyError`` for a malformed entry.
    """
    kind = meta.get("kind", PushRecord.kind)
    if kind not in _KINDS:
        raise ValueError(f"journal record of unknown kind {kind!r} (known: {sorted(_KINDS)})")
    return _KINDS[kind].from_journal(tensors, meta)
