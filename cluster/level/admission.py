"""Admission checks of a level (pure functions): what a push, an absorb or a proposal must satisfy.

Each returns ``None`` when the input is admissible, else the first :class:`Refusal` found,
checked in a fixed order (sender, sequence, step interval, version, modules, then per module
dtype, shape, finiteness, and last the total norm), so the same bad input always gets the same code.

Exactly once: a push may carry the sender's step interval ``first_step..last_step`` (inclusive,
the sender's steps whose gradient it sums). One that starts at or below the last step the level
already holds from that sender is refused (``RejectCode.OVERLAP``): whatever seq it comes under,
no step of a sender is applied twice. A push without an interval (old clients) is admitted as
unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cluster.level.protocol import Coverage, Refusal, RejectCode
from layers.circuits import Proposal

Shapes = Mapping[str, tuple[int, int]]


def check_push(sender: Any, seq: Any, base_version: Any, tensors: Any, *, shapes: Shapes,
               last_seq: Mapping[str, int], version: int, max_staleness: int, max_norm: float,
               first_step: Any = None, last_step: Any = None,
               covered: Mapping[str, Coverage] | None = None) -> Refusal | None:
    """A push must come from a named sender, with a seq above ``last_seq[sender]`` (its last accepted one),
    with no step interval or one of ints ``1 <= first_step <= last_step`` starting above
    ``covered[sender].last``, against a version at most ``max_staleness`` behind ``version``, with
    exactly the level's modules as finite float32 tensors of the level's shapes, of total L2 norm
    at most ``max_norm``."""
    if not isinstance(sender, str) or not sender:
        return Refusal(RejectCode.BAD_SENDER, "must be a non-empty string")
    if not isinstance(tensors, Mapping):
        return Refusal(RejectCode.BAD_TENSORS, f"a mapping module -> tensor, got {type(tensors).__name__}")
    last = last_seq.get(sender, 0)
    if not isinstance(seq, int) or seq <= last:
        return Refusal(RejectCode.DUPLICATE, f"{seq!r} is not above {last} for {sender!r}")
    refusal = check_interval(sender, first_step, last_step, (covered or {}).get(sender, Coverage()))
    if refusal:
        return refusal
    if not isinstance(base_version, int) or not 0 <= base_version <= version:
        return Refusal(RejectCode.BAD_BASE_VERSION, f"{base_version!r} (server at {version})")
    if version - base_version > max_staleness:
        return Refusal(RejectCode.STALE, f"{version - base_version} versions behind, limit {max_staleness}")
    unknown = sorted(set(tensors) - set(shapes))
    if unknown:
        return Refusal(RejectCode.UNKNOWN_MODULE, repr(unknown[0]))
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        return Refusal(RejectCode.MISSING_MODULE, repr(missing[0]))
    total = 0.0  # squared L2 norm over every module, in float64
    for m, t in tensors.items():
        if not isinstance(t, Tensor) or t.dtype != torch.float32:
            return Refusal(RejectCode.BAD_DTYPE, f"{m!r} must be a float32 tensor")
        refusal = _shape_and_values(m, t, shapes[m])
        if refusal:
            return refusal
        total += float(t.double().pow(2).sum())
    if math.sqrt(total) > max_norm:
        return Refusal(RejectCode.NORM, f"{math.sqrt(total):.3g} above the limit {max_norm:.3g}")
    return None


def check_interval(sender: str, first_step: Any, last_step: Any, held: Coverage) -> Refusal | None:
    """Both None (unknown), or ints ``1 <= first_step <= last_step`` with ``first_step`` above
    ``held.last``, the last step already held from ``sender``."""
    if first_step is None and last_step is None:
        return None
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in (first_step, last_step)) \
            or not 1 <= first_step <= last_step:
        return Refusal(RejectCode.BAD_INTERVAL, f"steps {first_step!r}..{last_step!r} from {sender!r} "
                                                "(ints, 1 <= first_step <= last_step, or both None)")
    if first_step <= held.last:
        return Refusal(RejectCode.OVERLAP, f"steps {first_step}..{last_step} from {sender!r} overlap the steps "
                                           f"through {held.last} already held")
    return None


def check_delta(tensors: Any, *, shapes: Shapes) -> Refusal | None:
    """An absorbed delta must be a non-empty mapping onto some of the level's modules, each a finite
    floating-point tensor of the level's shape (any float dtype: it is converted to float32)."""
    if not isinstance(tensors, Mapping) or not tensors:
        return Refusal(RejectCode.BAD_TENSORS, "a non-empty mapping module -> tensor")
    unknown = sorted(set(tensors) - set(shapes))
    if unknown:
        return Refusal(RejectCode.UNKNOWN_MODULE, repr(unknown[0]))
    for m, t in tensors.items():
        if not isinstance(t, Tensor) or not t.is_floating_point():
            return Refusal(RejectCode.BAD_DTYPE, f"{m!r} must be a floating-point tensor")
        refusal = _shape_and_values(m, t, shapes[m])
        if refusal:
            return refusal
    return None


def check_proposals(sender: Any, proposals: Any) -> Refusal | None:
    """A proposal call must come from a named sender, as a list of ``Proposal`` all its own.
    (Each proposal's content is judged by consensus, which rejects it per proposal.)"""
    if not isinstance(sender, str) or not sender:
        return Refusal(RejectCode.BAD_SENDER, "must be a non-empty string")
    if not isinstance(proposals, list) or not all(isinstance(p, Proposal) for p in proposals):
        return Refusal(RejectCode.BAD_PROPOSALS, "must be a list of Proposal")
    others = sorted({p.agent_id for p in proposals} - {sender})
    if others:
        return Refusal(RejectCode.SENDER_MISMATCH, f"{sender!r} proposes for {others[0]!r}")
    return None


def _shape_and_values(module: str, t: Tensor, shape: tuple[int, int]) -> Refusal | None:
    if tuple(t.shape) != tuple(shape):
        return Refusal(RejectCode.BAD_SHAPE, f"{module!r} is {tuple(t.shape)}, expected {tuple(shape)}")
    if not bool(torch.isfinite(t).all()):
        return Refusal(RejectCode.NOT_FINITE, f"{module!r} contains NaN or Inf")
    return None
