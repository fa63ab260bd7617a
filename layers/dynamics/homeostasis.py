"""Homeostasis: keep each level out of both crystallisation and amnesia.

Once per window the controller measures the level's screened fraction and the mean
spectral entropy of its blocks, and nudges the level's own thresholds by a factor
(1 +- gain):

* screened fraction above its band: raise theta_on and theta_off (harder to screen);
  below: lower them;
* spectral entropy above its band (energy spread over many directions: noise, no
  structure): raise the free decay, clearing unstructured mass faster; below
  (a few directions dominate): lower it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from layers.dynamics.config import HomeostasisConfig

if TYPE_CHECKING:  # the optimizer creates its homeostasis: a run-time import would be circular
    from layers.dynamics.optimizer import LevelOptimizer


def spectral_entropy(b: Tensor) -> float:
    """Normalised entropy of the squared singular values of ``b``: 0 = rank one, 1 = flat spectrum."""
    s = torch.linalg.svdvals(b.detach().double())
    energy = s.pow(2)
    total = float(energy.sum())
    n = min(b.shape)
    if total <= 0 or n < 2:
        return 0.0
    p = energy / total
    p = p[p > 0]
    return float(-(p * p.log()).sum()) / math.log(n)


class Homeostasis:
    """One controller per level; call :meth:`update` once per window."""

    def __init__(self, optimizer: LevelOptimizer, config: HomeostasisConfig | None = None) -> None:
        self.optimizer = optimizer
        self.config = config or HomeostasisConfig()

    def measure(self) -> dict[str, float]:
        entropies = [spectral_entropy(p) for p in self.optimizer.params.values()]
        return {"screened_fraction": self.optimizer.screened_fraction(),
                "spectral_entropy": sum(entropies) / len(entropies)}

    def update(self) -> dict[str, float]:
        """Measure, adjust the optimizer's thresholds, and return the measurements and the new values."""
        c, t = self.config, self.optimizer.thresholds
        m = self.measure()
        if c.enabled and self.optimizer.phase:
            f = m["screened_fraction"]
            if f > c.screened_high:
                t["theta_on"] = min(0.99, t["theta_on"] * (1 + c.gain))
                t["theta_off"] = min(t["theta_on"] * 0.99, t["theta_off"] * (1 + c.gain))
            elif f < c.screened_low:
                t["theta_on"] = max(1e-3, t["theta_on"] * (1 - c.gain))
                t["theta_off"] = max(0.0, t["theta_off"] * (1 - c.gain))
            h = m["spectral_entropy"]
            if h > c.entropy_high:
                t["free_decay"] = min(0.5, max(t["free_decay"], 1e-6) * (1 + c.gain))
            elif h < c.entropy_low:
                t["free_decay"] = t["free_decay"] * (1 - c.gain)
        return {**m, **t}
