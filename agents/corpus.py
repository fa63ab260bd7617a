"""Real text that ships with Python: the standard library's own source files, as bytes."""

from __future__ import annotations

import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def package_files(package: str, *, min_bytes: int = 2048) -> list[Path]:
    """Sorted ``.py`` files of one stdlib package or module (tests excluded).

    Raises:
        ValueError: the package is not in this interpreter's standard library.
    """
    root = stdlib_dir()
    pkg = root / package.replace(".", "/")
    if pkg.is_dir():
        files = [p for p in pkg.rglob("*.py") if "test" not in p.relative_to(root).parts[1:-1]]
    elif pkg.with_suffix(".py").is_file():
        files = [pkg.with_suffix(".py")]
    else:
        raise ValueError(f"stdlib package {package!r} not found under {root}")
    return sorted(p for p in files if p.stat().st_size >= min_bytes)


@dataclass
class ByteCorpus:
    """Train files (one context each) and held-out files of a set of stdlib packages.

    Every ``held_out_every``-th file (in sorted order) is held out, so the split is
    deterministic and disjoint.
    """

    train: list[Path]
    held_out: list[Path]

    @classmethod
    def from_packages(cls, packages: Sequence[str], *, held_out_every: int = 5) -> ByteCorpus:
        if held_out_every < 2:
            raise ValueError(f"held_out_every must be >= 2, got {held_out_every}")
        files = [f for pkg in packages for f in package_files(pkg)]
        if len(files) < 2:
            raise ValueError(f"stdlib packages {list(packages)} hold fewer than 2 usable files")
        held = files[held_out_every - 1 :: held_out_every]
        train = [f for f in files if f not in set(held)]
        return cls(train=train, held_out=held)


def read_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as a uint8 tensor (1-D)."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def sample_windows(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``seq_len + 1`` bytes (inputs + next-byte targets) as int64."""
    if data.numel() < seq_len + 1:
        reps = (seq_len + 1) // data.numel() + 1
        data = data.repeat(reps)
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    return data[idx].long()


def eval_windows(paths: Sequence[Path], seq_len: int, max_windows: int) -> torch.Tensor:
    """Deterministic non-overlapping windows (N, seq_len + 1) spread over ``paths``."""
    windows: list[torch.Tensor] = []
    per_file = max(1, max_windows // max(1, len(paths)))
    for path in paths:
        data = read_bytes(path).long()
        n = min(per_file, (data.numel() - 1) // seq_len)
        for i in range(n):
            windows.append(data[i * seq_len : i * seq_len + seq_len + 1])
    if not windows:
        raise ValueError("no evaluation window fits in the held-out files")
    return torch.stack(windows[:max_windows])
