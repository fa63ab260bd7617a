"""Schema of the level stack's configuration (the ``levels`` config group)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_LEVELS = ["context", "agent", "swarm", "domain", "foundation"]


def check_fields(prefix: str, obj: object, **conditions: bool) -> None:
    """Raise ``ValueError`` naming the first field (``prefix.field``) whose condition is false."""
    for key, ok in conditions.items():
        if not ok:
            raise ValueError(f"{prefix}.{key}: invalid value {getattr(obj, key, '?')!r}")


DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")  # what `levels.dtype` and `model.dtype` accept


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (one of ``DTYPE_NAMES``); ``ValueError`` naming the allowed ones."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {name!r} is not one of {list(DTYPE_NAMES)}")
    import torch  # here, not at the top: schemas must load without torch

    return getattr(torch, name)


@dataclass
class LevelsConfig:
    """How the level stack is laid over a base model.

    Attributes:
        names: level names, fastest first. Each becomes one write matrix B_l per
            adapted module; names must be identifiers (they key parameter dicts).
        rank: R, the number of shared read directions per module (rows of P).
            Every level writes through the same R directions.
        scale: s in ``y = W x + s * (sum_l B_l)(P x)``. Kept fixed when the rank
            grows so that growth preserves the function.
        seed: seed of the read projections; processes with the same seed, rank and
            module names build bit-identical P without communicating.
        target_modules: which modules to adapt. ``None`` picks the defaults of the
            model family (see ``layers.targets``). Entries match a module's full
            name or its dotted suffix (as in PEFT); an entry ``re:<regex>`` matches
            full names by ``re.fullmatch``.
        dtype: dtype of P and of every B_l (the base keeps its own dtype).
        max_rank: the highest rank automatic growth may reach (None: no automatic growth).
        grow_after: merges in a row a level server must report ``growth_needed`` before it grows the
            swarm's rank (0: never).
        grow_step: rows one automatic growth adds (capped at ``max_rank``).
    """

    names: list[str] = field(default_factory=lambda: list(DEFAULT_LEVELS))
    rank: int = 40
    scale: float = 1.0
    seed: int = 0
    target_modules: list[str] | None = None
    dtype: str = "float32"
    max_rank: int | None = None
    grow_after: int = 0
    grow_step: int = 8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        names = list(self.names)
        if not names:
            raise ValueError("levels.names: at least one level is required")
        for name in names:
            if not str(name).isidentifier():
                raise ValueError(f"levels.names: {name!r} is not an identifier")
        if len(set(names)) != len(names):
            raise ValueError(f"levels.names: duplicate level names in {names}")
        if int(self.rank) < 1:
            raise ValueError(f"levels.rank: must be >= 1, got {self.rank}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"levels.scale: must be finite and > 0, got {self.scale}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"levels.dtype: {self.dtype!r} is not one of {list(DTYPE_NAMES)}")
        if self.max_rank is not None and int(self.max_rank) < int(self.rank):
            raise ValueError(f"levels.max_rank: {self.max_rank} is below levels.rank {self.rank}")
        if int(self.grow_after) < 0 or int(self.grow_step) < 1:
            raise ValueError(f"levels.grow_after / grow_step: need >= 0 / >= 1, got {self.grow_after} / "
                             f"{self.grow_step}")
        if self.target_modules is not None and len(self.target_modules) == 0:
            raise ValueError("levels.target_modules: empty list (use null for the family defaults)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)
