"""Growth of the swarm's read space as a journaled event of a level (DESIGN: "grow when knowledge does not fit").

A growth (:class:`~layers.projection.ReadGrowth`: rank ``from_rank -> to_rank``, and the rows it
carries, if any) is a record of a level's journal (:class:`GrowthRecord`, kind ``growth``), applied
by :meth:`cluster.level.core.LevelCore.apply` through :func:`grow_level`: every B gains zero columns,
and so does everything the level holds at the old rank (optimizer state, the pending window, the
uplink's sum and outbox, mailbox and inherited circuits; trackers, buffered proposals and the
aggregator's center restart). The level keeps its growth log (checkpointed), and a pull since a
version carries the growths applied after it (``PullReply["growths"]``, ``["rank"]``), so a client
applies them before the tensors it pulled.

How the swarm agrees: a growth enters at one level (``swarm absorb --grow``, a test, or the level's
own automatic growth, :func:`saturated`); every agent that pulls it applies it (rows carried in the
event, or continuation rows computed from P's bits, identical in every process) and hands it on
(:func:`send_growth`) to each of its other level servers still at a lower rank, which journal it
too. Growth is idempotent by rank, so a level or agent hearing of it twice applies it once.

Pushes at a rank the level grew from are zero-padded explicitly (:func:`pad_to_rank`; counted as
``padded_pushes``): they were computed before the growth, when the new columns did not exist, so
their gradient there is zero. Anything else of a wrong shape is refused as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from layers.circuits import CircuitTracker
from layers.projection import ReadGrowth

if TYPE_CHECKING:
    from cluster.level.core import LevelCore

Journal = tuple[dict[str, Tensor], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class GrowthRecord:
    """A growth of the read space, journaled: meta ``kind, from_rank, to_rank, source, modules``; tensors:
    module -> the rows the event carries ((to_rank - from_rank, d_in), float64), none for continuation rows."""

    kind: ClassVar[str] = "growth"
    event: ReadGrowth

    def to_journal(self) -> Journal:
        """``(tensors, meta)`` to append, modules sorted."""
        modules = sorted(self.event.rows)
        return ({m: self.event.rows[m] for m in modules},
                {"kind": self.kind, "from_rank": self.event.from_rank, "to_rank": self.event.to_rank,
                 "source": self.event.source, "modules": modules})

    @classmethod
    def from_journal(cls, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> GrowthRecord:
        """Inverse of :meth:`to_journal`; raises ``KeyError`` for a missing key or tensor."""
        return cls(ReadGrowth(int(meta["from_rank"]), int(meta["to_rank"]), {m: tensors[m] for m in meta["modules"]},
                              str(meta.get("source", ""))))


def is_growth(meta: Mapping[str, Any]) -> bool:
    """Whether a journal entry's meta is a growth record."""
    return meta.get("kind") == GrowthRecord.kind


def pad_columns(t: Tensor, rank: int) -> Tensor:
    """``t`` (d_out, r) with zero columns up to ``rank`` (a copy; ``t`` itself when r == rank)."""
    if t.shape[-1] == rank:
        return t
    return torch.cat([t, t.new_zeros(*t.shape[:-1], rank - t.shape[-1])], dim=-1)


def pad_vector(v: Tensor, rank: int) -> Tensor:
    """A read vector ``v`` (r,) with zeros up to ``rank``."""
    return v if v.shape[0] == rank else torch.cat([v, v.new_zeros(rank - v.shape[0])])


def pad_to_rank(tensors: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, int]],
                ranks: set[int]) -> tuple[dict[str, Tensor], bool]:
    """``tensors`` with every (d_out, r) whose r is one of ``ranks`` (ranks the level grew from) zero-padded
    to its module's shape; the rest as they are (admission judges them). Returns (tensors, padded any)."""
    out, padded = {}, False
    for m, t in tensors.items():
        shape = shapes.get(m)
        if (shape is not None and isinstance(t, Tensor) and t.ndim == 2 and t.shape[0] == shape[0]
                and t.shape[1] in ranks and t.shape[1] < shape[1]):
            out[m], padded = pad_columns(t, shape[1]), True
        else:
            out[m] = t
    return out, padded


def grow_level(core: LevelCore, event: ReadGrowth) -> None:
    """Apply ``event`` to a level core (the state transition of a :class:`GrowthRecord`; one version).

    Raises ``ValueError`` when the level is not at ``event.from_rank`` (checked before any change).
    """
    if core.rank != event.from_rank:
        raise ValueError(f"{core.name}: growth {event.from_rank}->{event.to_rank} does not start at the level's "
                         f"rank {core.rank}")
    rank = event.to_rank
    with torch.no_grad():
        for m in list(core.B):
            core.B[m] = pad_columns(core.B[m], rank)  # (d_out, R')
            core.optimizer.params[m] = core.B[m]
            core.shapes[m] = (core.shapes[m][0], rank)
    core.optimizer.resize()  # new columns get fresh state (hot: not crystallised)
    core._window = [dataclasses.replace(r, tensors={m: pad_columns(t, rank) for m, t in r.tensors.items()})
                    for r in core._window]
    core._mailbox = {a: [dataclasses.replace(r, w=pad_vector(r.w, rank)) for r in refs]
                     for a, refs in core._mailbox.items()}
    core._inherited = {m: dataclasses.replace(c, w=pad_vector(c.w, rank)) for m, c in core._inherited.items()}
    core._tracker = CircuitTracker(core.circuits)  # its circuits' read vectors have the old rank
    core._proposals = {}  # proposers send their next set at the new rank
    up = core._uplink
    if up is not None:
        up.pending = {m: pad_columns(t, rank) for m, t in up.pending.items()}
        up.outbox = [dataclasses.replace(e, tensors={m: pad_columns(t, rank) for m, t in e.tensors.items()})
                     for e in up.outbox]
        up.gate.reset()  # its window's sums have the old shape
    step = getattr(core, "server_step", None)  # Adam moments of the merged gradients (server.step: adam)
    if step is not None:
        step.m = {k: pad_columns(t, rank) for k, t in step.m.items()}
        step.v = {k: pad_columns(t, rank) for k, t in step.v.items()}
    state = core.aggregator.state_dict()
    if state:  # a center (momentum) over the flattened old blocks: restart it
        core.aggregator.load_state_dict({k: None for k in state})
    core._version += 1
    core.growths.append((core._version, event))
    core.saturated_merges = 0
    rows = f"rows carried for {len(event.rows)} modules" if event.rows else "continuation rows"
    core._event("growth", f"rank {event.from_rank} -> {event.to_rank} ({event.source or 'unnamed'}, {rows})")


def saturated(core: LevelCore) -> ReadGrowth | None:
    """The growth this level proposes now, or None: ``growth_needed`` (crystallised fraction above the
    temperature's ``growth_fraction``) held at ``policy.grow_after`` merges in a row, and the rank can still
    rise (by ``policy.grow_step``, capped at ``policy.max_rank``; no cap set: no automatic growth)."""
    policy = core.growth_policy
    if (policy is None or not policy.grow_after or policy.max_rank is None
            or core.saturated_merges < policy.grow_after):
        return None
    to_rank = min(core.rank + policy.grow_step, policy.max_rank)
    if to_rank <= core.rank:
        return None
    return ReadGrowth(core.rank, to_rank, source=f"{core.name}: growth_needed for {core.saturated_merges} merges")


def send_growth(client: Any, event: ReadGrowth) -> None:
    """Hand ``event`` to a level server however the client reaches it: a :class:`LevelCore` (``grow``), a
    :class:`~cluster.level.forwarding.LinkedLevel` (its ``core``), or a Ray actor behind
    :class:`~cluster.actors.RemoteLevel` (run in the actor on its core, then its status republished)."""
    if hasattr(client, "grow"):
        client.grow(event)
    elif hasattr(client, "core"):
        client.core.grow(event)
    elif hasattr(client, "handle"):
        import ray

        ray.get(client.handle.__ray_call__.remote(_grow_in_actor, event))
    else:
        raise TypeError(f"send_growth: cannot reach a level server through a {type(client).__name__}")


def _grow_in_actor(actor: Any, event: ReadGrowth) -> int:
    """Run inside a ``LevelServerActor``: grow its core, publish its status; returns the level's version."""
    actor.core.grow(event)
    actor._changed()
    return actor.core.version
