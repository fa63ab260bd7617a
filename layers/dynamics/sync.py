"""``SyncGate``: when should a lower level push its accumulated update upward?

Per coordinate, m1 = EMA(u) and m2 = EMA(|u|) with rate 1 - rho since the last push.
Coherence c = sum_j |m1_j| / sum_j m2_j lies in [0, 1]: 1 for a steady drift, about
1 / sqrt(N_eff) for white noise, where N_eff(t) = (1 - rho^t)^2 (1 + rho) /
((1 - rho)(1 - rho^2t)) is the effective number of samples in the EMA after t steps
(1 at t = 1, (1 + rho) / (1 - rho) in the limit). Push when c > z / sqrt(N_eff(t)) and
at least ``min_interval`` steps passed, or at ``max_interval`` steps regardless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layers.dynamics.config import SyncConfig


def effective_samples(rho: float, t: int) -> float:
    """N_eff of an EMA with decay ``rho`` after ``t`` samples."""
    if t <= 0:
        return 0.0
    if rho == 0:
        return 1.0
    return (1 - rho**t) ** 2 * (1 + rho) / ((1 - rho) * (1 - rho ** (2 * t)))


class SyncGate:
    """Decides pushes from the stream of updates a level accumulates."""

    def __init__(self, config: SyncConfig | None = None) -> None:
        self.config = config or SyncConfig()
        self.m1: list[Tensor] | None = None
        self.m2: list[Tensor] | None = None
        self.steps = 0
        self.coherence = 0.0
        self.threshold = math.inf

    def observe(self, update: Tensor | Mapping[str, Tensor]) -> str | None:
        """Feed one update; returns ``"coherent"`` or ``"max_interval"`` when it is time to push, else None."""
        parts = list(update.values()) if isinstance(update, Mapping) else [update]
        c = self.config
        if self.m1 is None:
            self.m1 = [torch.zeros_like(p, dtype=torch.float32) for p in parts]
            self.m2 = [torch.zeros_like(p, dtype=torch.float32) for p in parts]
        if len(parts) != len(self.m1) or any(p.shape != m.shape for p, m in zip(parts, self.m1, strict=True)):
            raise ValueError("SyncGate.observe: update structure changed since the last push")
        for p, m1, m2 in zip(parts, self.m1, self.m2, strict=True):
            p = p.detach().float()
            m1.mul_(c.rho).add_(p, alpha=1 - c.rho)
            m2.mul_(c.rho).add_(p.abs(), alpha=1 - c.rho)
        self.steps += 1
        denominator = sum(float(m.sum()) for m in self.m2)
        self.coherence = sum(float(m.abs().sum()) for m in self.m1) / denominator if denominator > 0 else 0.0
        self.threshold = c.z / math.sqrt(effective_samples(c.rho, self.steps))
        if not c.enabled:
            return "max_interval" if self.steps >= c.min_interval else None
        if self.steps >= c.max_interval:
            return "max_interval"
        if self.steps >= c.min_interval and self.coherence > self.threshold:
            return "coherent"
        return None

    def reset(self) -> None:
        """Call after a push: the next window starts empty."""
        self.m1 = self.m2 = None
        self.steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "m1": self.m1, "m2": self.m2}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.m1 = None if state["m1"] is None else [t.clone() for t in state["m1"]]
        self.m2 = None if state["m2"] is None else [t.clone() for t in state["m2"]]
