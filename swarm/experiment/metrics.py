"""Pure helpers of the experiment report: timescales, steps to a target, mean +- std, specialisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

INV_E = math.exp(-1)


def autocorrelation_time(snapshots: Sequence[torch.Tensor], spacing: float) -> tuple[float, bool]:
    """The lag (in the units of ``spacing``) at which B's self-similarity ``mean_t cos(B_t, B_t+lag)``
    first drops below 1/e, linearly interpolated; ``(bound, True)`` if it never does within the
    series (a lower bound: the level is slower than the run). All-zero snapshots are skipped."""
    x = torch.stack([s.double() for s in snapshots]) if len(snapshots) else torch.zeros(0, 1)  # (T, d)
    norms = x.norm(dim=1)
    valid = norms > 0
    t = x.shape[0]
    unit = x / norms.clamp_min(1e-300)[:, None]
    prev = 1.0
    for lag in range(1, t):
        both = valid[:-lag] & valid[lag:]
        if not bool(both.any()):
            continue
        c = float((unit[:-lag] * unit[lag:]).sum(dim=1)[both].mean())
        if c < INV_E:
            return spacing * (lag - 1 + (prev - INV_E) / (prev - c)), False
        prev = c
    return spacing * max(t - 1, 0), True


def turnover_time(snapshots: Sequence[torch.Tensor], spacing: float) -> float:
    """Steps the level takes to move by its own size at its current pace:
    ``spacing * sum_t ||B_t|| / sum_t ||B_t - B_t-1||`` (inf if it never moves). Unlike the
    autocorrelation time it is measurable on a run much shorter than the level's timescale."""
    if len(snapshots) < 2:
        return math.inf
    x = torch.stack([s.double() for s in snapshots])  # (T, d)
    moved = float((x[1:] - x[:-1]).norm(dim=1).sum())
    return spacing * float(x[1:].norm(dim=1).sum()) / moved if moved > 0 else math.inf


def steps_to_target(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first step of ``curve`` ``[(step, bpb), ...]`` at or below ``target`` (None: never)."""
    for step, value in curve:
        if value <= target:
            return step
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN for none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


def average(values) -> float:
    """The plain mean of the values that are not None (NaN for none)."""
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else math.nan


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flattened tensors (0 if either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    return float((a.flatten().double() @ b.flatten().double()) / (na * nb)) if na and nb else 0.0


def level_of(key: str) -> str:
    """``context@python/text/json`` -> context; ``swarm/text`` -> swarm; ``foundation`` -> foundation."""
    return key.split("@")[0].split("/")[0]
