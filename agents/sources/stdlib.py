"""``stdlib``: an agent is a standard-library package of this interpreter, a context one of its source files.

The same files and the same split as :class:`agents.corpus.ByteCorpus` always had, so a stdlib
run's bytes do not change: ``.py`` files of at least 2048 bytes, tests excluded, sorted by path;
every ``held_out_every``-th file of the concatenated list is held out.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Sequence
from pathlib import Path

from agents.sources.document import AgentDocuments, FileDocuments, WorkloadError


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def package_files(package: str, *, min_bytes: int = 2048) -> list[Path]:
    """Sorted ``.py`` files of one stdlib package or module (files under a ``test`` directory excluded).

    Raises:
        WorkloadError: the package is not in this interpreter's standard library.
    """
    root = stdlib_dir()
    pkg = root / package.replace(".", "/")
    if pkg.is_dir():
        files = [p for p in pkg.rglob("*.py") if "test" not in p.relative_to(root).parts[1:-1]]
    elif pkg.with_suffix(".py").is_file():
        files = [pkg.with_suffix(".py")]
    else:
        raise WorkloadError(f"stdlib package {package!r} not found under {root}")
    return sorted(p for p in files if p.stat().st_size >= min_bytes)


def stdlib_documents(packages: Sequence[str], held_out_every: int = 5) -> AgentDocuments:
    """The files of ``packages`` (in that order), every ``held_out_every``-th held out; read when accessed.

    Raises:
        WorkloadError: a package is missing, or they hold fewer than 2 usable files.
        ValueError: ``held_out_every < 2``.
    """
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be >= 2, got {held_out_every}")
    files = [f for pkg in packages for f in package_files(pkg)]
    if len(files) < 2:
        raise WorkloadError(f"stdlib packages {list(packages)} hold fewer than 2 usable files")
    held = files[held_out_every - 1 :: held_out_every]
    # membership, not position, as ByteCorpus did: a package listed twice stays out of train entirely
    held_set = set(held)
    train = [f for f in files if f not in held_set]
    return AgentDocuments(train=FileDocuments(train), held_out=FileDocuments(held))
