"""Attacks on a merge, for robustness studies: what f attackers send, given the honest updates.

Formulas follow ByzFL's ``byzfl/attacks`` and the EPFL robust-optimizer code. Every
attack here is omniscient (it sees the honest updates), the strongest setting.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alie_z(n: int, f: int) -> float:
    """z_max of "A little is enough" (Baruch et al. 2019) for n workers, f of them attackers."""
    s = math.floor(n / 2 + 1) - f
    p = (n - f - s) / (n - f)
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p)))


def attack_updates(kind: str, honest: Tensor, f: int, *, n: int | None = None, generator=None) -> Tensor:
    """(f, d) attacker updates against ``honest`` (K_h, d).

    kinds: ``sign_flip`` (-mean), ``scaled`` (-10 x mean: sign flip with a large norm),
    ``gaussian`` (N(0, (10 sigma)^2) per coordinate, sigma = honest std), ``alie``
    (mean - z sigma, z = z_max(n, f)), ``ipm`` (-0.1 x mean, inner-product manipulation).
    """
    if f == 0:
        return honest.new_zeros(0, honest.shape[1])
    mean, std = honest.mean(dim=0), honest.std(dim=0, unbiased=honest.shape[0] > 1)
    if kind == "sign_flip":
        row = -mean
    elif kind == "scaled":
        row = -10.0 * mean
    elif kind == "ipm":
        row = -0.1 * mean
    elif kind == "alie":
        row = mean - alie_z(n or honest.shape[0] + f, f) * std
    elif kind == "gaussian":
        noise = torch.randn(f, honest.shape[1], generator=generator)
        return noise * (10.0 * std.mean())
    else:
        raise ValueError(f"unknown attack {kind!r}; known: sign_flip, scaled, gaussian, alie, ipm")
    return row.expand(f, -1).clone()


ATTACKS = ("sign_flip", "scaled", "gaussian", "alie", "ipm")
