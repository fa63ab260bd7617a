"""How a shared level turns one merged gradient into its drive (``server.step``).

- ``rms`` (the default, as before): ``drive = -lr * g / rms(g)``. One number per merge sets the
  step, so the coordinates with the largest gradients move most; every merge moves ``B`` by
  exactly ``lr`` in RMS, whatever the gradients' scale.
- ``adam``: the server keeps Adam moments of the merged gradients (FedAdam: Reddi et al. 2021,
  "Adaptive Federated Optimization") and drives ``-lr * m_hat / (sqrt(v_hat) + eps)``, so each
  coordinate moves by about ``lr`` when its merged gradient keeps its sign, and less when it
  does not. That is the agents' own step rule, so a shared level can move at the pace of the
  agent levels it summarises (``lr`` about the agents' rate times the agent steps one merge
  stands for) without the few large-gradient coordinates running away, which is what made
  ``rms`` diverge at ``lr`` 1e-2 on experiment/code (docs/experiments.md).

The moments are part of the level's checkpoint (:meth:`ServerStep.state_dict`); a replay of the
journal from that checkpoint recomputes the same drives.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

STEPS = ("rms", "adam")


class Drive(NamedTuple):
    """What one merged gradient does to a level (module -> (d_out, R) each): ``update``, added to the
    level's B through its optimizer, and ``gradient``, the merged gradient at unit RMS times ``-lr``
    (what heats the level's temperature under ``dynamics.temperature.measure: gradient``)."""

    update: dict[str, torch.Tensor]
    gradient: dict[str, torch.Tensor]


class ServerStep:
    """The drive rule of one level (see the module doc).

    ``kind``: one of :data:`STEPS`; ``lr``: step size (RMS of the drive for ``rms``, per-coordinate
    size for ``adam``); ``betas``, ``eps``: Adam's. Raises ``ValueError`` for an unknown kind.
    """

    def __init__(self, kind: str = "rms", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        if kind not in STEPS:
            raise ValueError(f"server.step: {kind!r} is not one of {', '.join(STEPS)}")
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        self.t = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def drive(self, merged: dict[str, torch.Tensor]) -> Drive | None:
        """The :class:`Drive` of one merged gradient (module -> (d_out, R)), or None when it is zero
        everywhere (nothing to apply, no moment update). For ``rms`` its ``gradient`` is the update
        itself; for ``adam`` the update is normalised per coordinate and would show every steady
        coordinate equally busy."""
        rms = math.sqrt(sum(float(g.double().pow(2).sum()) for g in merged.values())
                        / max(1, sum(g.numel() for g in merged.values())))
        if rms == 0:
            return None
        unit = {name: -self.lr * g / rms for name, g in merged.items()}  # the rms step; the gradient at unit RMS
        if self.kind == "rms":
            return Drive(unit, unit)
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t  # bias corrections
        out = {}
        for name, g in merged.items():
            m = self.m.setdefault(name, torch.zeros_like(g))
            v = self.v.setdefault(name, torch.zeros_like(g))
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            out[name] = -self.lr * (m / c1) / ((v / c2).sqrt_() + self.eps)
        return Drive(out, unit)

    def state_dict(self) -> dict:
        """The moments and step count (empty tensors dicts for ``rms``)."""
        return {"t": self.t, "m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (copies the tensors)."""
        self.t = int(state["t"])
        self.m = {k: t.clone() for k, t in state["m"].items()}
        self.v = {k: t.clone() for k, t in state["v"].items()}
