"""Moving a circuit one level up, without changing what the model computes, under a bandwidth limit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from layers.circuits.config import CircuitsConfig
from layers.circuits.tracker import Circuit, CircuitTracker


def promote(stack, circuit: Circuit, from_level: str, to_level: str) -> float:
    """Move the circuit's current component from ``from_level`` to the next slower ``to_level``.

    The component is the circuit's current mass along its direction,
    ``c = u^T B_from w`` (u, w unit): ``B_from -= c u w^T`` and ``B_to += c u w^T``. The sum
    of the levels is unchanged, so the model's output is too (to float rounding).
    Returns c.

    Raises:
        ValueError: unknown levels or module, or ``to_level`` is not the level right after ``from_level``.
    """
    levels = list(stack.levels)
    for level in (from_level, to_level):
        stack.check_level(level)
    if levels.index(to_level) != levels.index(from_level) + 1:
        raise ValueError(f"promote: {to_level!r} is not the level right after {from_level!r} (order {levels})")
    module = stack.modules.get(circuit.module)
    if module is None:
        raise ValueError(f"promote: unknown module {circuit.module!r}")
    with torch.no_grad():
        src, dst = module.B[from_level], module.B[to_level]
        u, w = circuit.u.to(src), circuit.w.to(src)
        c = float(u @ src @ w)
        delta = c * torch.outer(u, w)  # (d_out, R)
        src.sub_(delta)
        dst.add_(delta)
    return c


class TokenBucket:
    """``capacity`` tokens, refilled to full every ``window`` steps."""

    def __init__(self, capacity: int, window: int) -> None:
        self.capacity, self.window = capacity, window
        self.tokens = capacity
        self.last_refill = 0

    def refill(self, step: int) -> None:
        if step - self.last_refill >= self.window:
            self.tokens = self.capacity
            self.last_refill = step - (step - self.last_refill) % self.window

    def take(self) -> bool:
        if self.tokens > 0:
            self.tokens -= 1
            return True
        return False


@dataclass
class PromotionEvent:
    step: int
    circuit_id: int
    module: str
    from_level: str
    to_level: str
    score: float
    strength: float
    moved: float
    bypassed: bool


@dataclass
class Promoter:
    """Promotes a level's candidates to the next level, at most a bucket's worth per window.

    Candidates are ranked by score x |strength|; a candidate whose score reaches
    ``bypass_threshold`` goes through even when the bucket is empty.
    """

    from_level: str
    to_level: str
    config: CircuitsConfig = field(default_factory=CircuitsConfig)
    counters: dict[str, int] = field(default_factory=lambda: {"promoted": 0, "deferred": 0, "bypassed": 0})
    events: list[PromotionEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.config.tokens_per_window, self.config.window)

    def step(self, stack, tracker: CircuitTracker, step: int) -> list[PromotionEvent]:
        """Promote what the bucket (and the bypass) admits among ``tracker.candidates()``."""
        self.bucket.refill(step)
        if not self.config.promote:
            return []
        done = []
        for circuit in tracker.candidates():
            bypass = False
            if not self.bucket.take():
                if circuit.score < self.config.bypass_threshold:
                    self.counters["deferred"] += 1
                    continue
                bypass = True
            moved = promote(stack, circuit, self.from_level, self.to_level)
            event = PromotionEvent(step, circuit.id, circuit.module, self.from_level, self.to_level,
                                   circuit.score, circuit.strength, moved, bypass)
            done.append(event)
            self.counters["bypassed" if bypass else "promoted"] += 1
            tracker.forget(circuit)
        self.events.extend(done)
        return done
