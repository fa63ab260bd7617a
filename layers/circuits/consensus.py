"""Consensus across agents: which proposed circuits a shared level accepts (a pure function).

Proposals for the same upper level are validated, then grouped per module by alignment
(``|u.u'| |w.w'|`` >= match threshold against the group's first, strongest member). In a
group, each distinct agent has one vote, the sign of its coefficient along the group's
reference direction (``sigma (u.u_ref)(w.w_ref)``). The coherence test is the one of the
resonance merge at circuit level: agreement ``m = |sum of votes| / n`` must reach
``tau = min(max(z / sqrt(n), eps_max + delta), tau_max)``, with at least ``min_agents``
distinct agents. An accepted circuit is the best rank-1 approximation of the mean of
the majority's aligned components; each majority proposer removes its projection onto
it. Dissenters and rejected groups are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from layers.circuits.config import CircuitsConfig
from layers.circuits.extract import canonical_sign
from layers.merge.config import ResonanceConfig
from layers.merge.resonance import threshold


@dataclass
class Proposal:
    agent_id: str
    module: str
    sigma: float
    u: Tensor  # (d_out,)
    w: Tensor  # (R,)
    score: float


@dataclass
class Removal:
    """What one proposer removes from its own level: ``coefficient * u w^T`` in ``module``."""

    agent_id: str
    module: str
    coefficient: float
    u: Tensor
    w: Tensor

    def matrix(self) -> Tensor:
        return self.coefficient * torch.outer(self.u, self.w)


@dataclass
class ConsensusCircuit:
    module: str
    sigma: float
    u: Tensor
    w: Tensor
    agents: list[str]
    agreement: float
    tau: float


@dataclass
class ConsensusResult:
    accepted: list[ConsensusCircuit] = field(default_factory=list)
    removals: dict[str, list[Removal]] = field(default_factory=dict)
    rejected: list[tuple[Proposal, str]] = field(default_factory=list)


def _invalid(p: Proposal, shapes: Mapping[str, tuple[int, int]]) -> str | None:
    if p.module not in shapes:
        return f"unknown module {p.module!r}"
    d_out, rank = shapes[p.module]
    if not isinstance(p.u, Tensor) or tuple(p.u.shape) != (d_out,):
        return f"u has shape {tuple(getattr(p.u, 'shape', ()))}, expected ({d_out},)"
    if not isinstance(p.w, Tensor) or tuple(p.w.shape) != (rank,):
        return f"w has shape {tuple(getattr(p.w, 'shape', ()))}, expected ({rank},)"
    if not (math.isfinite(p.sigma) and math.isfinite(p.score)) or not bool(
            torch.isfinite(p.u).all() and torch.isfinite(p.w).all()):
        return "NaN or Inf in sigma, score, u or w"
    if p.sigma < 0 or not 0 <= p.score <= 1:
        return f"sigma must be >= 0 and score in [0, 1] (got {p.sigma}, {p.score})"
    if float(p.u.norm()) == 0 or float(p.w.norm()) == 0:
        return "u or w is zero"
    return None


def consensus(proposals: Sequence[Proposal], shapes: Mapping[str, tuple[int, int]],
              config: CircuitsConfig | None = None) -> ConsensusResult:
    """Decide which proposals a shared level accepts.

    Args:
        proposals: from several agents, for one upper level.
        shapes: module -> (d_out, R) of that level's write matrices.
        config: match threshold, ``consensus_z``, ``consensus_min_agents``.
    """
    cfg = config or CircuitsConfig()
    gate = ResonanceConfig(z=cfg.consensus_z)
    result = ConsensusResult()
    valid: dict[str, list[Proposal]] = {}
    for p in proposals:
        reason = _invalid(p, shapes)
        if reason:
            result.rejected.append((p, reason))
        else:
            u, w = canonical_sign(p.u.double() / p.u.double().norm(), p.w.double() / p.w.double().norm())
            valid.setdefault(p.module, []).append(Proposal(p.agent_id, p.module, p.sigma, u, w, p.score))
    for module, items in valid.items():
        groups: list[list[Proposal]] = []
        for p in sorted(items, key=lambda q: q.sigma, reverse=True):
            for g in groups:
                if abs(float(p.u @ g[0].u)) * abs(float(p.w @ g[0].w)) >= cfg.match_threshold:
                    g.append(p)
                    break
            else:
                groups.append([p])
        for g in groups:
            _decide(module, g, cfg, gate, result)
    return result


def _decide(module: str, group: list[Proposal], cfg: CircuitsConfig, gate: ResonanceConfig,
            result: ConsensusResult) -> None:
    ref_u, ref_w = group[0].u, group[0].w

    def along_ref(p: Proposal) -> float:  # signed coefficient along the group's reference direction
        return p.sigma * float(p.u @ ref_u) * float(p.w @ ref_w)

    best: dict[str, Proposal] = {}  # one vote per agent: its strongest proposal in the group
    for p in group:
        if p.agent_id not in best or abs(along_ref(p)) > abs(along_ref(best[p.agent_id])):
            best[p.agent_id] = p
    coef = {a: along_ref(p) for a, p in best.items()}
    n = len(coef)
    votes = sum(math.copysign(1.0, c) for c in coef.values() if c != 0)
    agreement = abs(votes) / n
    tau = threshold(n, gate)
    if n < cfg.consensus_min_agents:
        reason = f"only {n} distinct agent(s); a shared level needs >= {cfg.consensus_min_agents}"
    elif agreement < tau:
        reason = f"agreement {agreement:.2f} below tau {tau:.2f} among {n} agents"
    else:
        reason = None
    if reason:
        result.rejected.extend((p, reason) for p in group)
        return
    sign = math.copysign(1.0, votes)
    majority = [a for a, c in coef.items() if c * sign > 0]
    mean = torch.zeros(ref_u.numel(), ref_w.numel(), dtype=torch.float64)
    for a in majority:
        mean += best[a].sigma * torch.outer(best[a].u, best[a].w)
    mean /= len(majority)
    uu, ss, vh = torch.linalg.svd(mean, full_matrices=False)
    u, w = canonical_sign(uu[:, 0], vh[0])
    result.accepted.append(ConsensusCircuit(module, float(ss[0]), u, w, sorted(majority), agreement, tau))
    for p in group:
        if p.agent_id in majority:
            c = p.sigma * float(p.u @ u) * float(p.w @ w)  # its projection onto the accepted circuit
            result.removals.setdefault(p.agent_id, []).append(Removal(p.agent_id, module, c, u, w))
    dissent = [p for p in group if p.agent_id not in majority]
    result.rejected.extend((p, "dissents from the accepted consensus sign") for p in dissent)


def proposals_from(tracker, agent_id: str) -> list[Proposal]:
    """The tracker's stable circuits as proposals of ``agent_id`` (sigma >= 0, the sign folded into u);
    none when the tracker's config switches promotion off."""
    if not tracker.config.promote:
        return []
    return [Proposal(agent_id, c.module, abs(c.strength), c.u.clone() * math.copysign(1, c.strength),
                     c.w.clone(), c.score) for c in tracker.candidates()]


def remove_projection(B: Tensor, u: Tensor, w: Tensor) -> float:
    """``B -= c u w^T`` with ``c = u^T B w`` (u, w unit): what a proposer gives up to the level above."""
    with torch.no_grad():
        u, w = u.to(B), w.to(B)
        c = float(u @ B @ w)
        B.sub_(c * torch.outer(u, w))
    return c
