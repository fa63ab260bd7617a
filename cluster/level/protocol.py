"""What a level server answers, and the interface every client of one relies on.

:class:`LevelClient` is the one interface to a shared level: an agent's worker, a level
below forwarding upward and the experiments' attackers all talk to a ``LevelClient``,
whether it is a :class:`~cluster.level.forwarding.LinkedLevel` in this process or a Ray
actor behind :class:`~cluster.actors.RemoteLevel`. Answers are plain frozen dataclasses,
so they pickle through Ray unchanged.

A refusal carries a :class:`RejectCode` (test ``result.code is RejectCode.DUPLICATE``,
never the reason's text) and a human reason ``"<code value>: <detail>"`` naming the
module or value at fault. Counters of refusals are keyed by ``code.value``, the strings
the status JSON has always used.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, TypedDict

from torch import Tensor

from layers.circuits import Proposal
from layers.projection import ReadGrowth


class RejectCode(enum.Enum):
    """Why a push, absorb, proposal or membership change was refused; the value is the counter key in status JSON."""

    BAD_SENDER = "bad sender"
    BAD_TENSORS = "bad tensors"
    DUPLICATE = "duplicate seq"
    BAD_BASE_VERSION = "bad base_version"
    STALE = "staleness"
    UNKNOWN_MODULE = "unknown module"
    MISSING_MODULE = "missing module"
    BAD_DTYPE = "bad dtype"
    BAD_SHAPE = "bad shape"
    NOT_FINITE = "not finite"
    NORM = "norm"
    BAD_PROPOSALS = "bad proposals"
    SENDER_MISMATCH = "sender mismatch"
    BAD_INTERVAL = "bad interval"
    OVERLAP = "interval overlap"
    STORAGE = "storage"  # the journal write failed (disk full, store unreachable): not acknowledged
    # membership (cluster.level.membership): a push or proposal from a member that left, or a bad roster change
    NOT_MEMBER = "not a member"
    DUPLICATE_MEMBER = "already a member"
    LAST_MEMBER = "last member"
    BAD_MEMBER = "bad member"
    NO_MEMBER_LIST = "no member list"


@dataclass(frozen=True)
class Refusal:
    """A failed admission check: the code and what exactly was wrong (naming the module if any)."""

    code: RejectCode
    detail: str

    @property
    def reason(self) -> str:
        """``"<code value>: <detail>"``, e.g. ``"bad shape: 'm.q' is (8, 3), expected (8, 4)"``."""
        return f"{self.code.value}: {self.detail}"


@dataclass(frozen=True)
class PushResult:
    """The answer to a push or an absorb: accepted, or refused with a code and a reason.

    ``version`` is the level's version after the call (a refusal changes nothing).
    """

    accepted: bool
    version: int
    code: RejectCode | None = None
    reason: str = ""

    @classmethod
    def ok(cls, version: int) -> PushResult:
        """An acceptance at ``version``."""
        return cls(True, version)

    @classmethod
    def refused(cls, refusal: Refusal, version: int) -> PushResult:
        """A refusal at ``version`` (unchanged) carrying ``refusal``'s code and reason."""
        return cls(False, version, refusal.code, refusal.reason)

    @property
    def status(self) -> str:
        """``"accepted"`` or ``"rejected"``, as written in reports."""
        return "accepted" if self.accepted else "rejected"

    @property
    def held(self) -> bool:
        """True when the level holds this push: accepted now, or earlier (a duplicate seq)."""
        return self.accepted or self.code is RejectCode.DUPLICATE

    def to_dict(self) -> dict[str, object]:
        """JSON form: ``status``, ``version`` and, for a refusal, ``code`` (its value) and ``reason``."""
        out: dict[str, object] = {"status": self.status, "version": self.version}
        if self.code is not None:
            out.update(code=self.code.value, reason=self.reason)
        return out


@dataclass(frozen=True)
class Coverage:
    """What a level holds from one sender, by the step intervals its pushes carried.

    ``last``: the highest step covered (0: no push with an interval yet); ``pushes``: accepted
    pushes (with or without an interval); ``steps``: the sum of the lengths of their intervals.
    Steps are the sender's own units: agent steps for an agent, merges of the level below for a
    forwarding server. Admission refuses any push whose interval starts at or below ``last``.
    """

    last: int = 0
    pushes: int = 0
    steps: int = 0

    def add(self, first: int | None, last: int | None) -> Coverage:
        """This coverage plus one accepted push over steps ``first..last`` (None: an unknown interval)."""
        if first is None or last is None:
            return Coverage(self.last, self.pushes + 1, self.steps)
        return Coverage(max(self.last, last), self.pushes + 1, self.steps + last - first + 1)

    def to_dict(self) -> dict[str, int]:
        """JSON form (checkpoint meta and status)."""
        return {"last": self.last, "pushes": self.pushes, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Coverage:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["last"]), int(d["pushes"]), int(d["steps"]))


@dataclass(frozen=True)
class CircuitRef:
    """A rank-1 direction ``u w^T`` in ``module``: a circuit the level above accepted, which a
    carrier gives up. ``u``: (d_out,), ``w``: (R,), unit. ``coefficient``: what the level above
    added, ``coefficient * u w^T``, which the carrier removes exactly (so the sum of its levels
    is unchanged); None (records from before the joint consensus): it removes its whole projection."""

    module: str
    u: Tensor
    w: Tensor
    coefficient: float | None = None


@dataclass(frozen=True)
class ProposeResult:
    """The answer to a proposal round.

    Attributes:
        accepted: False when the call itself was malformed (then ``code`` and ``reason`` say why).
        version: the level's version after the call.
        removals: circuits the level accepted from this proposer (now or in an earlier round)
            that it must remove from its own level; each is delivered once.
        rejected: ``(module, why)`` for this proposer's proposals consensus turned down.
    """

    accepted: bool
    version: int
    removals: tuple[CircuitRef, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()
    code: RejectCode | None = None
    reason: str = ""


class PullReply(TypedDict, total=False):
    """The answer to a pull: ``version`` and ``changed`` always; ``tensors`` (module -> B, (d_out, R),
    copies), ``rank`` (the level's rank R) and ``growths`` (the growths of the read space,
    :class:`~layers.projection.ReadGrowth`, the level applied after the version pulled since, in order: the
    puller applies them before the tensors) only when ``changed`` (a growth changes the version); servers
    from before growth send neither."""

    version: int
    changed: bool
    tensors: dict[str, Tensor]
    rank: int
    growths: list[ReadGrowth]


class LevelClient(Protocol):
    """A shared level as its clients see it. Calls never raise on bad input: they refuse."""

    def push(self, sender: str, seq: int, base_version: int, tensors: dict[str, Tensor],
             first_step: int | None = None, last_step: int | None = None) -> PushResult:
        """Offer ``sender``'s gradient (module -> (d_out, R) float32) computed against ``base_version``,
        accumulated over its steps ``first_step..last_step`` (both None: unknown, as old clients send);
        idempotent per ``(sender, seq)`` (a repeat is refused with ``RejectCode.DUPLICATE``), and an
        interval overlapping one already held is refused with ``RejectCode.OVERLAP``."""
        ...

    def pull(self, since_version: int = -1) -> PullReply:
        """The level's tensors, unless it is still at ``since_version``."""
        ...

    def propose(self, sender: str, proposals: list[Proposal]) -> ProposeResult:
        """Offer ``sender``'s stable circuits for consensus; collects its pending removals."""
        ...

    def seen(self, sender: str) -> int:
        """The highest seq accepted from ``sender`` (0: none)."""
        ...

    def covered(self, sender: str) -> Coverage:
        """What the level holds from ``sender`` by step interval (:class:`Coverage`)."""
        ...
