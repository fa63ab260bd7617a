"""The ``absorb`` section: how ``swarm absorb`` blends outside adapters and guards the level."""

from __future__ import annotations

import math
from dataclasses import dataclass

from layers.config import check_fields


@dataclass
class AbsorbConfig:
    """Attributes:
        strength: alpha in ``B += alpha * delta`` (the projected adapter delta).
        max_degradation: bits per byte the probe set may lose (with every level, or with the
            target level alone) before the absorb is rolled back.
        merge_threshold, split_threshold: cosines that make several adapters merge (task
            arithmetic) or split (common part to the slower level, residuals stay); below both,
            each is absorbed on its own.
        probe_windows: held-out windows per agent in the probe set.
        grow: rows to add to every module's read space before absorbing, holding the adapters'
            top read directions P does not span (0: no growth; docs/absorb.md).
    """

    strength: float = 1.0
    max_degradation: float = 0.05
    merge_threshold: float = 0.8
    split_threshold: float = 0.3
    probe_windows: int = 8
    grow: int = 0

    def __post_init__(self) -> None:
        check_fields("absorb", self, strength=math.isfinite(self.strength),
                     max_degradation=math.isfinite(self.max_degradation) and self.max_degradation >= 0,
                     merge_threshold=0 <= self.split_threshold <= self.merge_threshold <= 1,
                     split_threshold=0 <= self.split_threshold <= 1, probe_windows=self.probe_windows >= 1,
                     grow=self.grow >= 0)
