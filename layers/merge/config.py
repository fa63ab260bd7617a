"""The ``merge`` config group: which aggregator a level server uses, and its constants."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from layers.config import check_fields

# the names of layers.merge.AGGREGATORS (a test keeps the two equal): config validation needs no torch
AGGREGATOR_NAMES = ("resonance", "mean", "median", "trimmed_mean", "krum", "multi_krum", "centered_clipping",
                    "sign_majority", "and_mask", "ties")


@dataclass
class ResonanceConfig:
    """Constants of the resonance merge (defaults from DESIGN section 4).

    Attributes:
        rho: clipping radius as a multiple of the median distance to the centre.
        z: one-sided sign-test quantile (1.645: 5%).
        delta: margin of tau above the assumed attacker fraction eps_max.
        leak: gain of coordinates below the agreement threshold.
        beta: extra gain at full agreement (gain capped at 1 + beta).
        eps_max: largest attacker weight fraction the gate is certified against.
        tau_max: cap on tau (must be < 1).
        kappa: norm budget: ||u|| = kappa * ||g_hat||.
        momentum: server momentum of the clipping centre v.
        elect: where the gate passes, zero the robust estimate if its sign disagrees with the
            vote (the vote's sign is certified only there).
    """

    rho: float = 1.0
    z: float = 1.645
    delta: float = 0.05
    leak: float = 0.25
    beta: float = 1.0
    eps_max: float = 0.2
    tau_max: float = 0.9
    kappa: float = 1.0
    momentum: float = 0.0
    elect: bool = True

    def __post_init__(self) -> None:
        check_fields(
            "merge.resonance", self, rho=self.rho > 0, z=self.z >= 0, delta=self.delta >= 0,
            leak=0 <= self.leak <= 1, beta=self.beta >= 0, eps_max=0 <= self.eps_max < 1,
            tau_max=0 < self.tau_max < 1, kappa=self.kappa > 0, momentum=0 <= self.momentum < 1,
            finite=all(math.isfinite(float(getattr(self, k))) for k in
                       ("rho", "z", "delta", "leak", "beta", "eps_max", "tau_max", "kappa", "momentum")),
        )



@dataclass
class MergeConfig:
    """Attributes:
    aggregator: one of ``layers.merge.AGGREGATORS`` (resonance, mean, median, trimmed_mean,
        krum, multi_krum, centered_clipping, sign_majority, and_mask, ties).
    resonance: constants of the resonance merge.
    server_lr: mean: the server rate (the tuned-rate FedAvg baseline).
    byzantine_f: trimmed_mean, krum, multi_krum: the number of attackers assumed.
    clip_iterations: centered_clipping: L.
    and_mask_tau: and_mask: agreement threshold.
    ties_density: ties: fraction of each update kept by magnitude.
    """

    aggregator: str = "resonance"
    resonance: ResonanceConfig = field(default_factory=ResonanceConfig)
    server_lr: float = 1.0
    byzantine_f: int = 1
    clip_iterations: int = 1
    and_mask_tau: float = 0.5
    ties_density: float = 0.2

    def __post_init__(self) -> None:
        if self.aggregator not in AGGREGATOR_NAMES:
            raise ValueError(f"merge.aggregator: {self.aggregator!r} is not one of {sorted(AGGREGATOR_NAMES)}")
        check_fields("merge", self, byzantine_f=self.byzantine_f >= 0, clip_iterations=self.clip_iterations >= 1,
                     server_lr=self.server_lr > 0, and_mask_tau=0 <= self.and_mask_tau <= 1,
                     ties_density=0 < self.ties_density <= 1)
