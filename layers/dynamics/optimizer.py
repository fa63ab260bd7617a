"""``LevelOptimizer``: the update rule of one level, through its switchable modulators.

    u = lr * drive
    u = u / (1 + m / half)                                    mass (inertia from interaction density)
    u = u / (1 + r_opposite)                                  viscosity (two sign buckets)
    u = u * (floor + (1 - floor) T)  [/ crystal_divisor]      temperature (and crystallisation)
        T <- (1 - heat) T + heat * min(1, |x| / level RMS of x)   x: drive, or gradient (measure)
    B += u;  F += u                                           F: unconsolidated part, B - F the anchor
    d = screened_decay if SCREENED else free_decay            phase (hysteresis on activity)
    B -= d F;  F *= 1 - d                                     decay toward the anchor, not toward zero
    F *= 1 - rate  if SCREENED                                consolidation (F = B, anchor 0, when off)

``drive`` is the proposed change of B (a negative gradient step, or a merged update).
The temperature is heated by the drive, or with ``temperature.measure: gradient`` by the
``gradient`` the drive came from (a server's merged gradient, when the caller gives it). An
optimizer that normalises each coordinate (Adam, at ``server.step: adam``) moves every steady
coordinate by about ``lr`` whatever its gradient, so measured on the drive no block ever
crystallises and growth never fires. The phase always measures the drive.
What is written to B outside :meth:`LevelOptimizer.step` (promotions, absorbs, removals)
moves the anchor B - F: it is consolidated as it is.
All state is in tensors: ``state_dict`` / ``load_state_dict`` restore it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layers.dynamics.config import DynamicsConfig
from layers.dynamics.modulators import Consolidation, Mass, Phase, Temperature, Viscosity


class LevelOptimizer:
    """Applies updates to one level's blocks (module name -> B_l, modified in place)."""

    def __init__(self, params: Mapping[str, Tensor], config: DynamicsConfig | None = None) -> None:
        if not params:
            raise ValueError("LevelOptimizer: no blocks")
        self.config = config or DynamicsConfig()
        c = self.config
        self.params = dict(params)
        self.mass = Mass(c.mass) if c.mass.enabled else None
        self.viscosity = Viscosity(c.viscosity) if c.viscosity.enabled else None
        self.temperature = Temperature(c.temperature) if c.temperature.enabled else None
        self.phase = Phase(c.phase) if c.phase.enabled else None
        # without phase nothing decays, so there is nothing to consolidate against
        self.consolidation = Consolidation(c.consolidation) if c.phase.enabled and c.consolidation.enabled else None
        self.modulators = [m for m in (self.mass, self.viscosity, self.temperature, self.phase, self.consolidation)
                           if m is not None]
        self.state = {name: self._init_block(p) for name, p in self.params.items()}
        # adjustable by homeostasis, hence state rather than config
        self.thresholds = {"theta_on": c.phase.theta_on, "theta_off": c.phase.theta_off,
                           "free_decay": c.phase.free_decay}
        # level-wide references: EMAs of the RMS of the level's drive (temperature, noise floor)
        self.references = {"temperature": 0.0, "noise": 0.0}
        self.steps = 0

    @classmethod
    def for_level(cls, stack, level: str, config: DynamicsConfig | None = None) -> LevelOptimizer:
        """The optimizer of ``level`` of a ``LevelStack``."""
        stack.check_level(level)
        return cls({name: m.B[level] for name, m in stack.modules.items()}, config)

    def _init_block(self, p: Tensor) -> dict[str, Tensor]:
        state: dict[str, Tensor] = {}
        like = p.detach()
        for m in self.modulators:
            state.update(m.init(like))
        return state

    # ------------------------------------------------------------------ the rule
    def step(self, updates: Mapping[str, Tensor], contributions: float | Mapping[str, Any] = 1.0,
             gradient: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """Apply ``updates`` (block name -> proposed delta); returns :meth:`report`.

        ``contributions``: coherent contributions carried by this update (1 for a local
        step; e.g. K x agreement for a merge), a number or per block. ``gradient``: the
        gradient the updates came from, the same blocks, any scale and sign (only its size
        relative to the level's RMS counts); it heats the temperature when
        ``temperature.measure`` is ``gradient`` (else, and when None, the updates do).
        Everything is validated before any block changes.
        """
        self._check("update", updates)
        heat = updates
        if gradient is not None:
            self._check("gradient", gradient)
            if set(gradient) != set(updates):
                raise ValueError(f"LevelOptimizer.step: gradient blocks {sorted(gradient)} differ from the "
                                 f"update's {sorted(updates)}")
            if self.config.temperature.measure == "gradient":
                heat = gradient
        lr = self.config.lr
        refs = self._update_references(updates, heat)
        with torch.no_grad():
            for name, drive in updates.items():
                p, st = self.params[name], self.state[name]
                drive = drive.detach().to(p.dtype)
                heated = drive if heat is updates else heat[name].detach().to(p.dtype)
                u = drive * lr
                if self.mass:
                    c = contributions[name] if isinstance(contributions, Mapping) else contributions
                    u = self.mass.apply(u, st, c)
                if self.viscosity:
                    u = self.viscosity.apply(u, st)
                if self.temperature:
                    u = self.temperature.apply(u, heated, st, refs["temperature"])
                p.add_(u)
                if self.consolidation:
                    self.consolidation.track(u, st)
                if self.phase:
                    self.phase.update(drive, st, refs["noise"], self.thresholds["theta_on"],
                                      self.thresholds["theta_off"])
                    self.phase.decay(p, st, self.thresholds["free_decay"])
                if self.consolidation:
                    self.consolidation.consolidate(st)
        self.steps += 1
        h = self.config.homeostasis
        if h.enabled and self.steps % h.window == 0:
            from layers.dynamics.homeostasis import Homeostasis  # it reads this optimizer: imported here, no cycle

            Homeostasis(self, h).update()
        return self.report()

    def _check(self, what: str, blocks: Mapping[str, Tensor]) -> None:
        """``ValueError`` naming the block when ``blocks`` has an unknown name, a wrong shape, NaN or Inf."""
        for name, u in blocks.items():
            if name not in self.params:
                raise ValueError(f"LevelOptimizer.step: unknown block {name!r}")
            if not isinstance(u, Tensor) or u.shape != self.params[name].shape:
                shape = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
                raise ValueError(f"LevelOptimizer.step: block {name!r} {what} has shape {shape}, "
                                 f"expected {tuple(self.params[name].shape)}")
            if not bool(torch.isfinite(u).all()):
                raise ValueError(f"LevelOptimizer.step: block {name!r} {what} contains NaN or Inf")

    def _update_references(self, updates: Mapping[str, Tensor], heat: Mapping[str, Tensor]) -> dict[str, float]:
        """EMAs of the level's RMS: of what heats the temperature, and of the drive (the phase's noise floor)."""
        for key, rate, blocks in (("temperature", self.config.temperature.heat, heat),
                                  ("noise", self.config.phase.rate, updates)):
            n = sum(u.numel() for u in blocks.values())
            level_rms = (sum(float(u.detach().double().pow(2).sum()) for u in blocks.values()) / max(n, 1)) ** 0.5
            old = self.references[key]
            self.references[key] = level_rms if self.steps == 0 else (1 - rate) * old + rate * level_rms
        return self.references

    # ------------------------------------------------------------------ measurements
    def screened_fraction(self) -> float:
        if not self.phase:
            return 0.0
        total = sum(st["screened"].numel() for st in self.state.values())
        return sum(float(st["screened"].sum()) for st in self.state.values()) / total

    def crystallised_fraction(self) -> float:
        if not self.temperature:
            return 0.0
        return sum(self.temperature.crystallised(st) for st in self.state.values()) / len(self.state)

    def consolidated_norms(self) -> tuple[float, float]:
        """Level-wide Frobenius norms (consolidated anchor B - F, unconsolidated part F); (0, |B|) when off."""
        anchor = free = 0.0
        for name, p in self.params.items():
            f = self.state[name]["free"] if self.consolidation else p.detach()
            anchor += float((p.detach() - f).double().pow(2).sum())
            free += float(f.double().pow(2).sum())
        return anchor**0.5, free**0.5

    def report(self) -> dict[str, float]:
        """Level-wide numbers: screened and crystallised fractions, the growth trigger, means, and
        (with consolidation) the norms of the consolidated and unconsolidated parts."""
        out = {"steps": float(self.steps), "screened_fraction": self.screened_fraction(),
               "crystallised_fraction": self.crystallised_fraction(), **self.thresholds}
        out["growth_needed"] = float(bool(self.temperature) and
                                     out["crystallised_fraction"] > self.config.temperature.growth_fraction)
        if self.consolidation:
            out["consolidated_norm"], out["unconsolidated_norm"] = self.consolidated_norms()
        for key in ("temperature", "mass", "activity"):
            values = [st[key] for st in self.state.values() if key in st]
            if values:
                out[f"mean_{key}"] = sum(float(v.sum()) for v in values) / sum(v.numel() for v in values)
        return out

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "thresholds": dict(self.thresholds), "references": dict(self.references),
                "blocks": {n: {k: v.clone() for k, v in st.items()} for n, st in self.state.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore exactly; a state for other blocks, modulators or shapes is refused (ValueError).

        A checkpoint from before consolidation (no ``free`` entry, all else matching) is upgraded:
        nothing in it counts as consolidated (F = B, the former rule), so load B first.
        """
        blocks = dict(state.get("blocks", {}))
        if self.consolidation:
            blocks = {n: {**st, "free": self.params[n].detach().clone()}
                      if "free" not in st and n in self.params and set(st) | {"free"} == set(self.state[n]) else st
                      for n, st in blocks.items()}
        if set(blocks) != set(self.state):
            raise ValueError(f"LevelOptimizer state: blocks differ (extra {sorted(set(blocks) - set(self.state))}, "
                             f"missing {sorted(set(self.state) - set(blocks))})")
        for name, st in blocks.items():
            mine = self.state[name]
            if set(st) != set(mine):
                raise ValueError(f"LevelOptimizer state: block {name!r} has entries {sorted(st)}, "
                                 f"expected {sorted(mine)} (other modulators switched on?)")
            for key, value in st.items():
                if value.shape != mine[key].shape or value.dtype != mine[key].dtype:
                    raise ValueError(f"LevelOptimizer state: block {name!r} {key!r} has shape "
                                     f"{tuple(value.shape)} {value.dtype}, expected {tuple(mine[key].shape)}")
        self.state = {n: {k: v.clone() for k, v in st.items()} for n, st in blocks.items()}
        self.thresholds = {k: float(v) for k, v in state["thresholds"].items()}
        self.references = {k: float(v) for k, v in state["references"].items()}
        self.steps = int(state["steps"])

    def resize(self) -> None:
        """Follow a ``LevelStack.grow``: new columns of every block get fresh state."""
        for name, p in self.params.items():
            old = self.state[name]
            fresh = self._init_block(p)
            for key, value in fresh.items():
                if value.ndim == 2 and old[key].shape != value.shape:
                    value[:, : old[key].shape[1]] = old[key]
                    old[key] = value
