"""Per-parameter modulators of a level's update (DESIGN section 6), one small class each.

Each works on one block (one module's B_l, d_out x R) and keeps its state in tensors
of the block's shape. ``drive`` is the raw proposed update; ``u`` the update as
modulated so far; ``heat`` what heats the temperature (the drive, or the gradient it came from:
``TemperatureConfig.measure``). All methods are pure functions of (state, inputs) -> new state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from layers.dynamics.config import ConsolidationConfig, MassConfig, PhaseConfig, TemperatureConfig, ViscosityConfig

EPS = 1e-12


class Viscosity:
    """Resistance builds in the direction of repeated moves; a reversal is divided by 1 + it."""

    def __init__(self, cfg: ViscosityConfig) -> None:
        self.cfg = cfg

    def init(self, like: Tensor) -> dict[str, Tensor]:
        return {"r_pos": torch.zeros_like(like), "r_neg": torch.zeros_like(like)}

    def apply(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        c = self.cfg
        pos, neg = u > 0, u < 0
        out = torch.where(pos, u / (1 + state["r_neg"]), torch.where(neg, u / (1 + state["r_pos"]), u))
        for bucket, along, against in (("r_pos", pos, neg), ("r_neg", neg, pos)):
            r = state[bucket]
            r = torch.where(along, (r + c.build).clamp_max(c.max_resistance), r)
            state[bucket] = torch.where(against, r * (1 - c.deplete), r)
        return out


class Temperature:
    """Hot parameters move freely, cold ones move ``floor`` as much; blocks crystallise when mostly frozen."""

    def __init__(self, cfg: TemperatureConfig) -> None:
        self.cfg = cfg

    def init(self, like: Tensor) -> dict[str, Tensor]:
        return {"temperature": torch.ones_like(like)}

    def apply(self, u: Tensor, heat: Tensor, state: dict[str, Tensor], ref: float) -> Tensor:
        """``ref``: the level's typical |heat| (EMA of its RMS), so a quiet block cools."""
        c = self.cfg
        # mobility from the temperature the parameter had before this push: a cold one resists it
        out = u * (c.floor + (1 - c.floor) * state["temperature"])
        if self.crystallised(state):
            out = out / c.crystal_divisor
        warmth = (heat.abs() / (ref + EPS)).clamp_max(1.0)
        state["temperature"] = state["temperature"] * (1 - c.heat) + warmth * c.heat
        return out

    def frozen_fraction(self, state: dict[str, Tensor]) -> float:
        return float((state["temperature"] < self.cfg.freeze).float().mean())

    def crystallised(self, state: dict[str, Tensor]) -> bool:
        return self.frozen_fraction(state) > self.cfg.crystal_fraction


class Phase:
    """SCREENED / FREE with hysteresis on activity; the decaying part of a FREE parameter shrinks."""

    def __init__(self, cfg: PhaseConfig) -> None:
        self.cfg = cfg

    def init(self, like: Tensor) -> dict[str, Tensor]:
        return {"activity": torch.zeros_like(like), "screened": torch.zeros_like(like, dtype=torch.bool)}

    def update(self, drive: Tensor, state: dict[str, Tensor], ref: float, theta_on: float, theta_off: float) -> None:
        """``ref``: the level's drive RMS (EMA); the noise floor is ``noise_factor * ref``."""
        c = self.cfg
        active = (drive.abs() > ref * c.noise_factor).to(drive.dtype)
        state["activity"] = state["activity"] * (1 - c.rate) + active * c.rate
        a = state["activity"]
        state["screened"] = torch.where(state["screened"], a >= theta_off, a > theta_on)

    def decay(self, param: Tensor, state: dict[str, Tensor], free_decay: float) -> None:
        """Shrink the unconsolidated part ``state["free"]`` of ``param`` (with consolidation), else all of it."""
        rate = torch.where(state["screened"], self.cfg.screened_decay, free_decay).to(param.dtype)
        if "free" not in state:  # no consolidation: everything decays toward zero
            param.mul_(1 - rate)
            return
        shrink = state["free"] * rate  # (d_out, R): toward the anchor param - free
        param.sub_(shrink)
        state["free"].sub_(shrink)


class Consolidation:
    """Anchor + unconsolidated part per parameter; SCREENED steps move the latter into the former.

    State ``free`` (the block's shape) is the unconsolidated part; the anchor is ``B - free`` and
    is never stored, so anything written to B from outside the optimizer is anchored as it is.
    """

    def __init__(self, cfg: ConsolidationConfig) -> None:
        self.cfg = cfg

    def init(self, like: Tensor) -> dict[str, Tensor]:
        return {"free": torch.zeros_like(like)}

    def track(self, u: Tensor, state: dict[str, Tensor]) -> None:
        """The optimizer's own move ``u`` is not consolidated yet."""
        state["free"].add_(u)

    def consolidate(self, state: dict[str, Tensor]) -> None:
        """A SCREENED parameter hands ``rate`` of its unconsolidated part to its anchor (B unchanged)."""
        keep = torch.where(state["screened"], 1 - self.cfg.rate, 1.0).to(state["free"].dtype)
        state["free"].mul_(keep)


class Mass:
    """Inertia from interaction density: m <- (1 - leak) m + contributions; moves divided by 1 + m / half."""

    def __init__(self, cfg: MassConfig) -> None:
        self.cfg = cfg

    def init(self, like: Tensor) -> dict[str, Tensor]:
        return {"mass": torch.zeros_like(like)}

    def apply(self, u: Tensor, state: dict[str, Tensor], contributions: Tensor | float) -> Tensor:
        out = u / (1 + state["mass"] / self.cfg.half)
        state["mass"] = state["mass"] * (1 - self.cfg.leak) + contributions
        return out
