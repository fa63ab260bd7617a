"""``CircuitTracker``: identity, age and an autocorrelation trace bank per circuit.

Each update extracts the circuits of every block and matches them to the tracked ones
by ``|u.u'| |w.w'|`` (greedy, strongest similarity first); unmatched extractions start
new circuits. Every tracked circuit, matched or not, measures its *signed* strength by
projection, ``u_ref^T B w_ref``: a component that reversed counts as negative, and a
circuit keeps its identity while the SVD briefly mixes it with others. It counts as
missing while that projection is below the extraction's noise floor. Each circuit keeps K exponential traces
``x_k <- x_k + (s - x_k) / tau_k`` of its signed strength (fixed memory, O(K) per
update). Stability score, in [0, 1]: the mean over the slower traces of
``min(|x_k|, |x_0|) / max(|x_k|, |x_0|)`` when x_k has x_0's sign, else 0. A new
pattern lights only the fast trace (score near 0), a sign-flipping one leaves the slow
traces near 0, a persistent one fills them all (score near 1).

An update may stand for several steps (``update(blocks, steps=N)``, the agent's
``circuits.context_track_every``): the sampled strength is held over the N steps, so each
trace moves by ``1 - (1 - 1/tau_k)^N``, and age and misses count N. Timescales, ``min_age``
and ``max_missing`` then keep their meaning in steps at any cadence.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from layers.circuits.config import CircuitsConfig
from layers.circuits.extract import extract


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

    @property
    def score(self) -> float:
        return stability_score(self.traces)


def _similarity(a, b) -> float:
    """|u.u'| |w.w'| of two rank-1 directions (sign-free)."""
    return abs(float(a.u @ b.u)) * abs(float(a.w @ b.w))


def _similarities(a: list, b: list) -> Tensor:
    """(len(a), len(b)) matrix of ``|u.u'| |w.w'|`` (one matmul per side instead of a Python loop)."""
    if not a or not b:
        return torch.zeros(len(a), len(b))
    ua, wa = torch.stack([x.u for x in a]).float(), torch.stack([x.w for x in a]).float()  # (n, d_out), (n, R)
    ub, wb = torch.stack([x.u for x in b]).float(), torch.stack([x.w for x in b]).float()
    return (ua @ ub.T).abs() * (wa @ wb.T).abs()


def _strengths(b: Tensor, tracked: list) -> list[float]:
    """``u_i^T b w_i`` for every tracked circuit i (:func:`strength_along` for all, in one matmul)."""
    if not tracked:
        return []
    u = torch.stack([t.u for t in tracked]).to(b.dtype)  # (n, d_out)
    w = torch.stack([t.w for t in tracked]).to(b.dtype)  # (n, R)
    return ((u @ b.detach()) * w).sum(1).tolist()


def _without_duplicates(tracked: list[Circuit], threshold: float) -> list[Circuit]:
    """Keep the oldest of tracked circuits that converged to the same direction."""
    order = sorted(tracked, key=lambda t: -t.age)
    sims = _similarities(order, order).tolist()
    kept: list[int] = []
    for i in range(len(order)):
        if all(sims[i][k] < threshold for k in kept):
            kept.append(i)
    return sorted((order[i] for i in kept), key=lambda t: t.id)


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

    def __init__(self, config: CircuitsConfig | None = None) -> None:
        self.config = config or CircuitsConfig()
        self.rates = torch.tensor([1.0 / t for t in self.config.timescales()], dtype=torch.float64)  # (K,)
        self.circuits: dict[str, list[Circuit]] = {}
        self.blocks: dict[str, Tensor] = {}  # module -> the matrix last seen (not a copy): what a proposal sends
        self._ids = itertools.count()
        self.updates = 0

    def update(self, blocks: Mapping[str, Tensor], steps: int = 1) -> None:
        """Extract, match, and advance every trace bank by ``steps`` steps (>= 1) of the sampled strengths."""
        if steps < 1:
            raise ValueError(f"CircuitTracker.update: steps must be >= 1, got {steps}")
        c = self.config
        follow = 1 - (1 - c.follow_rate) ** steps  # the direction EMA, compounded over the steps
        for module, b in blocks.items():
            self.blocks[module] = b
            found = extract(b, min_energy=c.min_energy, noise_floor=c.noise_floor, max_components=c.max_per_module)
            tracked = self.circuits.setdefault(module, [])
            sims = _similarities(tracked, found).tolist()  # (tracked, found)
            pairs = sorted(((sims[ti][fi], ti, fi) for ti in range(len(tracked)) for fi in range(len(found))),
                           reverse=True)
            match: dict[int, int] = {}  # tracked index -> found index, greedy by similarity
            for sim, ti, fi in pairs:
                if sim < c.match_threshold:
                    break
                if ti not in match and fi not in match.values():
                    match[ti] = fi
            energy = float(b.detach().double().pow(2).sum())
            floor = max(c.noise_floor, (c.min_energy * energy) ** 0.5)  # the extraction's noise floor
            n_before = len(tracked)
            # signed strength by direct projection along the tracked orientation, matched or not:
            # identity survives the SVD mixing components while the set of active circuits changes
            strengths = _strengths(b, tracked)
            for ti, (t, s) in enumerate(zip(tracked, strengths, strict=True)):
                t.missing = 0 if abs(s) > floor else t.missing + steps
                if ti in match and s > 0:  # follow slow drift (an EMA, so a passing SVD mix barely moves it)
                    f, r = found[match[ti]], follow
                    sign = 1.0 if float(f.u @ t.u) >= 0 else -1.0
                    u, w = (1 - r) * t.u + r * sign * f.u, (1 - r) * t.w + r * sign * f.w
                    t.u, t.w = u / u.norm(), w / w.norm()
            self._advance(tracked, strengths, steps)
            for fi, f in enumerate(found):
                # new only if no tracked circuit already follows this direction (else the SVD's
                # mixing while strengths cross would spawn duplicates)
                if fi not in match.values() and all(row[fi] < c.spawn_threshold for row in sims[:n_before]):
                    t = Circuit(next(self._ids), module, f.u.clone(), f.w.clone(),
                                torch.zeros(len(self.rates), dtype=torch.float64))
                    self._advance([t], [f.sigma], steps)
                    tracked.append(t)
            self.circuits[module] = _without_duplicates([t for t in tracked if t.missing <= c.max_missing],
                                                        c.match_threshold)
        self.updates += 1

    def _advance(self, circuits: list[Circuit], strengths: list[float], steps: int) -> None:
        """Every circuit's traces, at once: x_k <- x_k + (s - x_k) / tau_k, ``steps`` times with s held,
        i.e. x_k <- x_k + (s - x_k)(1 - (1 - 1/tau_k)^steps)."""
        if not circuits:
            return
        rates = self.rates if steps == 1 else 1 - (1 - self.rates) ** steps  # (K,)
        x = torch.stack([t.traces for t in circuits])  # (n, K)
        s = torch.tensor(strengths, dtype=x.dtype)[:, None]  # (n, 1)
        x += (s - x) * rates
        for t, row, strength in zip(circuits, x, strengths, strict=True):
            t.traces, t.strength = row, strength
            t.age += steps

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

    def forget_near(self, module: str, u: Tensor, w: Tensor) -> int:
        """Stop tracking circuits of ``module`` aligned with ``u w^T`` (match threshold); returns how many."""
        before = self.circuits.get(module, [])
        kept = [t for t in before if _similarity(t, Circuit(-1, module, u.to(t.u), w.to(t.w), t.traces))
                < self.config.match_threshold]
        self.circuits[module] = kept
        return len(before) - len(kept)
