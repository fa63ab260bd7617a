"""A read-mostly, ``pathlib``-like view of a location on an object store (:class:`RemotePath`), so code
written for local stores can read remote ones; re-exported by :mod:`cluster.storage`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.storage import Storage


class RemotePath:
    """A read-mostly, ``pathlib``-like view of a location on an object store (what
    :attr:`cluster.store.LevelStore.dir` is there), so code written for local stores can read
    remote ones: ``/``, ``name``, ``glob``, ``exists``, ``is_dir``, ``read_bytes``, ``read_text``;
    ``str()`` is its URL (with no options)."""

    def __init__(self, storage: Storage, name: str = "") -> None:
        self.storage, self._name = storage, name.strip("/")

    def __str__(self) -> str:
        return self.storage.where(self._name)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __fspath__(self) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.storage, f"{self._name}/{part}" if self._name else str(part))

    @property
    def name(self) -> str:
        """The last component of the path."""
        return (self._name or self.storage.base).rpartition("/")[2]

    def exists(self) -> bool:
        """True when an object or prefix is there."""
        return self.storage.exists(self._name)

    def is_dir(self) -> bool:
        """True when objects exist under this prefix."""
        return bool(self.storage.listing(self._name))

    def read_bytes(self) -> bytes:
        """The object's bytes (``FileNotFoundError`` when missing)."""
        return self.storage.read_bytes(self._name)

    def read_text(self) -> str:
        """The object's bytes as UTF-8."""
        return self.read_bytes().decode()

    def glob(self, pattern: str) -> list[RemotePath]:
        """The objects and prefixes under this path matching ``pattern`` (``*`` within a component)."""
        root = self.storage._full(self._name)
        self.storage.fs.invalidate_cache()
        found = self.storage.fs.glob(f"{root}/{pattern}")
        return [self / f[len(root) + 1:] for f in sorted(found)]
