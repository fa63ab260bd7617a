"""``CircuitTracker``: identity, age and an autocorrelation trace bank per circuit.

Each update extracts the circuits of every block and matches them to the tracked ones
by ``|u.u'| |w.w'|`` (greedy, strongest similarity first). The tracked circuit keeps
its orientation; its *signed* strength this update is ``u_ref^T B w_ref``, so a
component that reversed counts as negative. Each circuit keeps K exponential traces
``x_k <- x_k + (s - x_k) / tau_k`` of its signed strength (fixed memory, O(K) per
update). Stability score, in [0, 1]: the mean over the slower traces of
``min(|x_k|, |x_0|) / max(|x_k|, |x_0|)`` when x_k has x_0's sign, else 0. A new
pattern lights only the fast trace (score near 0), a sign-flipping one leaves the slow
traces near 0, a persistent one fills them all (score near 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from layers.circuits.config import CircuitsConfig
from layers.circuits.extract import extract, strength_along


@dataclass
class Circuit:
    """A tracked circuit of one block. ``traces`` holds the K traces, fastest first."""

    id: int
    module: str
    u: Tensor
    w: Tensor
    traces: Tensor
    strength: float = 0.0
    age: int = 0
    missing: int = 0
    history: list[float] = field(default_factory=list, repr=False)

    @property
    def score(self) -> float:
        return stability_score(self.traces)


def stability_score(traces: Tensor) -> float:
    """Mean over k >= 1 of the same-sign magnitude ratio of trace k to trace 0, in [0, 1]."""
    fast = float(traces[0])
    if fast == 0:
        return 0.0
    ratios = []
    for x in traces[1:].tolist():
        if x * fast <= 0:
            ratios.append(0.0)
        else:
            ratios.append(min(abs(x), abs(fast)) / max(abs(x), abs(fast)))
    return sum(ratios) / len(ratios)


class CircuitTracker:
    """Tracks the circuits of one level across updates (block name -> B_l)."""

    def __init__(self, config: CircuitsConfig | None = None, *, keep_history: bool = False) -> None:
        self.config = config or CircuitsConfig()
        self.rates = torch.tensor([1.0 / t for t in self.config.timescales()], dtype=torch.float64)  # (K,)
        self.circuits: dict[str, list[Circuit]] = {}
        self.keep_history = keep_history
        self._ids = itertools.count()
        self.updates = 0

    def update(self, blocks: Mapping[str, Tensor]) -> None:
        """Extract, match, and advance every trace bank by one update."""
        c = self.config
        for module, b in blocks.items():
            found = extract(b, min_energy=c.min_energy, noise_floor=c.noise_floor, max_components=c.max_per_module)
            tracked = self.circuits.setdefault(module, [])
            pairs = sorted(((abs(float(t.u @ f.u)) * abs(float(t.w @ f.w)), ti, fi)
                            for ti, t in enumerate(tracked) for fi, f in enumerate(found)), reverse=True)
            match: dict[int, int] = {}  # tracked index -> found index, greedy by similarity
            for sim, ti, fi in pairs:
                if sim < c.match_threshold:
                    break
                if ti not in match and fi not in match.values():
                    match[ti] = fi
            for ti, t in enumerate(tracked):
                # signed strength along the tracked orientation (0 once it faded below the floor)
                s = strength_along(b, t.u, t.w) if ti in match else 0.0
                t.missing = 0 if ti in match else t.missing + 1
                if s > 0:  # follow slow drift, keeping the orientation (a reversal keeps the old one)
                    f = found[match[ti]]
                    sign = 1.0 if float(f.u @ t.u) >= 0 else -1.0
                    t.u, t.w = sign * f.u, sign * f.w
                self._advance(t, s)
            for fi, f in enumerate(found):
                if fi not in match.values():
                    t = Circuit(next(self._ids), module, f.u.clone(), f.w.clone(),
                                torch.zeros(len(self.rates), dtype=torch.float64))
                    self._advance(t, f.sigma)
                    tracked.append(t)
            self.circuits[module] = [t for t in tracked if t.missing <= c.max_missing]
        self.updates += 1

    def _advance(self, t: Circuit, s: float) -> None:
        t.traces += (s - t.traces) * self.rates  # x_k <- x_k + (s - x_k) / tau_k
        t.strength = s
        t.age += 1
        if self.keep_history:
            t.history.append(s)

    def all(self) -> list[Circuit]:
        return [t for ts in self.circuits.values() for t in ts]

    def candidates(self) -> list[Circuit]:
        """Promotion candidates: score, current strength and age above their thresholds, best first."""
        c = self.config
        out = [t for t in self.all() if t.score >= c.score_threshold and abs(t.strength) > c.noise_floor
               and t.strength != 0 and t.missing == 0 and t.age >= c.min_age]
        return sorted(out, key=lambda t: t.score * abs(t.strength), reverse=True)

    def forget(self, circuit: Circuit) -> None:
        """Stop tracking ``circuit`` (after it was promoted away)."""
        self.circuits[circuit.module] = [t for t in self.circuits.get(circuit.module, []) if t.id != circuit.id]
