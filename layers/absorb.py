"""Absorbing outside adapters into a level (DESIGN section 8): similarity, merge plans, the guard.

Deltas here are a level's worth of change: module -> (d_out, R) in level units, what
:func:`layers.peft_io.project_peft` returns for a PEFT adapter. Several adapters are
compared by the cosine of their deltas (all modules together):

- ``similar`` (cosine >= ``merge_threshold``): one merge by task arithmetic, the sum;
- ``moderate`` (``split_threshold`` <= cosine < ``merge_threshold``): split; the part
  along their common direction goes to the slower level, the residuals stay;
- ``apart`` (below): each is absorbed on its own.

The guard compares a :class:`Fingerprint` (bits per byte of each level alone and of all
together on probe windows, plus the logits) before and after; an absorb that degrades the
old knowledge by more than ``max_degradation`` bits per byte is rolled back.

Growth (:func:`absorb_growth`): a random read space of rank R keeps about R / d_in of an adapter's
energy. Absorbing with growth first adds to every module's P the adapter's top read directions P does
not span yet (:func:`read_directions`, orthonormalised against P), then projects into the grown space.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from layers.eval import LN2, Tally, tally
from layers.projection import ReadGrowth, complement_rows, continuation_rows

Delta = dict[str, Tensor]  # module -> (d_out, R)


def cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Cosine of two deltas over the modules they share (0 if either is zero there)."""
    common = sorted(set(a) & set(b))
    dot = sum(float((a[m].double() * b[m].double()).sum()) for m in common)
    na = math.sqrt(sum(float(a[m].double().pow(2).sum()) for m in common))
    nb = math.sqrt(sum(float(b[m].double().pow(2).sum()) for m in common))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def add(deltas: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | None = None) -> Delta:
    """Task arithmetic: ``sum_i w_i delta_i`` over the union of modules."""
    weights = [1.0] * len(deltas) if weights is None else list(weights)
    out: Delta = {}
    for w, d in zip(weights, deltas, strict=True):
        for m, t in d.items():
            out[m] = out[m] + w * t.double() if m in out else w * t.double()
    return out


def split_shared(deltas: Sequence[Mapping[str, Tensor]]) -> tuple[Delta, list[Delta]]:
    """The part of each delta along their common (mean) direction, summed, and what is left of each.

    With ``u`` the unit mean of the deltas: ``shared = sum_i <d_i, u> u`` and
    ``residual_i = d_i - <d_i, u> u``; so ``shared + sum residual_i == sum d_i`` exactly.
    """
    mean = add(deltas, [1.0 / len(deltas)] * len(deltas))
    norm = math.sqrt(sum(float(t.pow(2).sum()) for t in mean.values()))
    if norm == 0:
        return {m: torch.zeros_like(t) for m, t in mean.items()}, [add([d]) for d in deltas]
    u = {m: t / norm for m, t in mean.items()}
    coefs = [sum(float((d[m].double() * u[m]).sum()) for m in d if m in u) for d in deltas]
    shared = {m: sum(coefs) * t for m, t in u.items()}
    residuals = [{m: d[m].double() - c * u[m] if m in u else d[m].double() for m in d} for c, d in zip(coefs, deltas,
                                                                                                      strict=True)]
    return shared, residuals


@dataclass
class MergeDecision:
    """How a set of adapters is absorbed. ``groups`` are index lists; ``kind`` is similar, moderate or
    apart per group; ``similarity[i][j]`` the pairwise cosines."""

    similarity: list[list[float]]
    groups: list[list[int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def plan_merge(deltas: Sequence[Mapping[str, Tensor]], merge_threshold: float = 0.8,
               split_threshold: float = 0.3) -> MergeDecision:
    """Group adapters: single linkage at ``split_threshold``; a group whose every pair reaches
    ``merge_threshold`` is ``similar`` (merged), else ``moderate`` (split); singletons are ``apart``."""
    if not 0 <= split_threshold <= merge_threshold <= 1:
        raise ValueError(f"absorb: need 0 <= split_threshold ({split_threshold}) <= merge_threshold "
                         f"({merge_threshold}) <= 1")
    n = len(deltas)
    sim = [[1.0 if i == j else cosine(deltas[i], deltas[j]) for j in range(n)] for i in range(n)]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if sim[i][j] >= split_threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    decision = MergeDecision(sim)
    for members in sorted(groups.values()):
        decision.groups.append(members)
        if len(members) == 1:
            decision.kinds.append("apart")
        elif all(sim[i][j] >= merge_threshold for i in members for j in members):
            decision.kinds.append("similar")
        else:
            decision.kinds.append("moderate")
    return decision


@dataclass
class Fingerprint:
    """Bits per byte on the probe windows per level set (``"all"``, and each level alone), and the logits
    with every level (N, T, V) for the distance."""

    bpb: dict[str, float]
    logits: Tensor


def fingerprint(model, stack, windows: Tensor, levels: Sequence[str] | None = None, batch: int = 16,
                window_bytes: Tensor | None = None) -> Fingerprint:
    """Evaluate ``model`` (with its level ``stack``) on ``windows`` (N, T+1) with every level, then with each
    of ``levels`` (default: all of them) alone. ``window_bytes`` (N, T): bytes of text each target covers
    (default one). The stack's enabled levels are restored afterwards."""
    sets = {"all": list(stack.levels), **{lvl: [lvl] for lvl in (stack.levels if levels is None else levels)}}
    bpb, logits_all = {}, None
    for name, chosen in sets.items():
        total, chunks = Tally(), []
        with stack.using(chosen), torch.no_grad():
            for i in range(0, len(windows), batch):
                w = windows[i:i + batch]  # (b, T+1)
                logits = model(w[:, :-1]).logits.float()  # (b, T, V)
                total += tally(logits, w[:, 1:], None if window_bytes is None else window_bytes[i:i + batch])
                if name == "all":
                    chunks.append(logits)
        bpb[name] = total.bits_per_byte
        if name == "all":
            logits_all = torch.cat(chunks)  # (N, T, V)
    return Fingerprint(bpb, logits_all)


def logits_distance(a: Fingerprint, b: Fingerprint) -> float:
    """Mean KL(before || after) per position, in bits."""
    p = F.log_softmax(a.logits, dim=-1)
    q = F.log_softmax(b.logits, dim=-1)
    return float((p.exp() * (p - q)).sum(-1).mean()) / LN2


def degradation(before: Fingerprint, after: Fingerprint, levels: Sequence[str]) -> dict[str, float]:
    """Rise of bits per byte (after - before) with every level and with each level of ``levels`` alone."""
    return {k: after.bpb[k] - before.bpb[k] for k in ["all", *levels] if k in before.bpb}


def adapter_scale(config: Mapping, module: str, rank: int) -> float:
    """PEFT's scale s_src of one module's LoRA pair: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), alpha
    from ``alpha_pattern`` (a suffix regex match) else ``lora_alpha`` (8 by default)."""
    alpha = float(config.get("lora_alpha", 8))
    for key, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{key}$", module):
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_directions(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """Rows C (r, d_in), float64, with ``C^T C = (s B A)^T (s B A)``: the read side of the adapter's delta
    weighted by the energy it carries (``A`` (r, d_in), ``B`` (d_out, r)); built from the r x r Gram of B."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    evals, evecs = torch.linalg.eigh(b64.T @ b64)  # (r,), (r, r)
    root = evecs * evals.clamp_min(0).sqrt()  # (r, r): G^(1/2) = U diag(sqrt e) U^T, up to the rotation U^T
    return scale * (root.T @ a64)  # (r, d_in)


def absorb_growth(stack, directions: Mapping[str, Tensor], rows: int, source: str) -> ReadGrowth:
    """The growth that lets ``stack`` keep adapters: per module, the top ``rows`` of ``directions`` (module ->
    (n, d_in) read directions, e.g. :func:`read_directions` of each adapter stacked) that P does not span
    yet (:func:`layers.projection.complement_rows`), topped up with continuation rows where the adapters
    bring fewer; modules without directions get continuation rows when the event is applied. The rows
    travel in the event, so every process gets the same P.

    Raises ValueError when ``rows`` < 1 or the grown rank would exceed a module's input features.
    """
    if rows < 1:
        raise ValueError(f"absorb: rows to grow must be >= 1, got {rows}")
    carried = {}
    for name, d in sorted(directions.items()):
        module = stack.modules[name]
        if stack.rank + rows > module.in_features:
            raise ValueError(f"absorb: growing {name!r} by {rows} rows exceeds its input features "
                             f"({module.in_features}) at rank {stack.rank}")
        top = complement_rows(module.P, d, rows)  # (k <= rows, d_in)
        if top.shape[0] < rows:
            grown = torch.cat([module.P.detach().cpu().double(), top])  # (R + k, d_in)
            top = torch.cat([top, continuation_rows(stack.config.seed, name, grown, rows - top.shape[0])])
        carried[name] = top
    return ReadGrowth(stack.rank, stack.rank + rows, carried, source=source)
