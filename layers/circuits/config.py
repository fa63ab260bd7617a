"""Constants of circuit extraction, tracking, promotion and consensus (the ``circuits`` config group)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from layers.config import check_fields

GOLDEN = (1 + math.sqrt(5)) / 2


@dataclass
class CircuitsConfig:
    """Attributes:
    min_energy: extraction noise floor, relative: a component is kept when sigma^2 is at
        least this fraction of the block's total energy.
    noise_floor: extraction noise floor, absolute (sigma must exceed it too).
    max_per_module: at most this many circuits per block (strongest first).
    match_threshold: |u.u'| |w.w'| above which an extraction continues a tracked circuit.
    follow_rate: how fast a tracked circuit's direction follows its matches (EMA rate).
    spawn_threshold: an unmatched extraction starts a new circuit only if its similarity to
        every tracked circuit is below this (mixtures of tracked ones do not spawn).
    traces: K, the number of exponential traces per circuit.
    tau0: timescale of the fastest trace, in updates.
    spacing: ``geometric`` (tau_k = tau0 r^k) or ``linear`` (tau_k = tau0 (1 + k r)).
    ratio: r (golden ratio by default).
    score_threshold: stability score a candidate needs.
    min_age: updates a circuit must have been tracked.
    max_missing: updates a tracked circuit may go unseen before it is dropped.
    tokens_per_window, window: the token bucket of each level boundary.
    bypass_threshold: a score that passes even with an empty bucket (emergency bypass).
    consensus_min_agents: k, the members (agents of a team, teams of a domain) that must carry a
        circuit for a shared level to take it.
    alpha: false-acceptance rate of the shared levels' joint test, per module and round.
    null_draws: rotations drawn for the joint test's null; alpha (null_draws + 1) must be >= 1.
    context_track_every: steps between the agent's tracker updates of the context level (1: every
        step). The tracker counts steps, not updates (``CircuitTracker.update(steps=N)``), and the
        agent updates it once more before a boundary's promotion, so this trades tracking cost for
        a coarser sample of each circuit's strength (bench/results/tracker_cadence.md).
    promote: False switches promotion off everywhere (context -> agent inside an agent, and
        every proposal upward); circuits are still tracked. The experiments' ablation.
    """

    min_energy: float = 0.01
    noise_floor: float = 1e-6
    max_per_module: int = 8
    match_threshold: float = 0.8
    follow_rate: float = 0.1
    spawn_threshold: float = 0.5
    traces: int = 8
    tau0: float = 1.0
    spacing: str = "geometric"
    ratio: float = GOLDEN
    score_threshold: float = 0.8
    min_age: int = 10
    max_missing: int = 5
    tokens_per_window: int = 4
    window: int = 50
    bypass_threshold: float = 0.98
    consensus_min_agents: int = 2
    alpha: float = 0.05
    null_draws: int = 99
    promote: bool = True
    context_track_every: int = 1

    def __post_init__(self) -> None:
        check_fields(
            "circuits", self,
            min_energy=0 <= self.min_energy < 1, noise_floor=self.noise_floor >= 0,
            max_per_module=self.max_per_module >= 1, match_threshold=0 < self.match_threshold <= 1,
            follow_rate=0 <= self.follow_rate <= 1,
            spawn_threshold=0 < self.spawn_threshold <= self.match_threshold,
            traces=self.traces >= 2, tau0=self.tau0 >= 1, spacing=self.spacing in ("geometric", "linear"),
            ratio=self.ratio > (1 if self.spacing == "geometric" else 0),
            score_threshold=0 <= self.score_threshold <= 1, min_age=self.min_age >= 0,
            max_missing=self.max_missing >= 0, tokens_per_window=self.tokens_per_window >= 0,
            window=self.window >= 1, bypass_threshold=self.score_threshold <= self.bypass_threshold <= 1,
            consensus_min_agents=self.consensus_min_agents >= 1, alpha=0 < self.alpha < 1,
            null_draws=self.null_draws >= 1 and self.alpha * (self.null_draws + 1) >= 1 - 1e-9,
            context_track_every=self.context_track_every >= 1,
        )

    def timescales(self) -> list[float]:
        """tau_k of the trace bank, fastest first."""
        if self.spacing == "geometric":
            return [self.tau0 * self.ratio**k for k in range(self.traces)]
        return [self.tau0 * (1 + k * self.ratio) for k in range(self.traces)]
