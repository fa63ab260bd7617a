"""Baseline merges behind the ``Aggregator`` interface.

Formulas follow the ByzFL docstrings (LPD-EPFL/byzfl, ``byzfl/aggregators``) and the
papers cited per class. ByzFL itself is not a dependency: importing it imports
torchvision, whose only published wheels are CUDA builds (see docs/merging.md).
Rules marked one-push-one-vote refuse non-uniform weights rather than ignore them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from layers.merge.base import Aggregator, segments, split_like, stack_parts


class MeanAggregator(Aggregator):
    """FedAvg: the weighted mean ``sum_k w_k g_k / W``, times a server rate (1 = plain FedAvg). Streaming, O(d)."""

    name = "mean"

    def __init__(self, server_lr: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ValueError(f"mean: server_lr must be finite and > 0, got {server_lr}")
        self.server_lr = server_lr

    def _aggregate(self, parts, weights):
        coef = (weights / weights.sum() * self.server_lr).tolist()
        out = [torch.empty(t.numel()) for t in parts[0]]
        for i, lo, hi in segments(parts):  # the segment's accumulator stays in cache across the K inputs
            acc = out[i][lo:hi].zero_()
            for row, c in zip(parts, coef, strict=True):
                acc.add_(row[i][lo:hi].float(), alpha=c)
        return out


class CoordinateMedian(Aggregator):
    """Coordinate-wise median (Yin et al. 2018); for even K the mean of the two middle values."""

    name = "median"
    supports_weights = False

    def _aggregate(self, parts, weights):
        x = stack_parts(parts)  # (K, d)
        k = x.shape[0]
        if k % 2:
            med = x.median(dim=0).values
        else:
            med = (x.kthvalue(k // 2, dim=0).values + x.kthvalue(k // 2 + 1, dim=0).values) / 2
        return split_like(med, parts)


class TrimmedMean(Aggregator):
    """Drop the f largest and f smallest values per coordinate, average the rest (needs 2f < K)."""

    name = "trimmed_mean"
    supports_weights = False

    def __init__(self, f: int = 1) -> None:
        super().__init__()
        self.f = int(f)

    def _aggregate(self, parts, weights):
        k = len(parts)
        f = min(self.f, (k - 1) // 2)  # keep at least one value
        x = stack_parts(parts).sort(dim=0).values  # (K, d)
        self.stats["f"] = float(f)
        return split_like(x[f : k - f].mean(dim=0), parts)


def _pairwise_sq_distances(x: Tensor) -> Tensor:
    gram = (x @ x.T).double()  # (K, K); float32 products: no float64 copy of the K x d stack
    sq = gram.diagonal()
    return (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)


class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al. 2017): mean of the m vectors with the lowest Krum score.

    Score of x_i: sum of squared distances to its K - f - 2 nearest neighbours.
    ``m = 1`` is Krum; ``m = None`` uses K - f, as ByzFL does.
    """

    name = "multi_krum"
    supports_weights = False

    def __init__(self, f: int = 1, m: int | None = None) -> None:
        super().__init__()
        self.f, self.m = int(f), m

    def _aggregate(self, parts, weights):
        x = stack_parts(parts)  # (K, d)
        k = x.shape[0]
        neighbours = max(1, k - self.f - 2)
        dist = _pairwise_sq_distances(x)
        dist.fill_diagonal_(float("inf"))
        scores = dist.sort(dim=1).values[:, : min(neighbours, k - 1)].sum(dim=1) if k > 1 else torch.zeros(1)
        m = max(1, min(k, self.m if self.m is not None else k - self.f))
        chosen = scores.argsort()[:m]
        self.stats["selected"] = float(m)
        return split_like(x[chosen].mean(dim=0), parts)


class Krum(MultiKrum):
    """Krum: the single vector with the lowest Krum score."""

    name = "krum"

    def __init__(self, f: int = 1) -> None:
        super().__init__(f=f, m=1)


class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He, Jaggi 2021), weighted.

    ``v <- v + (1/W) sum_k w_k (g_k - v) min(1, c / ||g_k - v||)``, iterated L times from
    the previous aggregate. ``radius=None`` uses ``c = median_k ||g_k - v||`` (the rule of
    the resonance merge's first stage), otherwise the fixed radius c.
    """

    name = "centered_clipping"

    def __init__(self, radius: float | None = None, iterations: int = 1) -> None:
        super().__init__()
        self.radius, self.iterations = radius, int(iterations)
        self.center: Tensor | None = None

    def _aggregate(self, parts, weights):
        x = stack_parts(parts)  # (K, d)
        v = self.center if self.center is not None and self.center.numel() == x.shape[1] else torch.zeros(x.shape[1])
        w = (weights / weights.sum()).float()
        for _ in range(self.iterations):
            dist = (x - v).norm(dim=1)  # (K,)
            c = float(dist.median()) if self.radius is None else self.radius
            scale = torch.where(dist > c, c / dist.clamp_min(1e-30), torch.ones_like(dist))
            v = v + ((w * scale)[:, None] * (x - v)).sum(dim=0)
        self.center = v.clone()
        return split_like(v, parts)

    def state_dict(self):
        return {"center": None if self.center is None else self.center.clone()}

    def load_state_dict(self, state):
        self.center = None if state.get("center") is None else state["center"].clone().float()


class SignMajority(Aggregator):
    """signSGD with majority vote (Bernstein et al. 2018): ``sign(sum_k w_k sign(g_k))``.

    Scaled by the inputs' mean absolute coordinate so the output is a usable step.
    """

    name = "sign_majority"

    def _aggregate(self, parts, weights):
        w = weights.tolist()
        d = sum(t.numel() for t in parts[0])
        scale = sum(float(t.abs().sum()) for row in parts for t in row) / (len(parts) * d)
        out = []
        for i in range(len(parts[0])):
            vote = torch.zeros(parts[0][i].numel())
            for k, row in enumerate(parts):
                vote.add_(torch.sign(row[i].float()), alpha=w[k])
            out.append(torch.sign(vote) * scale)
        return out


class AndMask(Aggregator):
    """AND-mask (Parascandolo et al. 2021): the mean where ``|mean sign| >= tau``, else 0.

    ``rescale`` divides by the fraction kept (DomainBed's ``scale_grad_inverse_sparsity``).
    """

    name = "and_mask"

    def __init__(self, tau: float = 0.5, rescale: bool = False) -> None:
        super().__init__()
        self.tau, self.rescale = float(tau), rescale

    def _aggregate(self, parts, weights):
        w = (weights / weights.sum()).tolist()
        out, kept = [], 0.0
        for i in range(len(parts[0])):
            mean = torch.zeros(parts[0][i].numel())
            vote = torch.zeros_like(mean)
            for k, row in enumerate(parts):
                g = row[i].float()
                mean.add_(g, alpha=w[k])
                vote.add_(torch.sign(g), alpha=w[k])
            mask = vote.abs() >= self.tau
            kept += float(mask.sum())
            out.append(mean * mask)
        fraction = kept / sum(t.numel() for t in parts[0])
        self.stats["kept_fraction"] = fraction
        if self.rescale and fraction > 0:
            out = [t / fraction for t in out]
        return out


class Ties(Aggregator):
    """TIES merging (Yadav et al. 2023): trim each update to its top-``density`` magnitudes,
    elect the sign of the summed trimmed mass per coordinate, average only the agreeing entries.
    """

    name = "ties"

    def __init__(self, density: float = 0.2) -> None:
        super().__init__()
        if not 0 < density <= 1:
            raise ValueError(f"ties: density must be in (0, 1], got {density}")
        self.density = float(density)

    def _aggregate(self, parts, weights):
        x = stack_parts(parts)  # (K, d)
        k, d = x.shape
        keep = max(1, int(round(self.density * d)))
        if keep < d:
            cutoff = x.abs().kthvalue(d - keep + 1, dim=1, keepdim=True).values  # (K, 1)
            x = torch.where(x.abs() >= cutoff, x, torch.zeros_like(x))
        w = weights.float()[:, None]
        elected = torch.sign((w * x).sum(dim=0))  # (d,)
        agree = (torch.sign(x) == elected) & (x != 0)
        num = (w * x * agree).sum(dim=0)
        den = (w * agree).sum(dim=0)
        return split_like(torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)), parts)
