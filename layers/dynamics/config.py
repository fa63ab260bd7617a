"""Constants of a level's dynamics (the ``dynamics`` config group), with DESIGN section 6 defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from layers.config import check_fields

MEASURES = ("drive", "gradient")  # what heats a level's temperature (TemperatureConfig.measure)


@dataclass
class ViscosityConfig:
    """Two sign buckets per parameter: r+ builds with positive moves, r- with negative ones.

    A move against r is divided by (1 + r); each move against a bucket multiplies it by
    (1 - deplete). ``build`` is added per move, up to ``max_resistance``.
    """

    enabled: bool = True
    build: float = 0.1
    deplete: float = 0.3
    max_resistance: float = 10.0

    def __post_init__(self) -> None:
        check_fields("dynamics.viscosity", self, build=self.build >= 0, deplete=0 <= self.deplete <= 1,
               max_resistance=self.max_resistance >= 0)


@dataclass
class TemperatureConfig:
    """Per-parameter temperature T in [0, 1]: EMA (rate ``heat``) of |drive| / the level's drive
    RMS (itself an EMA), capped at 1: a block the level's drive leaves alone cools.

    Mobility is ``floor + (1 - floor) T``. A parameter with T < ``freeze`` is frozen; a block
    (one module's B) with more than ``crystal_fraction`` of its parameters frozen is
    crystallised and its moves are divided by ``crystal_divisor``. The level asks to grow
    when more than ``growth_fraction`` of its blocks are crystallised.

    ``measure``: what heats T. ``drive``: the step the level takes. ``gradient``: the gradient
    the step came from (a server's merged gradient at unit RMS; where no gradient is given, the
    drive). They differ under an Adam step, which moves every steady coordinate by about ``lr``:
    measured on its drive no block crystallises, so automatic growth (``levels.grow_after``)
    needs ``gradient`` under ``server.step: adam`` (docs/dynamics.md).
    """

    enabled: bool = True
    measure: str = "drive"
    heat: float = 0.1
    floor: float = 0.1
    freeze: float = 1 / math.e
    crystal_fraction: float = 1 - 1 / math.e
    crystal_divisor: float = 10.0
    growth_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_fields("dynamics.temperature", self, measure=self.measure in MEASURES, heat=0 < self.heat <= 1,
                     floor=0 <= self.floor <= 1,
               freeze=0 <= self.freeze <= 1, crystal_fraction=0 <= self.crystal_fraction <= 1,
               crystal_divisor=self.crystal_divisor >= 1, growth_fraction=0 <= self.growth_fraction <= 1)


@dataclass
class PhaseConfig:
    """Activity a = EMA (rate ``rate``) of 1[|drive| > noise floor]; the level's noise floor is
    ``noise_factor`` x the EMA of the level's drive RMS. SCREENED when a > ``theta_on``, FREE when a < ``theta_off``
    (hysteresis). Each step the decaying part of a parameter (its unconsolidated part with
    consolidation on, all of it with consolidation off) shrinks by ``free_decay`` when FREE and by
    ``screened_decay`` when SCREENED (0: screened parameters hold; DESIGN section 6).
    """

    enabled: bool = True
    rate: float = 0.1
    noise_factor: float = 1.0
    theta_on: float = 0.5
    theta_off: float = 0.2
    free_decay: float = 0.01
    screened_decay: float = 0.0

    def __post_init__(self) -> None:
        check_fields("dynamics.phase", self, rate=0 < self.rate <= 1, noise_factor=self.noise_factor > 0,
               theta_on=0 < self.theta_on < 1, theta_off=0 <= self.theta_off < self.theta_on,
               free_decay=0 <= self.free_decay < 1, screened_decay=0 <= self.screened_decay < 1)


@dataclass
class ConsolidationConfig:
    """What a level learned while SCREENED is kept (needs ``phase``; without it nothing decays anyway).

    Each parameter is an anchor (consolidated) plus an unconsolidated part: the optimizer's own
    moves enter the unconsolidated part, each SCREENED step moves a fraction ``rate`` of it into
    the anchor, and the phase decay shrinks only the unconsolidated part, so a FREE parameter
    decays toward its anchor, not toward zero. Writes to the level from outside the optimizer
    (promotions, absorbs, removals) change the anchor: they are consolidated as they are.
    Disabled: the anchor stays zero and every parameter decays toward zero.
    """

    enabled: bool = True
    rate: float = 0.1

    def __post_init__(self) -> None:
        check_fields("dynamics.consolidation", self, rate=0 < self.rate <= 1)


@dataclass
class MassConfig:
    """Mass m grows by the coherent contributions each update carries and leaks by ``leak`` per
    step; moves are divided by (1 + m / ``half``): a level driven by many agents is slow.
    """

    enabled: bool = True
    half: float = 100.0
    leak: float = 1e-3

    def __post_init__(self) -> None:
        check_fields("dynamics.mass", self, half=self.half > 0, leak=0 <= self.leak < 1)


@dataclass
class SyncConfig:
    """Event-driven push (``layers/dynamics/sync.py``): after each update, a test of "the sum of the
    updates since the last push is more than noise" whose false-positive rate on pure noise is
    ``alpha`` at every step, whatever the number of coordinates. Push when it passes and at least
    ``min_interval`` steps passed (the test needs 2 updates), or at ``max_interval`` steps regardless.
    Disabled: a push every ``min_interval`` steps (the fixed-interval ablation).
    """

    enabled: bool = True
    alpha: float = 0.01
    min_interval: int = 1
    max_interval: int = 100

    def __post_init__(self) -> None:
        check_fields("dynamics.sync", self, alpha=0 < self.alpha < 1, min_interval=self.min_interval >= 1,
               max_interval=self.max_interval >= self.min_interval)


@dataclass
class HomeostasisConfig:
    """Bands for the screened fraction and the spectral entropy of B; every ``window`` updates of
    the level (agent steps for an agent's levels, merges for a server's) the phase thresholds
    (screened fraction) and the free decay (entropy) move by a factor ``gain``.
    """

    enabled: bool = True
    window: int = 20
    screened_low: float = 0.05
    screened_high: float = 0.5
    entropy_low: float = 0.3
    entropy_high: float = 0.9
    gain: float = 0.2

    def __post_init__(self) -> None:
        check_fields("dynamics.homeostasis", self, screened_low=0 <= self.screened_low < self.screened_high,
               screened_high=self.screened_high <= 1, entropy_low=0 <= self.entropy_low < self.entropy_high,
               entropy_high=self.entropy_high <= 1, gain=0 < self.gain < 1, window=self.window >= 1)


@dataclass
class DynamicsConfig:
    """Everything that shapes how one level moves. ``lr`` scales every update."""

    lr: float = 1.0
    viscosity: ViscosityConfig = field(default_factory=ViscosityConfig)
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    mass: MassConfig = field(default_factory=MassConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    homeostasis: HomeostasisConfig = field(default_factory=HomeostasisConfig)

    def __post_init__(self) -> None:
        check_fields("dynamics", self, lr=math.isfinite(self.lr) and self.lr > 0)
