"""What a level's checkpoint holds, and how a level is restored from one.

A checkpoint (written right after a merge every ``checkpoint_every`` merges, or when asked; its
pending window is flushed first) holds the level's B, the optimizer, aggregator and server-step
state, the growth log, the per-sender sequence numbers and step coverage, the counters, the
mailbox, the token bucket, the inherited circuits, the uplink and the roster. :func:`level_state`
builds that state (a nested dict of tensors and plain values, flattened by the store);
:func:`restore_level` loads it back. Keys added over time are optional on load: a checkpoint from
before them restores what it has and leaves the rest as the level was built (the roster: the
spec's members, also when the checkpoint's server knew no names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster.level.growth import grow_level
from cluster.level.membership import follow_roster
from cluster.level.protocol import CircuitRef, Coverage
from cluster.level.records import AcceptedCircuit
from cluster.level.status import ForwardCounters, LevelCounters, stats_dict
from layers.projection import ReadGrowth

if TYPE_CHECKING:
    from cluster.level.core import LevelCore


def level_state(core: LevelCore) -> dict[str, Any]:
    """Everything ``core`` restores from (see the module doc); tensors are not copied."""
    up = core.uplink
    return {"B": core.B, "optimizer": core.optimizer.state_dict(), "aggregator": core.aggregator.state_dict(),
            "server_step": core.server_step.state_dict(),
            "growths": [{"version": v, **e.to_dict()} for v, e in core.growths],
            "saturated_merges": core.saturated_merges,
            "uplink": up.state_dict() if up is not None else None, "version": core.version,
            "last_seq": core._last_seq,
            "covered": {a: c.to_dict() for a, c in core._covered.items()},
            "stats": stats_dict(core._counters, up.counters if up is not None else ForwardCounters()),
            "mailbox": {a: [{"module": r.module, "u": r.u, "w": r.w, "coefficient": r.coefficient} for r in rs]
                        for a, rs in core._mailbox.items()},
            "bucket": {"tokens": core._bucket.tokens, "last_refill": core._bucket.last_refill},
            "inherited": {m: {"sigma": c.sigma, "u": c.u, "w": c.w, "score": c.score}
                          for m, c in core._inherited.items()},
            "membership": core.roster.state_dict()}


def restore_level(core: LevelCore, state: dict[str, Any]) -> None:
    """Load ``state`` (from :func:`level_state`, possibly of an older code) into a freshly built ``core``."""
    for g in state.get("growths", []):  # the checkpoint's B have the grown rank
        grow_level(core, ReadGrowth.from_dict(g))
    core.growths = [(int(g["version"]), e) for g, (_, e) in zip(state.get("growths", []), core.growths, strict=True)]
    core.saturated_merges = int(state.get("saturated_merges", 0))
    for m in core.B:
        core.B[m].copy_(state["B"][m])
    core.optimizer.load_state_dict(state["optimizer"])
    core.aggregator.load_state_dict(state["aggregator"])
    if "server_step" in state:  # checkpoints from before server.step hold no moments (rms has none)
        core.server_step.load_state_dict(state["server_step"])
    core._version, core._last_seq = state["version"], dict(state["last_seq"])
    # checkpoints from before exactly-once accounting hold no coverage: intervals unknown so far
    core._covered = {a: Coverage.from_dict(c) for a, c in state.get("covered", {}).items()}
    core._counters = LevelCounters.from_stats(state["stats"])
    up = core.uplink
    if up is not None:
        if state["uplink"] is not None:
            up.load_state_dict(state["uplink"], merges=core._counters.merges)
        up.restore_counters(ForwardCounters.from_stats(state["stats"]))
    core._mailbox = {a: [CircuitRef(r["module"], r["u"], r["w"], r.get("coefficient")) for r in rs]
                     for a, rs in state["mailbox"].items()}
    if "bucket" in state:  # checkpoints from before the level's bucket start full
        core._bucket.tokens = int(state["bucket"]["tokens"])
        core._bucket.last_refill = int(state["bucket"]["last_refill"])
    core._inherited = {m: AcceptedCircuit(m, float(c["sigma"]), (), c["u"], c["w"], score=float(c["score"]))
                       for m, c in state.get("inherited", {}).items()}
    # checkpoints from before membership, or of a server built without names: the spec's members
    if state.get("membership", {}).get("members"):
        core.roster.load_state_dict(state["membership"])
        follow_roster(core)
