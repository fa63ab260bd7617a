"""Circuits: rank-1 components ``sigma u w^T`` of one level's write matrix for one module.

``w`` (length R) is the activation pattern the circuit reads in P-space; ``u`` (d_out)
is what it writes. Extraction is an SVD of a d_out x R matrix: cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Component:
    """One rank-1 component: ``sigma * u w^T`` with unit u, w and sigma >= 0."""

    sigma: float
    u: Tensor  # (d_out,)
    w: Tensor  # (R,)

    def matrix(self) -> Tensor:
        return self.sigma * torch.outer(self.u, self.w)  # (d_out, R)


def canonical_sign(u: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Flip (u, w) together so that w's largest-magnitude entry is positive (sigma u w^T unchanged)."""
    return (-u, -w) if float(w[w.abs().argmax()]) < 0 else (u, w)


def extract(b: Tensor, *, min_energy: float = 0.01, noise_floor: float = 0.0,
            max_components: int = 8) -> list[Component]:
    """The strongest rank-1 components of ``b`` (d_out x R) above the noise floor, strongest first.

    A component is kept when sigma > ``noise_floor`` and sigma^2 >= ``min_energy`` x the
    total energy ||b||_F^2.
    """
    if b.ndim != 2:
        raise ValueError(f"extract: expected a 2-D write matrix, got shape {tuple(b.shape)}")
    m = b.detach().double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)  # (d_out, r), (r,), (r, R)
    energy = float(s.pow(2).sum())
    out = []
    for i in range(min(max_components, s.numel())):
        sigma = float(s[i])
        if sigma <= noise_floor or sigma**2 < min_energy * energy or sigma == 0:
            break
        ui, wi = canonical_sign(u[:, i], vh[i])
        out.append(Component(sigma, ui.to(b.dtype), wi.to(b.dtype)))
    return out


def strength_along(b: Tensor, u: Tensor, w: Tensor) -> float:
    """Signed strength of ``b`` along the rank-1 direction u w^T: ``u^T b w``."""
    return float(u.to(b.dtype) @ b.detach() @ w.to(b.dtype))
