"""Consensus across members: which circuits a shared level takes from the members below (a pure function).

Members (agents under a team level, teams under a domain level) propose the modules in
which their stability detector found a stable circuit. A proposal carries the member's
write matrix ``b`` of that module (d_out x R, the shared P coordinates): per-member SVDs
rotate a common part arbitrarily, so the upper level does not match circuits member by
member but derives candidate directions jointly from the members' matrices and tests each
member's signed coefficient against the rotation null (:mod:`layers.circuits.joint`).

Per module, with n >= ``consensus_min_agents`` (k) members: the joint test is run on the
members' matrices scaled to unit norm. If it accepts (p <= ``alpha``), the best candidate
``u w^T`` is a consensus circuit; its carriers are the members whose coefficient exceeds
the null's critical value (at least k). Its strength is ``sigma = min over carriers of
u^T b_m w`` (B units): the part every carrier holds, so no carrier's component changes
sign, and a member with a huge matrix cannot inject more than the others carry. The upper
level adds ``sigma u w^T`` and each carrier removes exactly ``sigma u w^T`` from its own
level: for a carrier the sum of levels, hence its function, is unchanged. Members that do
not carry it keep what they have. The carriers' matrices are then deflated by that amount
and the test repeats on what is left (at most ``max_per_module`` circuits per module; it
stops at the first rejection, so under the null the family-wise false-acceptance rate per
module and round is alpha).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from layers.circuits.config import CircuitsConfig
from layers.circuits.extract import canonical_sign
from layers.circuits.joint import joint_test


@dataclass
class Proposal:
    """One member's offer of one module. ``sigma, u, w, score``: its strongest stable circuit there
    (what its own detector saw; the score gates eligibility and ranks circuits under the bandwidth
    limit). ``b``: its current write matrix of ``module`` (float32, (d_out, R)), which the joint test reads."""

    agent_id: str
    module: str
    sigma: float
    u: Tensor  # (d_out,)
    w: Tensor  # (R,)
    score: float
    b: Tensor | None = None  # (d_out, R)


@dataclass
class Removal:
    """What one carrier removes from its own level: ``coefficient * u w^T`` in ``module``."""

    agent_id: str
    module: str
    coefficient: float
    u: Tensor
    w: Tensor

    def matrix(self) -> Tensor:
        return self.coefficient * torch.outer(self.u, self.w)


@dataclass
class ConsensusCircuit:
    """An accepted circuit: ``sigma u w^T`` joins the upper level's ``module``; ``agents`` carry it.
    ``coefficients``: every member's ``u^T b_m w`` (B units); ``thresholds``: what each needed
    (the null's critical value times ``||b_m||_F``); ``score``: the carriers' lowest stability score."""

    module: str
    sigma: float
    u: Tensor
    w: Tensor
    agents: list[str]
    p_value: float
    coefficients: dict[str, float]
    thresholds: dict[str, float]
    score: float


@dataclass
class ModuleTest:
    """One joint test (for the record and for diagnosis): members' coefficients and thresholds in B units."""

    module: str
    accepted: bool
    p_value: float
    coefficients: dict[str, float]
    thresholds: dict[str, float]


@dataclass
class ConsensusResult:
    accepted: list[ConsensusCircuit] = field(default_factory=list)
    removals: dict[str, list[Removal]] = field(default_factory=dict)
    rejected: list[tuple[Proposal, str]] = field(default_factory=list)
    tests: list[ModuleTest] = field(default_factory=list)


def _bad_vector(name: str, t, size: int) -> str | None:
    if not isinstance(t, Tensor) or tuple(t.shape) != (size,):
        return f"{name} has shape {tuple(getattr(t, 'shape', ()))}, expected ({size},)"
    return None


def _invalid(p: Proposal, shapes: Mapping[str, tuple[int, int]]) -> str | None:
    """Why ``p`` cannot take part (None: it can). Checked in a fixed order, the first failure named."""
    if p.module not in shapes:
        return f"unknown module {p.module!r}"
    d_out, rank = shapes[p.module]
    reason = _bad_vector("u", p.u, d_out) or _bad_vector("w", p.w, rank)
    if reason:
        return reason
    if not (isinstance(p.sigma, (int, float)) and isinstance(p.score, (int, float))):
        return f"sigma and score must be numbers (got {type(p.sigma).__name__}, {type(p.score).__name__})"
    if not (math.isfinite(p.sigma) and math.isfinite(p.score)) or not bool(
            torch.isfinite(p.u).all() and torch.isfinite(p.w).all()):
        return "NaN or Inf in sigma, score, u or w"
    if p.sigma < 0 or not 0 <= p.score <= 1:
        return f"sigma must be >= 0 and score in [0, 1] (got {p.sigma}, {p.score})"
    if float(p.u.norm()) == 0 or float(p.w.norm()) == 0:
        return "u or w is zero"
    b = p.b
    if b is None:
        return f"no write matrix b for {p.module!r}: the joint consensus reads the members' matrices"
    if not isinstance(b, Tensor) or b.dtype != torch.float32:
        return f"b of {p.module!r} must be a float32 tensor"
    if tuple(b.shape) != (d_out, rank):
        return f"b of {p.module!r} is {tuple(b.shape)}, expected {(d_out, rank)}"
    if not bool(torch.isfinite(b).all()):
        return f"b of {p.module!r} contains NaN or Inf"
    if float(b.norm()) == 0:
        return f"b of {p.module!r} is zero"
    return None


def consensus(proposals: Sequence[Proposal], shapes: Mapping[str, tuple[int, int]],
              config: CircuitsConfig | None = None, seed: int = 0) -> ConsensusResult:
    """Decide which circuits a shared level takes from ``proposals`` (see the module doc).

    Args:
        proposals: from the level's members, at most one per (member, module).
        shapes: module -> (d_out, R) of the level's write matrices.
        config: ``consensus_min_agents`` (k), ``alpha``, ``null_draws``, ``max_per_module``.
        seed: seeds the null's draws (with the module name), so a decision is reproducible.
    """
    cfg = config or CircuitsConfig()
    result = ConsensusResult()
    valid: dict[str, dict[str, Proposal]] = {}
    for p in proposals:
        reason = _invalid(p, shapes)
        if reason is None and p.agent_id in valid.get(p.module, {}):
            reason = f"a second proposal for {p.module!r} from {p.agent_id!r} (one per member and module)"
        if reason:
            result.rejected.append((p, reason))
        else:
            valid.setdefault(p.module, {})[p.agent_id] = p
    for module in sorted(valid):
        _decide(module, [valid[module][a] for a in sorted(valid[module])], cfg, seed, result)
    return result


def _decide(module: str, members: list[Proposal], cfg: CircuitsConfig, seed: int, result: ConsensusResult) -> None:
    n, k = len(members), cfg.consensus_min_agents
    if n < k:
        result.rejected.extend((p, f"only {n} member(s) proposed {module!r}; a shared level needs >= {k}")
                               for p in members)
        return
    names = [p.agent_id for p in members]
    norms = torch.tensor([float(p.b.double().norm()) for p in members], dtype=torch.float64)  # (n,)
    x = torch.stack([p.b.double() for p in members]) / norms[:, None, None]  # (n, d_out, R), unit norm each
    carried: set[str] = set()
    last = None
    for round_ in range(cfg.max_per_module):
        test = joint_test(x, k=k, alpha=cfg.alpha, draws=cfg.null_draws, candidates=cfg.max_per_module,
                          seed=[seed, zlib.crc32(module.encode()), round_])
        coefs = {a: float(c * s) for a, c, s in zip(names, test.coefficients, norms, strict=True)}
        needed = {a: test.threshold * float(s) for a, s in zip(names, norms, strict=True)}
        result.tests.append(ModuleTest(module, test.accepted, test.p_value, coefs, needed))
        last = test
        if not test.accepted:
            break
        idx = [i for i in range(n) if float(test.coefficients[i]) > test.threshold]
        sigma = min(coefs[names[i]] for i in idx)
        u, w = canonical_sign(test.u, test.w)  # flipping both keeps u w^T and the coefficients
        agents = [names[i] for i in idx]
        result.accepted.append(ConsensusCircuit(module, sigma, u, w, agents, test.p_value, coefs, needed,
                                                min(members[i].score for i in idx)))
        for i in idx:
            result.removals.setdefault(names[i], []).append(Removal(names[i], module, sigma, u, w))
            x[i] -= (sigma / float(norms[i])) * torch.outer(u, w)  # what it holds once it removed its part
        carried.update(agents)
    for p in members:
        if p.agent_id in carried:
            continue
        if last is not None and not last.accepted and not carried:
            why = (f"no joint direction of {module!r} carried by >= {k} of {n} members: "
                   f"p {last.p_value:.3f} > alpha {cfg.alpha}")
        else:
            why = f"does not carry {module!r}'s consensus circuit(s) above the null threshold"
        result.rejected.append((p, why))


def proposals_from(tracker, agent_id: str) -> list[Proposal]:
    """One proposal per module in which the tracker has a stable circuit (its best candidate, sigma >= 0
    with the sign folded into u) carrying a float32 copy of the matrix the tracker last saw there; none
    when the tracker's config switches promotion off."""
    if not tracker.config.promote:
        return []
    best: dict[str, object] = {}
    for c in tracker.candidates():  # best first
        best.setdefault(c.module, c)
    out = []
    for module, c in best.items():
        b = tracker.blocks.get(module)
        b = None if b is None else b.detach().to("cpu", torch.float32, copy=True)  # (d_out, R)
        out.append(Proposal(agent_id, module, abs(c.strength), c.u.clone() * math.copysign(1, c.strength),
                            c.w.clone(), c.score, b))
    return out


def remove_projection(B: Tensor, u: Tensor, w: Tensor, coefficient: float | None = None) -> float:
    """``B -= c u w^T`` (u, w unit) with ``c = coefficient``, or, when None, ``c = u^T B w`` (the whole
    projection); returns c. What a member gives up to the level above."""
    with torch.no_grad():
        u, w = u.to(B), w.to(B)
        c = float(u @ B @ w) if coefficient is None else float(coefficient)
        B.sub_(c * torch.outer(u, w))
    return c
