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

Two streaming passes over the inputs: the distances (``g.g`` and ``g.v``, which also find
NaN/Inf, so ``aggregate`` skips its own validation read), then the clipped sum, the vote, the
gain. Where the inputs are float32 on CPU and a C compiler is at hand, each pass is one fused
loop that reads every input once (``layers.merge.native``); elsewhere the same formula runs as
torch ops, segment by segment (``layers.merge.base.segments``), so a segment's accumulators stay
in cache while the K inputs pass through. Extra memory: the output, the centre, and (torch)
three segment-sized scratch buffers kept between calls; never K x d.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from layers.merge import native
from layers.merge.base import Aggregator, check_finite, segments
from layers.merge.config import ResonanceConfig


def threshold(k_eff: float, cfg: ResonanceConfig) -> float:
    """The agreement threshold tau for K_eff effective voters."""
    return min(max(cfg.z / math.sqrt(k_eff), cfg.eps_max + cfg.delta), cfg.tau_max)


class ResonanceAggregator(Aggregator):
    """Coherence-gated robust merge; stateful (the clipping centre v)."""

    name = "resonance"
    checks_finite = True  # pass 1's g.g finds NaN/Inf: no separate validation read of the K inputs

    def __init__(self, config: ResonanceConfig | None = None, native: bool | None = None) -> None:
        """``native``: None uses the fused C loops where they apply (float32 CPU inputs, a C compiler);
        False always runs the torch formula (the reference the exactness test compares against)."""
        super().__init__()
        self.config = config or ResonanceConfig()
        self.native = native
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
        fresh = self.center is None or [c.numel() for c in self.center] != sizes
        centered = self._centered and not fresh  # False until the first merge: v = 0, skip its terms
        w = weights.tolist()
        total = float(weights.sum())
        k_eff = total**2 / float((weights**2).sum())
        tau = threshold(k_eff, cfg)
        lib = self._kernels(parts)

        # pass 1: ||g_k - v||^2 = g.g - 2 g.v + v.v; a non-finite g.g flags a NaN/Inf input (nothing changed yet)
        sq = self._sq_native(lib, parts, centered) if lib is not None else self._sq_torch(parts, centered)
        for j, s in enumerate(sq):
            if not math.isfinite(s):
                check_finite(parts, j)  # raises if the input holds NaN/Inf (not for a float32 overflow)
        if fresh:
            self.center = [torch.zeros(n, dtype=torch.float32) for n in sizes]
            self._centered = False
        dist = torch.tensor(sq, dtype=torch.float64).clamp_min(0).sqrt()
        radius = cfg.rho * float(torch.quantile(dist, 0.5))
        scale = [1.0 if d <= radius or d == 0 else radius / d for d in dist.tolist()]
        coef = [w[j] * scale[j] / total for j in range(k)]

        # pass 2: clipped mean, vote, elect, gain (u is written into the output), centre update
        lift = 1 - cfg.beta * tau / (1 - tau)  # gain = 1 + beta (m - tau)/(1 - tau) = lift + slope |V|
        slope = cfg.beta / ((1 - tau) * total)
        combine = self._combine_native if lib is not None else self._combine_torch
        outs, (agreement, gated, kept, norm_hat_sq, norm_u_sq) = combine(lib, parts, coef, w, centered, lift, slope)

        # norm budget: ||u|| = kappa * ||g_hat||
        budget = cfg.kappa * math.sqrt(norm_hat_sq / norm_u_sq) if norm_u_sq > 0 else 0.0
        for t in outs:
            t.mul_(budget)
        self._centered = True
        d = float(sum(sizes))
        self.stats.update(tau=tau, radius=radius, clipped=sum(s < 1 for s in scale) / k, gated_fraction=gated / d,
                          elected_out_fraction=1 - kept / d if cfg.elect else 0.0,
                          mean_agreement=agreement / total / d, budget_scale=budget)
        return outs

    def _kernels(self, parts: list[list[Tensor]]) -> ctypes.CDLL | None:
        """The fused C loops when allowed (``native``) and every input is float32, contiguous, on CPU."""
        if self.native is False or not all(t.dtype == torch.float32 and t.device.type == "cpu"
                                           and t.is_contiguous() for row in parts for t in row):
            return None
        return native.kernels()

    def _sq_native(self, lib: ctypes.CDLL, parts: list[list[Tensor]], centered: bool) -> list[float]:
        k = len(parts)
        gg, gv = (ctypes.c_double * k)(), (ctypes.c_double * k)()
        for i, v in enumerate(self.center if centered else [None] * len(parts[0])):
            ptrs = (ctypes.c_void_p * k)(*[row[i].data_ptr() for row in parts])
            lib.rz_norms(k, ptrs, v.data_ptr() if v is not None else None, parts[0][i].numel(), int(centered),
                         gg, gv)
        vv = sum(float(torch.dot(v, v)) for v in self.center) if centered else 0.0
        return [gg[j] - 2 * gv[j] + vv for j in range(k)]

    def _sq_torch(self, parts: list[list[Tensor]], centered: bool) -> list[float]:
        sq = [0.0] * len(parts)
        for i, lo, hi in segments(parts):  # v's segment stays in cache while the K inputs pass
            v = self.center[i][lo:hi] if centered else None
            vv = float(torch.dot(v, v)) if centered else 0.0
            for j, row in enumerate(parts):
                g = row[i][lo:hi].float()
                sq[j] += float(torch.dot(g, g)) + (vv - 2 * float(torch.dot(g, v)) if centered else 0.0)
        return sq

    def _combine_native(self, lib, parts, coef, w, centered, lift, slope) -> tuple[list[Tensor], list[float]]:
        cfg, k = self.config, len(parts)
        outs = [torch.empty(t.numel()) for t in parts[0]]
        stats = (ctypes.c_double * 5)()
        c_coef, c_w = (ctypes.c_float * k)(*coef), (ctypes.c_float * k)(*w)
        for i, (u, v) in enumerate(zip(outs, self.center, strict=True)):
            ptrs = (ctypes.c_void_p * k)(*[row[i].data_ptr() for row in parts])
            lib.rz_combine(k, ptrs, c_coef, c_w, u.numel(), u.data_ptr(), v.data_ptr(), int(centered),
                           1 - sum(coef), lift, slope, cfg.leak, int(cfg.elect), cfg.momentum, stats)
        return outs, list(stats)

    def _combine_torch(self, lib, parts, coef, w, centered, lift, slope) -> tuple[list[Tensor], list[float]]:
        cfg = self.config
        outs = [torch.empty(t.numel()) for t in parts[0]]
        norm_hat_sq = norm_u_sq = kept = gated = agreement = 0.0
        for i, lo, hi in segments(parts):
            n = hi - lo
            u, v = outs[i][lo:hi].zero_(), self.center[i][lo:hi]
            vote, tmp = self._buffer(0, n).zero_(), self._buffer(1, n)
            for j, row in enumerate(parts):
                g = row[i][lo:hi].float()
                u.add_(g, alpha=coef[j])  # sum_k w_k s_k g_k / W
                vote.add_(torch.sign(g, out=tmp), alpha=w[j])
            if centered:
                u.add_(v, alpha=1 - sum(coef))  # g_hat = v + sum_k w_k s_k (g_k - v) / W
            gain = torch.abs(vote, out=tmp)
            agreement += float(gain.sum())
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
        return outs, [agreement, gated, kept, norm_hat_sq, norm_u_sq]

    def state_dict(self) -> dict[str, Any]:
        return {"center": [c.clone() for c in self.center] if self.center is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        center = state.get("center")
        if center is not None and not all(isinstance(c, Tensor) and c.ndim == 1 for c in center):
            raise ValueError("resonance state: 'center' must be a list of 1-D tensors")
        self.center = [c.clone().float() for c in center] if center is not None else None
        self._scratch.clear()
        self._centered = center is not None
