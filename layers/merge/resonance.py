"""The resonance merge: coherence-gated robust merging (DESIGN section 4).

Per coordinate j, for K pushes g_k with weights w_k (W = sum w):

0. bounded influence: centered clipping around the server momentum v with radius
   ``c = rho * median_k ||g_k - v||``:  ``g_hat = v + (1/W) sum_k w_k clip_c(g_k - v)``
1. one agent one vote:  ``V_j = sum_k w_k sign(g_kj)``,  agreement ``m_j = |V_j| / W``
   (elect, on by default: where m_j >= tau, ``g_hat_j = 0`` if ``sign(g_hat_j) != sign(V_j)``)
2. gain ``G(m) = leak`` if ``m < tau``, else ``1 + beta (m - tau) / (1 - tau)``, with
   ``tau = min(max(z / sqrt(K_eff), eps_max + delta), tau_max)``, ``K_eff = W^2 / sum w^2``
3. ``u = g_hat * G(m)``, rescaled to norm ``kappa * ||g_hat||`` (the norm budget).

After the call, ``v <- momentum * v + (1 - momentum) * g_hat`` (momentum 0: the centre
is the previous robust estimate, as in centered clipping).

Two streaming passes over the inputs, segment by segment (``layers.merge.base.segments``):
dot products for the distances, then the clipped sum, the vote, the gain. A segment's
accumulators stay in cache while the K inputs pass through, so each input is read from
memory twice in all. Extra memory: the output, the centre, and three segment-sized
scratch buffers kept between calls; never K x d.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layers.merge.base import Aggregator, segments
from layers.merge.config import ResonanceConfig


def threshold(k_eff: float, cfg: ResonanceConfig) -> float:
    """The agreement threshold tau for K_eff effective voters."""
    return min(max(cfg.z / math.sqrt(k_eff), cfg.eps_max + cfg.delta), cfg.tau_max)


class ResonanceAggregator(Aggregator):
    """Coherence-gated robust merge; stateful (the clipping centre v)."""

    name = "resonance"

    def __init__(self, config: ResonanceConfig | None = None) -> None:
        super().__init__()
        self.config = config or ResonanceConfig()
        self.center: list[Tensor] | None = None  # v, one 1-D float32 tensor per part
        self._scratch: dict[tuple[int, int], Tensor] = {}  # segment-sized buffers reused across calls
        self._centered = False

    def _buffer(self, slot: int, n: int) -> Tensor:
        buf = self._scratch.get((slot, n))
        if buf is None:
            buf = self._scratch[(slot, n)] = torch.empty(n)
        return buf

    def _aggregate(self, parts: list[list[Tensor]], weights: Tensor) -> list[Tensor]:
        cfg = self.config
        k = len(parts)
        sizes = [t.numel() for t in parts[0]]
        if self.center is None or [c.numel() for c in self.center] != sizes:
            self.center = [torch.zeros(n, dtype=torch.float32) for n in sizes]
            self._centered = False
        centered = self._centered  # False until the first merge: v = 0, skip its terms
        w = weights.tolist()
        total = float(weights.sum())
        k_eff = total**2 / float((weights**2).sum())
        tau = threshold(k_eff, cfg)
        segs = segments(parts)

        # pass 1: ||g_k - v||^2 = g.g - 2 g.v + v.v, segment by segment (v's segment stays in cache)
        sq = [0.0] * k
        for i, lo, hi in segs:
            v = self.center[i][lo:hi]
            vv = float(torch.dot(v, v)) if centered else 0.0
            for j in range(k):
                g = parts[j][i][lo:hi].float()
                sq[j] += float(torch.dot(g, g)) + (vv - 2 * float(torch.dot(g, v)) if centered else 0.0)
        dist = torch.tensor(sq, dtype=torch.float64).clamp_min(0).sqrt()
        radius = cfg.rho * float(torch.quantile(dist, 0.5))
        scale = [1.0 if d <= radius or d == 0 else radius / d for d in dist.tolist()]
        coef = [w[j] * scale[j] / total for j in range(k)]

        # pass 2, per segment: clipped mean, vote, elect, gain (u is written into the output)
        outs = [torch.empty(n) for n in sizes]
        norm_hat_sq = norm_u_sq = kept = gated = agreement = 0.0
        lift = 1 - cfg.beta * tau / (1 - tau)  # gain = 1 + beta (m - tau)/(1 - tau) = lift + slope |V|
        slope = cfg.beta / ((1 - tau) * total)
        for i, lo, hi in segs:
            n = hi - lo
            u, v = outs[i][lo:hi].zero_(), self.center[i][lo:hi]
            vote, tmp = self._buffer(0, n).zero_(), self._buffer(1, n)
            for j in range(k):
                g = parts[j][i][lo:hi].float()
                u.add_(g, alpha=coef[j])  # sum_k w_k s_k g_k / W
                vote.add_(torch.sign(g, out=tmp), alpha=w[j])
            if centered:
                u.add_(v, alpha=1 - sum(coef))  # g_hat = v + sum_k w_k s_k (g_k - v) / W
            gain = torch.abs(vote, out=tmp)
            agreement += float(gain.sum()) / total
            gain.mul_(slope).add_(lift)
            # the gate, as a float mask: m >= tau <=> gain >= 1 (bool masks are ~40x slower here)
            passed = torch.ge(gain, 1, out=self._buffer(2, n))
            gated += n - float(passed.sum())
            if cfg.elect:  # where the gate passes (the vote's sign is certified), keep g_hat only with that sign
                keep = torch.mul(u, vote, out=vote).gt_(0).sub_(1).mul_(passed).add_(1)  # 1 - passed (1 - agree)
                kept += float(keep.sum())
                u.mul_(keep)
            norm_hat_sq += float(torch.dot(u, u))
            v.mul_(cfg.momentum).add_(u, alpha=1 - cfg.momentum)  # next centre, from g_hat
            gain.sub_(cfg.leak).mul_(passed).add_(cfg.leak)  # G = leak below the gate
            u.mul_(gain)  # u = g_hat * G(m)
            norm_u_sq += float(torch.dot(u, u))

        # norm budget: ||u|| = kappa * ||g_hat||
        budget = cfg.kappa * math.sqrt(norm_hat_sq / norm_u_sq) if norm_u_sq > 0 else 0.0
        for t in outs:
            t.mul_(budget)
        self._centered = True
        d = float(sum(sizes))
        self.stats.update(tau=tau, radius=radius, clipped=sum(s < 1 for s in scale) / k, gated_fraction=gated / d,
                          elected_out_fraction=1 - kept / d if cfg.elect else 0.0, mean_agreement=agreement / d,
                          budget_scale=budget)
        return outs

    def state_dict(self) -> dict[str, Any]:
        return {"center": [c.clone() for c in self.center] if self.center is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        center = state.get("center")
        if center is not None and not all(isinstance(c, Tensor) and c.ndim == 1 for c in center):
            raise ValueError("resonance state: 'center' must be a list of 1-D tensors")
        self.center = [c.clone().float() for c in center] if center is not None else None
        self._scratch.clear()
        self._centered = center is not None
