"""Circuits of a level: the consensus round that promotes them into it, and what it gives up to the level above.

Proposers (agents, or the levels below) send, per module with a stable circuit, their write
matrix; once ``children`` distinct proposers are buffered, :func:`run_round` runs the joint
consensus (:func:`layers.circuits.consensus`). Accepted circuits pass the boundary's token bucket
(``tokens_per_window`` per ``window`` merges of this level; a circuit whose carriers' lowest score
reaches ``bypass_threshold`` passes an empty bucket) and are journaled as one
:class:`~cluster.level.records.ConsensusRecord`; :func:`apply_consensus` adds each to the level
and mails each carrier its removal (``sigma u w^T``, exactly what the level added), which it
collects on its next ``propose``. A level with a ``parent`` proposes its own circuits upward
(:func:`proposals_up`); the removals it gets back are journaled (:func:`apply_removals`).

All functions take a :class:`cluster.level.core.LevelCore` and change it only as documented.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from cluster.level.protocol import CircuitRef
from cluster.level.records import AcceptedCircuit, ConsensusRecord, RemovalRecord
from layers.circuits import Proposal, consensus, proposals_from, remove_projection

if TYPE_CHECKING:
    from cluster.level.core import LevelCore


def run_round(core: LevelCore) -> None:
    """One consensus round over every buffered proposal (the buffer empties): accepted circuits the
    bucket lets through are journaled and applied; the rest, and the rejections, wait for their
    proposers in ``core._rejections``. A round with no token left and no circuit able to bypass
    skips the tests (every proposal is deferred)."""
    batch = [p for props in core._proposals.values() for p in props]
    core._proposals = {}
    core._bucket.refill(core.merges)
    tokens, taken = core._bucket.tokens, []
    bypass_at = core.circuits.bypass_threshold
    if tokens <= 0 and all(p.score < bypass_at for p in batch):
        # nothing could be taken: spare the tests; the members keep their circuits and propose again
        for p in batch:
            core._rejections.setdefault(p.agent_id, []).append((p.module, "deferred: bandwidth limit"))
        core._event("consensus", f"{len(batch)} proposals deferred: no tokens until "
                                 f"{core._bucket.last_refill + core._bucket.window} merges")
        return
    result = consensus(batch, core.shapes, core.circuits, seed=core.version)
    core.last_consensus = result.tests
    for c in sorted(result.accepted, key=lambda c: c.score * c.sigma, reverse=True):  # best first
        bypass = tokens <= 0
        if bypass and c.score < bypass_at:
            core._counters.deferred += 1  # its carriers keep it and propose it again
            for a in c.agents:
                core._rejections.setdefault(a, []).append((c.module, "deferred: bandwidth limit"))
            continue
        tokens -= not bypass
        taken.append(AcceptedCircuit(c.module, float(c.sigma), tuple(c.agents), c.u.float(), c.w.float(),
                                     bypass, score=float(c.score)))
    if taken:
        core._commit(ConsensusRecord(tuple(taken)))
    for p, why in result.rejected:
        core._rejections.setdefault(p.agent_id, []).append((p.module, why))
    accepted = sum(t.accepted for t in result.tests)
    core._event("consensus", f"{len(batch)} proposals, {len(result.tests)} joint tests, {accepted} accepted, "
                             f"{len(taken)} taken")


def apply_consensus(core: LevelCore, record: ConsensusRecord) -> None:
    """The state transition of a :class:`ConsensusRecord` (one version): each circuit added to its
    module's B (d_out, R), its removal mailed to each carrier, its token spent (unless bypassed)."""
    core._bucket.refill(core.merges)
    for c in record.circuits:
        core.B[c.module].add_(c.sigma * torch.outer(c.u, c.w).float())  # (d_out, R)
        for agent in c.agents:  # each carrier removes exactly what was added (old records: its projection)
            core._mailbox.setdefault(agent, []).append(
                CircuitRef(c.module, c.u.clone(), c.w.clone(), float(c.sigma) if c.exact else None))
        core._inherited[c.module] = c
        if c.bypassed:
            core._counters.bypassed += 1
        else:
            core._bucket.take()
    core._version += 1
    core._counters.promotions += len(record.circuits)
    core.probe.promoted(len(record.circuits))
    for c in record.circuits:
        core._event("promotion", f"{c.module}: sigma {c.sigma:.3g} from {', '.join(c.agents)}")


def apply_removals(core: LevelCore, record: RemovalRecord) -> None:
    """The state transition of a :class:`RemovalRecord` (one version): the level gives up its
    projection onto each circuit the level above accepted from it."""
    for r in record.removals:
        remove_projection(core.B[r.module], r.u, r.w, r.coefficient)
        core._inherited.pop(r.module, None)  # the level above took this module's shared part
        core._tracker.forget_near(r.module, r.u, r.w)
    core._version += 1
    core._counters.removed += len(record.removals)


def proposals_up(core: LevelCore) -> list[Proposal]:
    """``core``'s stable circuits, as proposals to the level above (empty without a parent): one per
    module where its tracker has a candidate or where consensus added a circuit (stability inherited
    from the carriers' detectors), each carrying the level's matrix of the module."""
    if not core.parent or not core.circuits.promote:
        return []
    out = proposals_from(core._tracker, core.name)
    have = {p.module for p in out}
    for module, c in sorted(core._inherited.items()):
        if module not in have:
            s = float(c.u @ core.B[module] @ c.w)  # its current strength here
            out.append(Proposal(core.name, module, abs(s), c.u.clone() * math.copysign(1.0, s), c.w.clone(),
                                c.score, core.B[module].detach().clone()))
    return out
