"""One adapted module: a frozen base layer plus the fused low-rank path of all levels."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from layers.targets import in_out_features


class LevelLinear(nn.Module):
    """``y = W x + s * (sum_{l enabled} B_l) (P x)`` around a frozen Linear or Conv1D.

    P (R x d_in, orthonormal rows) is a non-persistent buffer: it is rebuilt from
    (seed, module name) and never stored or sent. ``B`` holds one (d_out x R) write
    matrix per level, keyed by level name (like PEFT's per-adapter dicts). Whatever
    the number of enabled levels, the forward pass does one low-rank matmul pair:
    the enabled B_l are summed first (d_out x R, cheap), so every level receives
    the same gradient ``G = dL/d(sum_l B_l)``.

    Dtypes, as PEFT and torchtune do: P and B keep ``dtype`` (float32 by default) whatever the
    base's dtype (e.g. bfloat16). The input is cast to P's dtype for the low-rank path, and
    the base output and the delta are added in the wider of the two dtypes, then rounded
    once to the base output's dtype. P and B live on the base layer's device.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        projection: torch.Tensor,
        levels: Iterable[str],
        *,
        scale: float,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        d_in, d_out = in_out_features(base_layer)
        rank = projection.shape[0]
        if projection.shape != (rank, d_in):
            raise ValueError(f"projection shape {tuple(projection.shape)} != ({rank}, {d_in})")
        device = base_layer.weight.device
        self.base_layer = base_layer
        self.scale = float(scale)
        self.register_buffer("P", projection.to(device=device, dtype=dtype), persistent=False)
        self.B = nn.ParameterDict()  # level -> (d_out, R); filled one by one: a plain dict would be sorted
        for name in levels:
            self.B[name] = nn.Parameter(torch.zeros(d_out, rank, device=device, dtype=dtype))
        self.enabled: tuple[str, ...] = tuple(self.B.keys())

    @property
    def in_features(self) -> int:
        return self.P.shape[1]

    @property
    def out_features(self) -> int:
        return next(iter(self.B.values())).shape[0]

    @property
    def rank(self) -> int:
        return self.P.shape[0]

    def write_matrix(self) -> torch.Tensor | None:
        """Sum of the enabled levels' B (d_out x R), or None when none is enabled."""
        total = None
        for name in self.enabled:
            b = self.B[name]
            total = b if total is None else total + b
        return total

    def get_delta_weight(self, level: str | None = None) -> torch.Tensor:
        """Dense delta (d_out x d_in) of one level, or of the enabled sum if ``level`` is None."""
        b = self.write_matrix() if level is None else self.B[level]
        if b is None:
            return torch.zeros(self.out_features, self.in_features, dtype=self.P.dtype, device=self.P.device)
        return self.scale * (b @ self.P)  # (d_out, R) @ (R, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., d_out)
        b = self.write_matrix()
        if b is None:
            return y
        h = F.linear(x.to(self.P.dtype), self.P)  # (..., R) in the levels' dtype
        delta = F.linear(h, b)  # (..., d_out)
        wide = torch.promote_types(y.dtype, delta.dtype)  # one rounding, to y's dtype (no-op when equal)
        return torch.add(y.to(wide), delta.to(wide), alpha=self.scale).to(y.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, levels={list(self.B)}"
