"""The merge of a level's window: the accepted pushes become one step of the level.

A full window (``server.window`` pushes; a checkpoint, growth or a shrinking membership window
may flush a partial one) is merged by the configured aggregator with staleness weights
``1 / (1 + version - base_version)`` (one vote per push for the aggregators that take no
weights: median, trimmed mean, Krum). The merged gradient becomes the drive
(:mod:`cluster.level.server_step`: unit RMS times ``-lr``, or Adam moments) applied through the
level's ``LevelOptimizer``; the uplink (if any) sums it for the parent, the circuit tracker
follows the new B, and the version rises by one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.level.core import LevelCore

PHASE_STEP = 0.05  # a change of the screened fraction this large since the last phase event is one


def merge_pending(core: LevelCore) -> None:
    """Merge ``core``'s pending window (non-empty) into its B: one version, one merge, its events."""
    start = time.perf_counter()
    window = core._window
    weights = [1.0 / (1 + core.version - r.base_version) for r in window]
    merged = core.aggregator.aggregate([r.tensors for r in window],
                                       weights if core.aggregator.supports_weights else None)
    stepped = core.server_step.drive(merged)
    stats = core.aggregator.stats
    if stepped is not None:
        core.optimizer.step(stepped.update, contributions=stats["k_eff"] * stats.get("mean_agreement", 1.0),
                            gradient=stepped.gradient)
        core.saturated_merges = core.saturated_merges + 1 if core.optimizer.report()["growth_needed"] else 0
    if core.uplink is not None:
        core.uplink.observe(merged)
    core._tracker.update(core.B)
    core._window = []
    core._version += 1
    core._counters.merges += 1
    core.probe.merged(time.perf_counter() - start)
    core._event("merge", f"{len(weights)} pushes, k_eff {stats.get('k_eff', 0):.2f}, "
                         f"agreement {stats.get('mean_agreement', 1.0):.2f}")
    screened = core.optimizer.screened_fraction()
    if abs(screened - core._phase_mark) >= PHASE_STEP:
        core._event("phase", f"screened fraction {core._phase_mark:.2f} -> {screened:.2f}")
        core._phase_mark = screened
