"""Splitting a dataset's rows among agents: by key, IID, or by Dirichlet-distributed label shares.

Why not Flower Datasets (``flwr-datasets``, whose NaturalIdPartitioner, IidPartitioner and
DirichletPartitioner these follow): its releases (0.6.1 at the time of writing) require
``datasets<5``, which requires ``huggingface_hub<2``, and this project's environment has
huggingface_hub 2.x (transformers 5); installing it would downgrade huggingface_hub and fsspec.
The partitioners are a few lines each; they work on row indices, so they need no ``datasets``
object, and they are deterministic given the seed (NumPy's PCG64 ``default_rng``).

Every function returns one sorted list of row indices per part: the parts are disjoint, and
together they cover every row (``dirichlet``, ``iid``) or every row with a key (``key``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def key_partition(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """key -> the rows holding it, keys in order of first appearance (as NaturalIdPartitioner)."""
    parts: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        parts.setdefault(key, []).append(row)
    return parts


def iid_partition(n_rows: int, n_parts: int, seed: int) -> list[list[int]]:
    """A seeded shuffle of the rows cut into ``n_parts`` parts whose sizes differ by at most one."""
    import numpy as np

    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    order = np.random.default_rng(seed).permutation(n_rows)
    return [sorted(part.tolist()) for part in np.array_split(order, n_parts)]


def dirichlet_partition(labels: Sequence[Hashable], n_parts: int, alpha: float, seed: int, *,
                        min_size: int = 1, tries: int = 10) -> list[list[int]]:
    """Per label, the shares of the parts drawn from Dirichlet(``alpha``, ..., ``alpha``).

    Small ``alpha``: each part holds few labels (non-IID); large: close to IID. As Flower's
    DirichletPartitioner does, the whole draw is repeated (up to ``tries`` times, from the same
    seeded generator) until every part has at least ``min_size`` rows; the last draw is returned
    either way, and the caller reports a part that is too small.
    """
    import numpy as np

    if n_parts < 1 or not alpha > 0:
        raise ValueError(f"need n_parts >= 1 and alpha > 0, got {n_parts}, {alpha}")
    rng = np.random.default_rng(seed)
    groups = [np.asarray(rows) for rows in key_partition(labels).values()]
    for _ in range(max(1, tries)):
        parts: list[list[int]] = [[] for _ in range(n_parts)]
        for rows in groups:
            rows = rng.permutation(rows)
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_parts))[:-1] * len(rows)).astype(int)
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(map(len, parts)) >= min_size:
            break
    return [sorted(part) for part in parts]
