"""Deterministic orthonormal read projections.

Row ``i`` of a module's read projection P depends only on (seed, module name,
rows 0..i): it is a Gaussian vector drawn from a generator seeded by a SHA-256 of
``(seed, name, i)``, orthogonalised against the earlier rows (Gram-Schmidt, done
twice, in float64, on one thread so the summation order is fixed). Hence:

* two processes build bit-identical P with no communication;
* P at rank R' > R starts with P at rank R: growth appends rows, and an agent that
  starts at rank R' has the same P as one that grew to it.

A :class:`ReadGrowth` is one growth of the swarm's read space, as every process applies it:
deterministic continuation rows (:func:`continuation_rows`), or data-dependent rows it carries
(e.g. an adapter's read directions P does not span yet, :func:`complement_rows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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


def continuation_rows(seed: int, name: str, projection: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` deterministic random rows that continue ``projection`` (R x d_in, any dtype and device).

    When ``projection`` is exactly the deterministic P of rank R (in its dtype), these are rows R..R+count-1
    of :func:`read_projection`, so a grown stack equals one built at the new rank. Otherwise (P holds rows
    some growth carried) row ``R + i`` is the draw of :func:`row_seed` orthogonalised, in float64 on one
    thread, against P and the rows before it: a function of P's bits alone, so every process holding the
    same P computes the same rows.

    Returns:
        float64 tensor of shape (count, d_in), rows orthonormal to each other and to P.
    """
    p = projection.detach().to("cpu", torch.float64)  # (R, d_in)
    rank, d_in = p.shape
    if rank + count > d_in:
        raise ValueError(f"continuation_rows: rank {rank + count} exceeds the input features ({d_in}) of {name!r}")
    reference = read_projection(seed, name, rank + count, d_in)  # (R + count, d_in)
    if torch.equal(reference[:rank].to(projection.dtype).to(torch.float64), p):
        return reference[rank:]
    rows = torch.cat([p, torch.empty(count, d_in, dtype=torch.float64)])  # (R + count, d_in)
    with _single_thread():
        for i in range(rank, rank + count):
            gen = torch.Generator().manual_seed(row_seed(seed, name, i))
            v = torch.randn(d_in, generator=gen, dtype=torch.float64)  # (d_in,)
            for _ in range(2):
                v = v - rows[:i].T @ (rows[:i] @ v)
            rows[i] = v / v.norm()
    return rows[rank:]


def complement_rows(projection: torch.Tensor, directions: torch.Tensor, count: int,
                    tol: float = 1e-6) -> torch.Tensor:
    """The top ``count`` directions of ``directions`` (n x d_in, rows) that P does not span yet.

    The rows are projected off P's span (float64, one thread, Gram-Schmidt twice), then the leading right
    singular vectors of what is left are orthonormalised against P once more. Fewer rows come back when
    the residual has fewer than ``count`` directions above ``tol`` (relative to the directions' largest
    singular value: what P already spans is not added again).

    Returns:
        float64 tensor (k, d_in), k <= count, rows orthonormal to each other and to P.
    """
    p = projection.detach().to("cpu", torch.float64)  # (R, d_in)
    d = directions.detach().to("cpu", torch.float64)  # (n, d_in)
    if d.ndim != 2 or d.shape[1] != p.shape[1]:
        raise ValueError(f"complement_rows: directions of shape {tuple(d.shape)} do not match P's {tuple(p.shape)}")
    reference = float(torch.linalg.matrix_norm(d, ord=2)) if d.numel() else 0.0  # the directions' top gain
    with _single_thread():
        for _ in range(2):
            d = d - (d @ p.T) @ p  # (n, d_in): off P's span
        if reference == 0.0:
            return d.new_zeros(0, p.shape[1])
        _, s, vh = torch.linalg.svd(d, full_matrices=False)  # vh: (min(n, d_in), d_in)
        keep = int(((s > tol * reference) & (torch.arange(len(s)) < count)).sum())
        rows = vh[:keep].clone()
        basis = p
        for i in range(keep):
            v = rows[i]
            for _ in range(2):
                v = v - basis.T @ (basis @ v)
            rows[i] = v / v.norm()
            basis = torch.cat([basis, rows[i:i + 1]])
    return rows


@dataclass(frozen=True)
class ReadGrowth:
    """One growth of the read space of every adapted module, from rank ``from_rank`` to ``to_rank``.

    ``rows``: module -> (to_rank - from_rank, d_in) float64 rows (orthonormal to that module's P at
    ``from_rank`` and to each other) carried by the event: data-dependent rows (e.g. an adapter's read
    directions). Modules not in ``rows`` get :func:`continuation_rows`. Every process that applies the
    same events in the same order to the same starting P holds bit-identical P afterwards; B_l gets
    zero columns, so the function is unchanged. ``source`` says who asked (a level, ``absorb:...``).
    """

    from_rank: int
    to_rank: int
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.from_rank < self.to_rank:
            raise ValueError(f"ReadGrowth: need 1 <= from_rank < to_rank, got {self.from_rank} -> {self.to_rank}")
        for name, r in self.rows.items():
            if not isinstance(r, torch.Tensor) or r.ndim != 2 or r.shape[0] != self.added:
                shape = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
                raise ValueError(f"ReadGrowth: rows of {name!r} have shape {shape}, expected ({self.added}, d_in)")
            if not bool(torch.isfinite(r).all()):
                raise ValueError(f"ReadGrowth: rows of {name!r} contain NaN or Inf")

    @property
    def added(self) -> int:
        """Rows added to every module."""
        return self.to_rank - self.from_rank

    @property
    def id(self) -> str:
        """SHA-256 (16 hex digits) of the ranks, the source and the carried rows' bytes."""
        h = hashlib.sha256(f"{self.from_rank}:{self.to_rank}:{self.source}".encode())
        h.update(projection_digest(self.rows).encode())
        return h.hexdigest()[:16]

    def rows_for(self, seed: int, name: str, projection: torch.Tensor) -> torch.Tensor:
        """The float64 rows (added, d_in) module ``name`` gets, given its P (from_rank x d_in)."""
        if projection.shape[0] != self.from_rank:
            raise ValueError(f"ReadGrowth {self.from_rank}->{self.to_rank}: P of {name!r} has rank "
                             f"{projection.shape[0]}")
        if name in self.rows:
            rows = self.rows[name].to(torch.float64)
            if rows.shape[1] != projection.shape[1]:
                raise ValueError(f"ReadGrowth: rows of {name!r} have {rows.shape[1]} features, P has "
                                 f"{projection.shape[1]}")
            return rows
        return continuation_rows(seed, name, projection, self.added)

    def to_dict(self) -> dict:
        """Plain form (tensors kept as tensors): ``from_rank``, ``to_rank``, ``source``, ``rows``."""
        return {"from_rank": self.from_rank, "to_rank": self.to_rank, "source": self.source,
                "rows": {m: r.clone() for m, r in self.rows.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ReadGrowth:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["from_rank"]), int(d["to_rank"]), dict(d.get("rows") or {}), str(d.get("source", "")))
