"""The one merge interface: ``Aggregator.aggregate(updates, weights) -> same structure``.

An update is either one tensor or a dict of named tensors (e.g. a level's B matrices
keyed by module). Every update in a call must have the same structure, shapes and a
floating dtype, and be finite; anything else raises a ``ValueError`` naming the
offending entry, before any arithmetic. Implementations see a normalised view:
``parts[k][i]`` is the i-th tensor (flattened, 1-D) of the k-th update, and one float
weight per update. They return one 1-D tensor per part, which is reshaped back.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

Update = Tensor | Mapping[str, Tensor]


class Aggregator(ABC):
    """Merges K updates into one. ``stats`` describes the last call (floats only).

    Subclasses implement :meth:`_aggregate`. ``supports_weights = False`` marks a
    rule that is defined one-push-one-vote: non-uniform weights are then refused.
    """

    name: str = "aggregator"
    supports_weights: bool = True
    # True: the rule's first pass reads every input anyway and finds NaN/Inf itself (it must call
    # check_finite on a suspect input before any state changes), so aggregate skips its own read of them
    checks_finite: bool = False

    def __init__(self) -> None:
        self.stats: dict[str, float] = {}

    def aggregate(self, updates: Sequence[Update], weights: Sequence[float] | None = None) -> Update:
        """Merge ``updates`` (all tensors, or all dicts with the same keys) into one of the same structure."""
        keys, shapes, parts = _normalise(updates, check_finite=not self.checks_finite)
        w = _weights(weights, len(parts))
        if not self.supports_weights and not bool(torch.all(w == w[0])):
            raise ValueError(f"{self.name}: weights are not supported (one push, one vote); pass weights=None")
        self.stats = {"k": float(len(parts)), "k_eff": float(w.sum() ** 2 / (w**2).sum())}
        try:
            merged = self._aggregate(parts, w)
        except NonFiniteInput as bad:
            where = f"update {bad.update}" + (f", key {keys[bad.part]!r}" if keys is not None else "")
            raise ValueError(f"{where}: contains NaN or Inf") from None
        out = [m.reshape(shape).to(updates_dtype(updates)) for m, shape in zip(merged, shapes, strict=True)]
        return out[0] if keys is None else dict(zip(keys, out, strict=True))

    @abstractmethod
    def _aggregate(self, parts: list[list[Tensor]], weights: Tensor) -> list[Tensor]:
        """``parts[k][i]``: 1-D tensor i of update k; ``weights``: (K,) float64, >= 0, sum > 0."""

    def state_dict(self) -> dict[str, Any]:
        """State carried between calls (e.g. server momentum); empty for stateless rules."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name}: stateless, but got state keys {sorted(state)}")


def updates_dtype(updates: Sequence[Update]) -> torch.dtype:
    first = updates[0]
    return first.dtype if isinstance(first, Tensor) else next(iter(first.values())).dtype


def _entry(update: Update, k: int, keys: list[str] | None) -> list[tuple[str, Tensor]]:
    if keys is None:
        if not isinstance(update, Tensor):
            raise ValueError(f"update {k}: expected a tensor like update 0, got {type(update).__name__}")
        return [("", update)]
    if not isinstance(update, Mapping):
        raise ValueError(f"update {k}: expected a dict like update 0, got {type(update).__name__}")
    if set(update.keys()) != set(keys):
        extra, missing = set(update) - set(keys), set(keys) - set(update)
        raise ValueError(f"update {k}: keys differ from update 0 (extra {sorted(extra)}, missing {sorted(missing)})")
    return [(key, update[key]) for key in keys]


class NonFiniteInput(Exception):
    """Raised by :func:`check_finite` inside ``_aggregate``; ``aggregate`` turns it into a ValueError naming
    the entry (``update`` index, ``part`` index into the update's keys)."""

    def __init__(self, update: int, part: int) -> None:
        super().__init__(update, part)
        self.update, self.part = update, part


def check_finite(parts: list[list[Tensor]], k: int) -> None:
    """Raise :class:`NonFiniteInput` for the first part of update ``k`` holding a NaN or Inf; else return.

    For rules with ``checks_finite``: call it when a reduction over update ``k`` came out non-finite
    (a float32 overflow of finite values also does; then this returns and the rule goes on).
    """
    for i, t in enumerate(parts[k]):
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteInput(k, i)


def _normalise(updates: Sequence[Update], check_finite: bool = True
               ) -> tuple[list[str] | None, list[torch.Size], list[list[Tensor]]]:
    if len(updates) == 0:
        raise ValueError("aggregate: no updates")
    first = updates[0]
    keys = None if isinstance(first, Tensor) else list(first.keys())
    if keys is not None and not keys:
        raise ValueError("update 0: empty dict")
    shapes: list[torch.Size] = []
    parts: list[list[Tensor]] = []
    for k, update in enumerate(updates):
        row = []
        for i, (key, t) in enumerate(_entry(update, k, keys)):
            where = f"update {k}" + (f", key {key!r}" if keys is not None else "")
            if not isinstance(t, Tensor):
                raise ValueError(f"{where}: not a tensor ({type(t).__name__})")
            if not t.is_floating_point():
                raise ValueError(f"{where}: dtype {t.dtype} is not floating point")
            if k == 0:
                shapes.append(t.shape)
            elif t.shape != shapes[i]:
                raise ValueError(f"{where}: shape {tuple(t.shape)} differs from update 0's {tuple(shapes[i])}")
            if check_finite and not math.isfinite(float(t.sum())) and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{where}: contains NaN or Inf")  # sum() first: one read, no temporary
            row.append(t.detach().reshape(-1))
        parts.append(row)
    return keys, shapes, parts


def _weights(weights: Sequence[float] | None, k: int) -> Tensor:
    if weights is None:
        return torch.ones(k, dtype=torch.float64)
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
    if w.numel() != k:
        raise ValueError(f"weights: {w.numel()} weights for {k} updates")
    for i, x in enumerate(w.tolist()):
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"weights[{i}] = {x}: weights must be finite and >= 0")
    if float(w.sum()) <= 0:
        raise ValueError("weights: sum must be > 0")
    return w


CHUNK = 1 << 19  # elements per segment (2 MiB of float32): its buffers stay in cache across all K inputs


def segments(parts: list[list[Tensor]], chunk: int = CHUNK) -> list[tuple[int, int, int]]:
    """(part index, start, stop) over the parts of one update, at most ``chunk`` long each.

    Streaming rules loop over segments outside and updates inside, so their accumulators
    for a segment stay in cache while all K inputs pass through: each input is read from
    memory once per pass.
    """
    return [(i, lo, min(lo + chunk, t.numel())) for i, t in enumerate(parts[0]) for lo in range(0, t.numel(), chunk)]


def stack_parts(parts: list[list[Tensor]], dtype: torch.dtype = torch.float32) -> Tensor:
    """(K, d) matrix of the flattened updates, for rules that must buffer all of them."""
    return torch.stack([torch.cat(row).to(dtype) for row in parts])


def split_like(vector: Tensor, parts: list[list[Tensor]]) -> list[Tensor]:
    """Inverse of the concatenation in :func:`stack_parts` for one (d,) vector."""
    return list(torch.split(vector, [t.numel() for t in parts[0]]))
