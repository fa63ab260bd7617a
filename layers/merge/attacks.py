"""Attacks on a merge, for robustness studies: what f attackers send, given the honest updates.

Every attack here is omniscient (it sees the round's honest updates), the strongest setting,
and a pure function of ``honest`` (K_h, d), ``f`` and ``n`` (senders in the merge, honest and
attackers). Formulas follow ByzFL's ``byzfl/attacks`` and the papers cited per function.

The servers here apply every merge scaled to unit RMS (``cluster/level/core.py``): a merge moves
``B`` by exactly ``server.lr`` whatever its norm, so an attack that only *shrinks* the mean (a
minority sign flip, IPM with a small epsilon) does no harm. The attacks built against a
normalised mean (``alie_opt``, ``min_max``, ``min_sum``, ``ipm_large``) aim at its *direction*:
each turns the merged direction away from the honest mean's as far as its own stealth constraint
allows. All arithmetic is float64; the rows come back in ``honest``'s dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ATTACKS = ("sign_flip", "scaled", "gaussian", "alie", "ipm", "alie_opt", "min_max", "min_sum", "ipm_large")
DIRECTIONS = ("unit", "sign", "std")  # min-max / min-sum perturbations: -unit(mean), -sign(mean), -std
ALIE_GRID = 64  # z values tried by alie_opt in [0, z_bound]


def alie_z(n: int, f: int) -> float:
    """z_max of "A little is enough" (Baruch et al. 2019) for n workers, f of them attackers.

    0 (to float precision) for (n, f) = (10, 2): the attack then sends the honest mean.
    """
    s = math.floor(n / 2 + 1) - f
    p = (n - f - s) / (n - f)
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p)))


def _stats(honest: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    h = honest.double()
    return h, h.mean(dim=0), h.std(dim=0, unbiased=h.shape[0] > 1)


def _cos(a: Tensor, b: Tensor) -> float:
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 1.0


def alie_opt_z(honest: Tensor, f: int, n: int) -> tuple[float, float]:
    """(z, z_bound) of ALIE with an optimised z against a normalised mean.

    The crafted update is ``mean - z std`` (Baruch et al. 2019). Stealth: it stays within the
    honest spread, ``||crafted - mean|| <= max_i ||h_i - mean||``, i.e. ``z <= z_bound =
    max_i ||h_i - mean|| / ||std||``. Damage: the cosine between the merged mean
    ``mean - (f / n) z std`` and the honest mean (what a unit-RMS server step follows); z is the
    value on a grid of :data:`ALIE_GRID` + 1 points of [0, z_bound] that minimises it (the largest
    such z on ties). z > 0 whenever the honest updates differ and std is not parallel to mean.
    """
    h, mean, std = _stats(honest)
    s = float(std.norm())
    if s == 0 or f == 0:
        return 0.0, 0.0
    bound = float((h - mean).norm(dim=1).max()) / s
    grid = torch.linspace(0.0, bound, ALIE_GRID + 1, dtype=torch.float64)
    cos = torch.tensor([_cos(mean - (f / n) * z * std, mean) for z in grid.tolist()])
    best = int((cos <= cos.min() + 1e-12).nonzero().max())  # the largest z among the minimisers
    return float(grid[best]), bound


def direction(honest: Tensor, kind: str) -> Tensor:
    """Perturbation p of min-max / min-sum (Shejwalkar & Houmansadr, NDSS 2021): ``unit`` -mean/||mean||,
    ``sign`` -sign(mean), ``std`` -std (coordinate-wise)."""
    _, mean, std = _stats(honest)
    if kind == "unit":
        nrm = float(mean.norm())
        return -mean / nrm if nrm > 0 else torch.zeros_like(mean)
    if kind == "sign":
        return -torch.sign(mean)
    if kind == "std":
        return -std
    raise ValueError(f"unknown perturbation direction {kind!r}; known: {list(DIRECTIONS)}")


def _largest_root(a: float, b: Tensor, c: Tensor) -> float:
    """Largest gamma >= 0 with a g^2 + b g + c <= 0 for every row (c <= 0 holds at g = 0)."""
    if a <= 0:
        return 0.0
    disc = (b * b - 4 * a * c).clamp_min(0.0)
    return max(0.0, float(((-b + disc.sqrt()) / (2 * a)).min()))


def agr_gamma(honest: Tensor, p: Tensor, rule: str) -> float:
    """The largest gamma for the crafted ``mean + gamma p`` under the AGR-agnostic constraint of ``rule``.

    ``min_max``: ``max_i ||x - h_i||^2 <= max_{i,j} ||h_i - h_j||^2`` (no farther from any honest
    update than the two farthest honest ones are from each other). ``min_sum``:
    ``sum_i ||x - h_i||^2 <= max_i sum_j ||h_i - h_j||^2``. Each ``||mean + gamma p - h_i||^2`` is a
    quadratic in gamma that holds at gamma = 0 (the mean is inside the honest hull), so the largest
    feasible gamma is the smallest positive root: the point the paper's bisection (Algorithm 1)
    converges to, solved exactly here.
    """
    h, mean, _ = _stats(honest)
    p = p.double()
    diff = mean - h  # (K, d)
    a = float(p @ p)
    lin, const = 2 * (diff @ p), (diff * diff).sum(dim=1)  # per honest i: a g^2 + lin g + const
    pair = torch.cdist(h, h).pow(2)  # (K, K)
    if rule == "min_max":
        return _largest_root(a, lin, const - pair.max())
    if rule == "min_sum":
        k = h.shape[0]
        return _largest_root(k * a, lin.sum().reshape(1), (const.sum() - pair.sum(dim=1).max()).reshape(1))
    raise ValueError(f"unknown AGR-agnostic rule {rule!r}; known: ['min_max', 'min_sum']")


def agr_attack(honest: Tensor, rule: str, f: int, n: int, kind: str | None = None) -> tuple[Tensor, str]:
    """The (d,) crafted update ``mean + gamma p`` of min-max or min-sum (see :func:`agr_gamma`), and its
    direction.

    ``kind`` None: the omniscient attacker takes whichever of :data:`DIRECTIONS` turns the merged mean
    ``((n - f) mean + f x) / n`` furthest from the honest mean (lowest cosine). Against a unit-RMS
    step ``unit`` is the weakest: along -mean a point inside the honest spread only shrinks the mean
    unless ``f gamma > n ||mean||``.
    """
    h, mean, _ = _stats(honest)
    best: tuple[float, Tensor, str] | None = None
    for name in ([kind] if kind else DIRECTIONS):
        p = direction(honest, name)
        x = mean + agr_gamma(honest, p, rule) * p
        c = _cos(((n - f) * mean + f * x) / n, mean)
        if best is None or c < best[0]:
            best = (c, x, name)
    return best[1].to(honest.dtype), best[2]


def ipm_epsilon(f: int, n: int, margin: float = 2.0) -> float:
    """IPM's epsilon large enough to reverse the mean (Xie et al. 2020): the merged mean of n - f honest
    updates with mean m and f copies of ``-eps m`` is ``m (n - f - f eps) / n``, reversed iff
    eps > (n - f) / f; ``margin`` x that threshold (2: the reversed mean is as long as the honest part)."""
    if f <= 0 or n <= f:
        raise ValueError(f"ipm_epsilon: need 0 < f < n, got f={f}, n={n}")
    return margin * (n - f) / f


def attack_updates(kind: str, honest: Tensor, f: int, *, n: int | None = None, generator=None) -> Tensor:
    """(f, d) attacker updates against ``honest`` (K_h, d); ``n`` senders in all (default K_h + f).

    kinds: ``sign_flip`` (-mean), ``scaled`` (-10 x mean), ``gaussian`` (N(0, (10 sigma)^2) per
    coordinate, sigma = mean honest std), ``alie`` (mean - z_max(n, f) sigma), ``ipm`` (-0.1 x mean);
    against a normalised mean: ``alie_opt`` (mean - z sigma, :func:`alie_opt_z`), ``min_max`` and
    ``min_sum`` (mean + gamma p, p the most damaging of :data:`DIRECTIONS`, :func:`agr_attack`),
    ``ipm_large`` (-eps mean, :func:`ipm_epsilon`).
    """
    if f == 0:
        return honest.new_zeros(0, honest.shape[1])
    n = n or honest.shape[0] + f
    h, mean, std = _stats(honest)
    if kind == "sign_flip":
        row = -mean
    elif kind == "scaled":
        row = -10.0 * mean
    elif kind == "ipm":
        row = -0.1 * mean
    elif kind == "ipm_large":
        row = -ipm_epsilon(f, n) * mean
    elif kind == "alie":
        row = mean - alie_z(n, f) * std
    elif kind == "alie_opt":
        row = mean - alie_opt_z(honest, f, n)[0] * std
    elif kind in ("min_max", "min_sum"):
        row = agr_attack(honest, kind, f, n)[0].double()
    elif kind == "gaussian":
        noise = torch.randn(f, honest.shape[1], generator=generator)
        return (noise * (10.0 * float(std.mean()))).to(honest.dtype)
    else:
        raise ValueError(f"unknown attack {kind!r}; known: {', '.join(ATTACKS)}")
    return row.to(honest.dtype).expand(f, -1).clone()
