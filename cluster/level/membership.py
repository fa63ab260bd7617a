"""Membership of a level server: its children by name, and how they join and leave (issue 18).

A server knows its members: the sorted names of its children (agent ids at a team server, the
names of the child servers above it; :class:`cluster.topology.ServerSpec`). ``children``, the
distinct proposers a consensus round waits for, is their number; where the merge window is sized
from it (above the first shared level with ``server.upper_window`` unset, ``window_follows_members``)
the window is that number too. :meth:`MembershipMixin.add_member` and
:meth:`MembershipMixin.remove_member` change the roster while the server runs; each change is a
journal record (:class:`MembershipRecord`, kind ``membership``, meta ``kind, op, member``, no
tensors) applied by :meth:`cluster.level.core.LevelCore.apply` like any other, so a restart replays
it, and the roster is checkpointed (``membership``: ``members``, ``left``; checkpoints from before
it load with the spec's members).

Refused, state untouched (a :class:`MembershipResult` with a code and ``"<code value>: <detail>"``):
a name that is not a non-empty string (``BAD_MEMBER``), adding a current member
(``DUPLICATE_MEMBER``), removing a non-member (``NOT_MEMBER``), removing the last member
(``LAST_MEMBER``: nothing would be left to propose, the server would starve), any change at a
server built from a children count without names (``NO_MEMBER_LIST``), a failed journal write
(``STORAGE``).

Leaving: the member's buffered proposals are dropped (a round waits for the remaining members
and runs at the next proposal once they are all in); its pushes already acknowledged stay in the
window and are merged (acknowledged means learned: exactly once), at once when the window shrank
to what it holds; any later push or proposal from it is refused with ``NOT_MEMBER`` until it is
added again. A re-added member keeps its seq and step numbering (``seen``, ``covered``): it
resumes from its own checkpoint. A change is no version of the level (its tensors do not change).

Admission of senders never listed is open, as before members had names: the experiments'
attackers and joiners (:mod:`swarm.experiment`) push under names outside the topology, and a
server built without names knows none. Only members that left are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from cluster.level.protocol import Refusal, RejectCode

if TYPE_CHECKING:
    from cluster.level.core import LevelCore

Journal = tuple[dict[str, Tensor], dict[str, Any]]
OPS = ("add", "remove")


@dataclass(frozen=True)
class MembershipRecord:
    """``member`` joins (``op`` ``"add"``) or leaves (``"remove"``) the server's roster."""

    kind: ClassVar[str] = "membership"
    op: str
    member: str

    def to_journal(self) -> Journal:
        """``({}, {"kind": "membership", "op": op, "member": member})``."""
        return {}, {"kind": self.kind, "op": self.op, "member": self.member}

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> MembershipRecord:
        """Inverse of :meth:`to_journal`; raises ``KeyError`` for a missing key, ``ValueError`` for an unknown op."""
        op = str(meta["op"])
        if op not in OPS:
            raise ValueError(f"membership record with unknown op {op!r} (known: {list(OPS)})")
        return cls(op, str(meta["member"]))


@dataclass(frozen=True)
class MembershipResult:
    """The answer to ``add_member``/``remove_member``: done, or refused with a code and a reason.

    ``children``: the number of members after the call; ``version``: the level's version after it
    (a membership change is no version of the level's tensors; a leave that fills the window merges it).
    """

    ok: bool
    code: RejectCode | None
    reason: str
    children: int
    version: int

    def to_dict(self) -> dict[str, Any]:
        """The plain form the server actor returns: ``ok``, ``code`` (the code's name, e.g.
        ``"NOT_MEMBER"``, or None), ``reason``, ``children``, ``version``."""
        return {"ok": self.ok, "code": None if self.code is None else self.code.name, "reason": self.reason,
                "children": self.children, "version": self.version}


class Roster:
    """Who the server's members are (sorted) and who left (removed, not added again)."""

    def __init__(self, members: Iterable[str] = ()) -> None:
        """Raises ``ValueError`` for a name that is not a non-empty string, or one listed twice."""
        members = list(members)
        bad = [m for m in members if _bad_name(m)]
        if bad:
            raise ValueError(f"members: {bad[0]!r} is not a non-empty string")
        if len(set(members)) != len(members):
            raise ValueError(f"members: {sorted(m for m in members if members.count(m) > 1)[0]!r} listed twice")
        self.members: tuple[str, ...] = tuple(sorted(members))
        self.left: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        """Whether the server knows its members by name (False: built from a children count only)."""
        return bool(self.members)

    def check(self, server: str, op: str, member: Any) -> Refusal | None:
        """None when ``op`` (``"add"``/``"remove"``) of ``member`` is allowed now, else the first refusal."""
        if _bad_name(member):
            return Refusal(RejectCode.BAD_MEMBER, f"a member is named by a non-empty string, got "
                                                  f"{type(member).__name__} {member!r} (at {server})")
        if not self.named:
            return Refusal(RejectCode.NO_MEMBER_LIST, f"{server} was built from a children count without "
                                                      f"member names: it cannot {op} {member!r}")
        if op == "add" and member in self.members:
            return Refusal(RejectCode.DUPLICATE_MEMBER, f"{member!r} is already a member of {server}")
        if op == "remove" and member not in self.members:
            what = "left it earlier" if member in self.left else "never joined it"
            return Refusal(RejectCode.NOT_MEMBER, f"{member!r} is not a member of {server} ({what})")
        if op == "remove" and len(self.members) == 1:
            return Refusal(RejectCode.LAST_MEMBER, f"{member!r} is the last member of {server}: without it no "
                                                   "one proposes or forwards, the server would starve")
        return None

    def admits(self, server: str, sender: Any) -> Refusal | None:
        """None unless ``sender`` is a member that left ``server`` (then ``NOT_MEMBER``): senders never
        listed are admitted (see the module doc)."""
        if isinstance(sender, str) and sender in self.left:
            return Refusal(RejectCode.NOT_MEMBER, f"{sender!r} left {server}: nothing from it is taken "
                                                  "until it is added again")
        return None

    def apply(self, record: MembershipRecord) -> None:
        """The roster after ``record`` (tolerant: adding a member twice or removing a non-member is a no-op)."""
        members, left = set(self.members), set(self.left)
        if record.op == "add":
            members.add(record.member)
            left.discard(record.member)
        else:
            members.discard(record.member)
            left.add(record.member)
        self.members, self.left = tuple(sorted(members)), tuple(sorted(left))

    def state_dict(self) -> dict[str, list[str]]:
        """Checkpoint form: ``members`` and ``left``, sorted lists."""
        return {"members": list(self.members), "left": list(self.left)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.members = tuple(sorted(str(m) for m in state["members"]))
        self.left = tuple(sorted(str(m) for m in state.get("left", [])))


class MembershipMixin:
    """``add_member`` and ``remove_member`` of :class:`cluster.level.core.LevelCore` (see the module doc)."""

    def add_member(self: LevelCore, member: str) -> MembershipResult:
        """``member`` joins: one more proposer per consensus round (and window slot, where it follows
        the members); a member that left is taken again, its numbering continuing. Never raises."""
        return change_membership(self, "add", member)

    def remove_member(self: LevelCore, member: str) -> MembershipResult:
        """``member`` leaves: its buffered proposals are dropped, its acknowledged pushes still merge,
        anything it sends later is refused (``NOT_MEMBER``). Never raises."""
        return change_membership(self, "remove", member)


def change_membership(core: LevelCore, op: str, member: Any) -> MembershipResult:
    """Check, journal and apply one roster change of ``core``; a refusal changes nothing."""
    refusal = core.roster.check(core.name, op, member) or core._durably(MembershipRecord(op, member))
    if refusal:
        return MembershipResult(False, refusal.code, refusal.reason, core.children, core.version)
    return MembershipResult(True, None, "", core.children, core.version)


def follow_roster(core: LevelCore) -> None:
    """``core.children`` (and its window, where it follows the members) from its roster."""
    if not core.roster.named:
        return
    core.children = len(core.roster.members)
    if core.window_follows_members and core.cfg.window != core.children:
        core.cfg = dataclasses.replace(core.cfg, window=core.children)


def apply_membership(core: LevelCore, record: MembershipRecord) -> None:
    """The state transition of a :class:`MembershipRecord` (no version of its own, unless the window
    shrank to what it holds already: then it merges now, as a replay does)."""
    core.roster.apply(record)
    if record.op == "remove":
        core._proposals.pop(record.member, None)  # a round no longer waits for it, nor takes its set
    follow_roster(core)
    verb = "joined" if record.op == "add" else "left"
    core._event("membership", f"{record.member} {verb}: {core.children} members, window {core.cfg.window}")
    if len(core.pending) >= core.cfg.window:
        core._merge()


def _bad_name(name: Any) -> bool:
    return not isinstance(name, str) or not name.strip()
