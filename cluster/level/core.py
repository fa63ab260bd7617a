"""The core of one shared level (no Ray): admission, merges, consensus, absorbs, durability.

A push ``(sender, seq, base_version, tensors)`` carries an agent's accumulated gradient
for the level. It is validated (:mod:`cluster.level.admission`), journaled (fsync) and
only then acknowledged; pushes collect in a window, and a full window is merged into one
step of the level (:mod:`cluster.level.merging`); each merge raises the version. Checkpoints
are taken right after a merge, every ``checkpoint_every`` merges.

Every change of the level is a record (:mod:`cluster.level.records`): a command validates,
journals the record, then calls :meth:`LevelCore.apply`, the one place where the level's
tensors and version change. A restart recovers the checkpoint and applies the journal's
records through that same method, so it reaches the same version and the same tensors.
(The window flush :meth:`LevelCore.checkpoint` forces right before it writes is a record too,
so a replay from any checkpoint merges the very same windows.)

Exactly once: a push carries the sender's step interval (``first_step..last_step``); the level
keeps per sender a :class:`~cluster.level.protocol.Coverage` (last step held, pushes, steps),
checkpointed and rebuilt by replay, and refuses (``RejectCode.OVERLAP``) any push whose interval
starts at or below the last step it holds from that sender, whatever its seq.

Circuits: once ``children`` distinct proposers are buffered, a consensus round runs
(:mod:`cluster.level.promotion`); its removals wait in a mailbox each carrier empties on its
next ``propose``. A level with a ``parent`` feeds its merged gradients to an
:class:`~cluster.level.forwarding.Uplink`. Members (:mod:`cluster.level.membership`) join and
leave by journaled records; ``children`` follows them. Checkpoint contents:
:mod:`cluster.level.checkpointing`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cluster.config import ServerConfig
from cluster.level import promotion
from cluster.level.admission import check_delta, check_proposals, check_push
from cluster.level.checkpointing import level_state, restore_level
from cluster.level.forwarding import Uplink, forwarding_gate
from cluster.level.growth import GrowthRecord, grow_level, pad_to_rank, saturated
from cluster.level.membership import (
    MembershipMixin,
    MembershipRecord,
    Roster,
    apply_membership,
    follow_roster,
)
from cluster.level.merging import merge_pending
from cluster.level.protocol import CircuitRef, Coverage, ProposeResult, PullReply, PushResult, Refusal, RejectCode
from cluster.level.records import (
    AbsorbRecord,
    AcceptedCircuit,
    ConsensusRecord,
    FlushRecord,
    PushRecord,
    Record,
    RemovalRecord,
    from_journal,
)
from cluster.level.server_step import ServerStep
from cluster.level.status import ForwardCounters, LevelCounters, LevelStatus
from cluster.metrics import LevelProbe
from cluster.state import flatten, unflatten
from cluster.store import LevelStore
from layers.circuits import CircuitsConfig, CircuitTracker, ModuleTest, Proposal, TokenBucket
from layers.config import LevelsConfig
from layers.dynamics import DynamicsConfig, LevelOptimizer
from layers.merge import MergeConfig, build_aggregator
from layers.projection import ReadGrowth

EVENTS_KEPT = 1000  # recent events held in memory (they are not durable)


class LevelCore(MembershipMixin):
    """One shared level instance (e.g. ``swarm/text``) holding B (module -> (d_out, R)) for every module.

    Read-only to others: ``name``, ``shapes``, ``cfg``, ``circuits``, ``parent``, ``children``, ``members``,
    ``B`` (the live tensors: copy before changing), ``version``, ``merges``, ``pending``,
    ``optimizer``, ``aggregator``, ``uplink`` (None without a parent), ``warnings``.
    """

    probe: LevelProbe = LevelProbe()  # metrics: a no-op unless the server actor installs a live one (after replay)

    def __init__(self, name: str, shapes: Mapping[str, tuple[int, int]], *, merge: MergeConfig | None = None,
                 dynamics: DynamicsConfig | None = None, circuits: CircuitsConfig | None = None,
                 server: ServerConfig | None = None, store_dir: str | Path | None = None,
                 config_hash: str = "", parent: str | None = None, children: int | None = None,
                 growth: LevelsConfig | None = None, members: Sequence[str] = (),
                 window_follows_members: bool = False) -> None:
        """A level at version 0, or recovered from ``store_dir`` when it holds a checkpoint or journal.

        ``members``: its children's names (:mod:`cluster.level.membership`; empty: only a count is
        known); ``children``: distinct proposers a consensus round waits for (default: the number of
        members, at least 1). ``window_follows_members``: the merge window is the number of members
        (an upper level without ``server.upper_window``), also after joins and leaves. Raises
        ``ValueError`` when ``children`` contradicts ``members``, for a bad member name, or when the
        store was written with another ``config_hash``. ``growth``: the levels config whose ``max_rank``,
        ``grow_after`` and ``grow_step`` drive automatic growth (:mod:`cluster.level.growth`; None: off).
        """
        self.name, self.shapes = name, dict(shapes)
        self.cfg, self.circuits = server or ServerConfig(), circuits or CircuitsConfig()
        self.roster, self.window_follows_members = Roster(members), window_follows_members
        if members and children is not None and children != len(self.roster.members):
            raise ValueError(f"{name}: children={children} but {len(self.roster.members)} members {list(members)}")
        self.parent, self.children = parent, max(1, children or 0)
        follow_roster(self)
        self.B = {m: torch.zeros(s) for m, s in self.shapes.items()}  # (d_out, R) each
        self.aggregator = build_aggregator(merge or MergeConfig())
        dynamics = dynamics or DynamicsConfig()
        self.optimizer = LevelOptimizer(self.B, dynamics)
        self.server_step = ServerStep(self.cfg.step, self.cfg.lr)
        self.warnings: list[str] = []
        self.storage_error: str | None = None  # the last failed store write, until one succeeds (status says it)
        self._version = 0
        self._last_seq: dict[str, int] = {}
        self._covered: dict[str, Coverage] = {}  # sender -> the step intervals held from it
        self._window: list[PushRecord] = []
        self._counters = LevelCounters()
        # the level above: merged gradients are forwarded when the gate fires, at most every forward_every merges
        self._uplink = Uplink(name, self.shapes, forwarding_gate(dynamics.sync, self.cfg)) if parent else None
        self._tracker = CircuitTracker(self.circuits)  # its own circuits: to list, and to propose upward
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._event_seq = 0
        self._phase_mark = 0.0  # screened fraction at the last phase event
        self._proposals: dict[str, list[Proposal]] = {}  # proposer -> its latest proposals, until consensus runs
        self._mailbox: dict[str, list[CircuitRef]] = {}  # proposer -> removals it has not collected yet
        self._rejections: dict[str, list[tuple[str, str]]] = {}  # proposer -> (module, why) not yet told
        # the bandwidth limit of the boundary below: clocked by this level's merges, spent in apply()
        self._bucket = TokenBucket(self.circuits.tokens_per_window, self.circuits.window)
        self.last_consensus: list[ModuleTest] = []  # the latest round's joint tests (for diagnosis; not durable)
        # module -> the latest circuit consensus added here: stable by its carriers' detectors, so it is
        # eligible upward at once (this level's own tracker would need min_age merges to vouch for it)
        self._inherited: dict[str, AcceptedCircuit] = {}
        # growth of the read space (cluster.level.growth): the log (version after, event), the policy
        self.growths: list[tuple[int, ReadGrowth]] = []
        self.growth_policy, self.saturated_merges, self.padded_pushes = growth, 0, 0
        self._store = LevelStore(store_dir, config_hash=config_hash) if store_dir is not None else None
        # no checkpoint during a replay: one written mid-replay would start a new journal segment while
        # the records still to replay sit in the older one, and the next recovery would skip them
        self._replaying = False
        if self._store is not None:
            self._recover()

    # ------------------------------------------------------------------ reading
    @property
    def version(self) -> int:
        """Changes applied so far (merges, consensus rounds, removals, absorbs)."""
        return self._version

    @property
    def rank(self) -> int:
        """R: the read space's rank the level's B have now (grows with growth events)."""
        return next(iter(self.shapes.values()))[1] if self.shapes else 0

    @property
    def merges(self) -> int:
        """Merges so far."""
        return self._counters.merges

    @property
    def pending(self) -> tuple[PushRecord, ...]:
        """The accepted pushes waiting in the merge window, oldest first."""
        return tuple(self._window)

    @property
    def members(self) -> tuple[str, ...]:
        """Its children's names, sorted (empty: built from a count only; :mod:`cluster.level.membership`)."""
        return self.roster.members

    @property
    def uplink(self) -> Uplink | None:
        """What this level owes its parent (None without a parent); :class:`LinkedLevel` delivers it."""
        return self._uplink

    def seen(self, sender: str) -> int:
        """The highest seq accepted from ``sender`` (0: none); a restarted sender resumes above it."""
        return self._last_seq.get(sender, 0)

    def covered(self, sender: str) -> Coverage:
        """What the level holds from ``sender`` by step interval (empty: nothing with an interval); a
        restarted sender skips its steps through ``last`` rather than push them again."""
        return self._covered.get(sender, Coverage())

    def pull(self, since_version: int = -1) -> PullReply:
        """``version`` and ``changed``; also copies of the tensors unless still at ``since_version``."""
        if since_version == self._version:
            return {"version": self._version, "changed": False}  # a growth changes the version: none since
        return {"version": self._version, "changed": True, "tensors": {m: t.clone() for m, t in self.B.items()},
                "rank": self.rank, "growths": [e for v, e in self.growths if v > since_version]}

    def status(self) -> LevelStatus:
        """A snapshot of the level (its ``to_dict()`` is the status JSON)."""
        up = self._uplink
        return LevelStatus(self.name, self._version, len(self._window), self._counters.copy(),
                            up.counters.copy() if up is not None else ForwardCounters(), dict(self._last_seq),
                            list(self.warnings), len(up.outbox) if up is not None else 0,
                            {**self.optimizer.report(), "rank": float(self.rank), "growths": float(len(self.growths)),
                             "padded_pushes": float(self.padded_pushes)},
                            self.storage_error, self.roster.members, self.children)

    def events_since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Events (seq, kind, version, detail, time) numbered above ``seq``; the newest 1000, in memory."""
        return [e for e in self._events if e["seq"] > seq]

    def tracked_circuits(self) -> list[dict[str, Any]]:
        """Every circuit the level's tracker follows: id, module, strength, stability score, age, u, w."""
        return [{"id": c.id, "module": c.module, "strength": float(c.strength), "score": float(c.score),
                 "age": int(c.age), "u": c.u.float().clone(), "w": c.w.float().clone()} for c in self._tracker.all()]

    def proposals_up(self) -> list[Proposal]:
        """This level's stable circuits, as proposals to the level above (:func:`promotion.proposals_up`)."""
        return promotion.proposals_up(self)

    # ------------------------------------------------------------------ commands
    def push(self, sender: str, seq: int, base_version: int, tensors: Mapping[str, Tensor],
             first_step: int | None = None, last_step: int | None = None) -> PushResult:
        """Validate, journal, then acknowledge; merges when the window is full. ``first_step..last_step``:
        the sender's steps the gradient sums (both None: unknown). Never raises on bad input. A gradient at
        a rank this level grew from is zero-padded (``padded_pushes``); other shapes are refused, and so is
        anything from a member that left (``NOT_MEMBER``)."""
        if self.growths and isinstance(tensors, Mapping):
            tensors, padded = pad_to_rank(tensors, self.shapes, {e.from_rank for _, e in self.growths})
            self.padded_pushes += padded
        refusal = self.roster.admits(self.name, sender) or check_push(
            sender, seq, base_version, tensors, shapes=self.shapes, last_seq=self._last_seq, version=self._version,
            max_staleness=self.cfg.max_staleness, max_norm=self.cfg.max_norm, first_step=first_step,
            last_step=last_step, covered=self._covered)
        if refusal:
            return self._refuse(refusal)
        failed = self._durably(PushRecord(sender, seq, base_version,
                                          {m: t.detach().clone() for m, t in tensors.items()}, first_step, last_step))
        if failed:
            return self._refuse(failed)
        proposal = saturated(self)  # the level's automatic growth (off unless levels.grow_after and max_rank)
        if proposal is not None:
            self.grow(proposal)
        return PushResult.ok(self._version)

    def grow(self, event: ReadGrowth) -> PushResult:
        """Grow the level's read space by ``event`` (journaled, checkpointed, one version; see
        :mod:`cluster.level.growth`). An event the level is already past (``to_rank <= rank``) is
        accepted as a no-op; one that does not start at the level's rank is refused (bad shape)."""
        if event.to_rank <= self.rank:
            return PushResult.ok(self._version)
        if event.from_rank != self.rank:
            return self._refuse(Refusal(RejectCode.BAD_SHAPE, f"{self.name}: growth {event.from_rank}->"
                                        f"{event.to_rank} does not start at the level's rank {self.rank}"))
        if self._window:  # journaled: the window merges at the old rank, as a replay will
            self._commit(FlushRecord())
        failed = self._durably(GrowthRecord(event))
        if failed:
            return self._refuse(failed)
        self.checkpoint()
        return PushResult.ok(self._version)

    def propose(self, sender: str, proposals: list[Proposal]) -> ProposeResult:
        """Buffer ``sender``'s proposals (its latest set replaces an older one); once ``children``
        distinct proposers are in, run consensus. Returns removals waiting for ``sender``
        (from this round or an earlier one) and the rejections of its proposals; a member that left is
        refused (``NOT_MEMBER``). Never raises."""
        refusal = check_proposals(sender, proposals) or self.roster.admits(self.name, sender)
        if refusal:
            _bump(self._counters.rejected_proposals, refusal)
            return ProposeResult(False, self._version, code=refusal.code, reason=refusal.reason)
        self._proposals[sender] = list(proposals)
        if len(self._proposals) >= self.children:
            promotion.run_round(self)
        return ProposeResult(True, self._version, tuple(self._mailbox.pop(sender, [])),
                             tuple(self._rejections.pop(sender, [])))

    def remove(self, removals: Sequence[CircuitRef]) -> None:
        """Give up this level's projection onto circuits the level above accepted (journaled)."""
        if removals:
            self._commit(RemovalRecord(tuple(removals)))

    def absorb(self, tensors: Mapping[str, Tensor], source: str) -> PushResult:
        """Add an outside delta (module -> (d_out, R), a subset of modules) to the level: validated,
        journaled and checkpointed like a merge, one version. Never raises on bad input."""
        refusal = check_delta(tensors, shapes=self.shapes)
        if refusal:
            return self._refuse(refusal)
        failed = self._durably(AbsorbRecord(str(source),
                                            {m: tensors[m].detach().float().clone() for m in sorted(tensors)}))
        if failed:
            return self._refuse(failed)
        self.checkpoint()
        return PushResult.ok(self._version)

    def checkpoint(self) -> None:
        """Checkpoint now (a pending window is merged first); a no-op without a store or if the newest
        checkpoint holds this version."""
        if self._store is None:
            return
        if self._window:  # journaled: a replay from an older checkpoint merges this same window
            self._commit(FlushRecord())
        latest = self._store.latest_valid()
        if latest is not None and latest.version == self._version:
            return
        state = level_state(self)
        tensors, skeleton = flatten(state)
        self._store.checkpoint(self._version, tensors, {"state": skeleton})

    # ------------------------------------------------------------------ the one state transition
    def apply(self, record: Record) -> None:
        """Apply one journal record to the level (live, after journaling it; or at replay).

        Raises ``TypeError`` for anything that is not a record.
        """
        if isinstance(record, PushRecord):
            self._last_seq[record.sender] = record.seq
            self._covered[record.sender] = self.covered(record.sender).add(record.first_step, record.last_step)
            self._counters.accepted += 1
            self._window.append(record)
            if len(self._window) >= self.cfg.window:
                self._merge()
        elif isinstance(record, ConsensusRecord):
            promotion.apply_consensus(self, record)
        elif isinstance(record, RemovalRecord):
            promotion.apply_removals(self, record)
        elif isinstance(record, FlushRecord):
            self._merge()
        elif isinstance(record, GrowthRecord):
            grow_level(self, record.event)
        elif isinstance(record, AbsorbRecord):
            for m, t in record.tensors.items():
                self.B[m].add_(t.to(self.B[m]))
            self._version += 1
            self._counters.absorbed += 1
            self._event("absorb", f"{record.source}: {len(record.tensors)} modules")
        elif isinstance(record, MembershipRecord):
            apply_membership(self, record)
        else:
            raise TypeError(f"{self.name}: not a journal record: {type(record).__name__}")

    # ------------------------------------------------------------------ internals
    def _durably(self, record: Record) -> Refusal | None:
        """Commit ``record``; a journal write that fails (``OSError``: disk full, store unreachable)
        changes nothing and comes back as a ``storage`` refusal, kept in the status until a write succeeds."""
        try:
            if self._store is not None:
                self._store.append(*record.to_journal())
        except OSError as e:
            self.storage_error = f"journal write failed: {e}"
            return Refusal(RejectCode.STORAGE, f"{self.name}: {self.storage_error}; not acknowledged")
        self.storage_error = None  # the write went through (a checkpoint the record triggers may set it again)
        self.apply(record)
        return None

    def _commit(self, record: Record) -> None:
        if self._store is not None:
            self._store.append(*record.to_journal())  # durable before it takes effect (and is acknowledged)
        self.apply(record)

    def _refuse(self, refusal: Refusal) -> PushResult:
        _bump(self._counters.rejected, refusal)
        self._event("rejected", refusal.reason)
        return PushResult.refused(refusal, self._version)

    def _event(self, kind: str, detail: str) -> None:
        self._event_seq += 1
        self._events.append({"seq": self._event_seq, "kind": kind, "version": self._version, "detail": detail,
                             "time": time.time()})

    def _merge(self) -> None:
        if not self._window:
            return
        merge_pending(self)
        if self._store is not None and not self._replaying and self._counters.merges % self.cfg.checkpoint_every == 0:
            try:
                self.checkpoint()
            except OSError as e:  # not fatal: the journal holds everything since the last checkpoint
                self.storage_error = f"checkpoint at version {self._version} failed: {e}"

    def _recover(self) -> None:
        rec = self._store.recover()
        self.warnings = rec.warnings
        if rec.checkpoint is not None:
            restore_level(self, unflatten(rec.tensors, rec.checkpoint.meta["state"]))
        self._replaying = True
        try:
            for tensors, meta in rec.records:  # replay through apply, without re-journaling
                self.apply(from_journal(tensors, meta))
        finally:
            self._replaying = False


def _bump(counts: dict[str, int], refusal: Refusal) -> None:
    """Count one refusal under its code's value."""
    key = refusal.code.value
    counts[key] = counts.get(key, 0) + 1
