"""The ``merge`` config group: which aggregator a level server uses, and its constants."""

from __future__ import annotations

from dataclasses import dataclass, field

from layers.config import check_fields
from layers.merge.base import Aggregator
from layers.merge.resonance import ResonanceConfig


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
        from layers.merge import AGGREGATORS

        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"merge.aggregator: {self.aggregator!r} is not one of {sorted(AGGREGATORS)}")
        check_fields("merge", self, byzantine_f=self.byzantine_f >= 0, clip_iterations=self.clip_iterations >= 1,
                     server_lr=self.server_lr > 0, and_mask_tau=0 <= self.and_mask_tau <= 1,
                     ties_density=0 < self.ties_density <= 1)


def build_aggregator(cfg: MergeConfig) -> Aggregator:
    """The configured aggregator, fresh (no state)."""
    from layers.merge import AGGREGATORS

    kwargs = {
        "resonance": {"config": cfg.resonance},
        "mean": {"server_lr": cfg.server_lr},
        "trimmed_mean": {"f": cfg.byzantine_f},
        "krum": {"f": cfg.byzantine_f},
        "multi_krum": {"f": cfg.byzantine_f},
        "centered_clipping": {"iterations": cfg.clip_iterations},
        "and_mask": {"tau": cfg.and_mask_tau},
        "ties": {"density": cfg.ties_density},
    }.get(cfg.aggregator, {})
    return AGGREGATORS[cfg.aggregator](**kwargs)
