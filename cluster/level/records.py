"""The journal's records: every change of a level, typed, with its on-disk form.

A level changes only by applying one of these (:meth:`cluster.level.core.LevelCore.apply`),
live and at replay alike. Each record converts to and from the journal's form
``(tensors, meta)`` that :meth:`cluster.store.LevelStore.append` writes (msgpack meta plus
raw tensors); the meta keys are the ones journals have always held, so old journals replay:

==========  ======================================================  ==========================
kind        meta                                                    tensors
==========  ======================================================  ==========================
push        ``sender, seq, base_version[, first_step, last_step]``  module -> (d_out, R)
            (no ``kind`` key) (3)
circuits    ``kind, circuits: [{module, sigma, agents, ...}]`` (1)  ``i/u`` (d_out,), ``i/w`` (R,)
removals    ``kind, modules: [module], coefficients`` (2)           ``i/u`` (d_out,), ``i/w`` (R,)
absorb      ``kind, source, modules: [module] (sorted)``            module -> (d_out, R)
flush       ``kind`` (4)                                            none
growth      ``kind, from_rank, to_rank, source, modules``           module -> rows carried
membership  ``kind, op ("add"/"remove"), member`` (5)              none
==========  ======================================================  ==========================

(1) plus ``bypassed``, ``exact`` and ``score`` per circuit; (2) one float (or None) per removal. Both are
absent from journals written before the joint consensus, which read as ``exact`` False and
coefficients None: those removals take the receiver's whole projection, as they did then.
(3) the sender's step interval the push covers (inclusive); absent from journals written before
exactly-once accounting, and from pushes of old clients: an unknown interval. (4) the merge of a
partial window a checkpoint forces, journaled so that a replay (even from an older checkpoint)
merges the very same windows and its uplink forwards the very same sums under the same seqs.
(5) a member joining or leaving the server (:mod:`cluster.level.membership`).

:func:`audit` checks a level's store from its files alone: per sender, the push intervals it
holds never overlap, and it sums what each sender's pushes cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from cluster.level.growth import GrowthRecord
from cluster.level.membership import MembershipRecord
from cluster.level.protocol import CircuitRef, Coverage
from cluster.state import unflatten
from cluster.store import LevelStore

Journal = tuple[dict[str, Tensor], dict[str, Any]]  # (tensors, meta): what the store appends


@dataclass(frozen=True)
class PushRecord:
    """An accepted push: ``sender``'s gradient (module -> (d_out, R)) against ``base_version``, summed
    over the sender's steps ``first_step..last_step`` (inclusive; both None: unknown)."""

    kind: ClassVar[str] = "push"
    sender: str
    seq: int
    base_version: int
    tensors: dict[str, Tensor]
    first_step: int | None = None
    last_step: int | None = None

    def to_journal(self) -> Journal:
        """``(tensors, meta)`` to append; tensors are not copied. The interval keys only when known."""
        meta: dict[str, Any] = {"sender": self.sender, "seq": self.seq, "base_version": self.base_version}
        if self.first_step is not None and self.last_step is not None:
            meta.update(first_step=self.first_step, last_step=self.last_step)
        return dict(self.tensors), meta

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> PushRecord:
        """Inverse of :meth:`to_journal` (no interval keys: unknown); raises ``KeyError`` for a missing key."""
        first, last = meta.get("first_step"), meta.get("last_step")
        return cls(str(meta["sender"]), int(meta["seq"]), int(meta["base_version"]), dict(tensors),
                   None if first is None else int(first), None if last is None else int(last))


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


@dataclass(frozen=True)
class FlushRecord:
    """Merge the pending window now, however few pushes it holds (a checkpoint forces it)."""

    kind: ClassVar[str] = "flush"

    def to_journal(self) -> Journal:
        """``({}, {"kind": "flush"})``."""
        return {}, {"kind": self.kind}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> FlushRecord:
        """Inverse of :meth:`to_journal`."""
        return cls()


Record = PushRecord | ConsensusRecord | RemovalRecord | AbsorbRecord | FlushRecord | GrowthRecord | MembershipRecord
_KINDS: dict[str, type[Record]] = {cls.kind: cls for cls in (PushRecord, ConsensusRecord, RemovalRecord, AbsorbRecord,
                                                             FlushRecord, GrowthRecord, MembershipRecord)}


def from_journal(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Record:
    """The record a journal entry holds (a meta without ``kind`` is a push).

    Raises ``ValueError`` for an unknown kind and ``KeyError`` for a malformed entry.
    """
    kind = meta.get("kind", PushRecord.kind)
    if kind not in _KINDS:
        raise ValueError(f"journal record of unknown kind {kind!r} (known: {sorted(_KINDS)})")
    return _KINDS[kind].from_journal(tensors, meta)


@dataclass
class Audit:
    """What a level's store proves about its pushes: per sender, its :class:`Coverage` (from the
    checkpoint's, plus every journaled push after it), the intervals journaled since that checkpoint
    in order, and every violation found (an interval starting at or below what the sender already had
    covered; empty: no step of any sender was applied twice)."""

    coverage: dict[str, Coverage] = field(default_factory=dict)
    intervals: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    unknown: int = 0  # pushes journaled without an interval (old journals or clients)


def audit(store_dir: str | Path, config_hash: str) -> Audit:
    """Check a level's store from its files: the newest valid checkpoint's per-sender coverage (none
    in checkpoints from before exactly-once accounting: start empty), then every push the journal
    holds after it, each of which must start above its sender's last covered step. Reads only; raises
    what :meth:`cluster.store.LevelStore.recover` raises (another config hash)."""
    rec = LevelStore(store_dir, config_hash=config_hash).recover()
    out = Audit()
    if rec.checkpoint is not None:
        state = unflatten(rec.tensors, rec.checkpoint.meta["state"])
        out.coverage = {s: Coverage.from_dict(c) for s, c in state.get("covered", {}).items()}
    for i, (tensors, meta) in enumerate(rec.records):
        record = from_journal(tensors, meta)
        if not isinstance(record, PushRecord):
            continue
        held = out.coverage.get(record.sender, Coverage())
        if record.first_step is None or record.last_step is None:
            out.unknown += 1
        else:
            out.intervals.setdefault(record.sender, []).append((record.first_step, record.last_step))
            if record.first_step <= held.last:
                out.violations.append(f"journal record {i}: {record.sender!r} steps {record.first_step}.."
                                      f"{record.last_step} overlap the steps through {held.last} already held")
        out.coverage[record.sender] = held.add(record.first_step, record.last_step)
    return out
