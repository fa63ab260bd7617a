"""Deterministic orthonormal read projections.

Row ``i`` of a module's read projection P depends only on (seed, module name,
rows 0..i): it is a Gaussian vector drawn from a generator seeded by a SHA-256 of
``(seed, name, i)``, orthogonalised against the earlier rows (Gram-Schmidt, done
twice, in float64, on one thread so the summation order is fixed). Hence:

* two processes build bit-identical P with no communication;
* P at rank R' > R starts with P at rank R: growth appends rows, and an agent that
  starts at rank R' has the same P as one that grew to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def row_seed(seed: int, name: str, row: int) -> int:
    """63-bit generator seed of one row of one module's projection."""
    digest = hashlib.sha256(f"{seed}\x00{name}\x00{row}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextmanager
def _single_thread() -> Iterator[None]:
    # BLAS splits reductions across threads; one thread fixes the summation order,
    # so P is bit-identical whatever the caller's thread count.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def read_projection(seed: int, name: str, rank: int, d_in: int, *, start: int = 0) -> torch.Tensor:
    """Rows ``start..rank-1`` of the orthonormal read projection of module ``name``.

    Args:
        seed: the stack's projection seed.
        name: the module's full name in the model (e.g. ``model.layers.0.mlp.up_proj``).
        rank: total number of rows R (must be <= d_in).
        d_in: the module's input features.
        start: first row to return; rows before it are rebuilt (deterministically)
            only to orthogonalise against.

    Returns:
        float64 tensor of shape (rank - start, d_in) with orthonormal rows.
    """
    if not 0 <= start <= rank:
        raise ValueError(f"read_projection: need 0 <= start <= rank, got start={start} rank={rank}")
    if rank > d_in:
        raise ValueError(f"read_projection: rank {rank} exceeds the input features ({d_in}) of {name!r}")
    rows = torch.empty(rank, d_in, dtype=torch.float64)
    with _single_thread():
        for i in range(rank):
            gen = torch.Generator().manual_seed(row_seed(seed, name, i))
            v = torch.randn(d_in, generator=gen, dtype=torch.float64)  # (d_in,)
            for _ in range(2):  # twice is enough (Kahan-Parlett)
                v = v - rows[:i].T @ (rows[:i] @ v)
            rows[i] = v / v.norm()
    return rows[start:]


def projection_digest(projections: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes and bytes of a set of projections (order-free)."""
    h = hashlib.sha256()
    for name in sorted(projections):
        p = projections[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(p.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
