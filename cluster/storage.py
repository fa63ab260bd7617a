"""Where stores live: a local directory or a durable filesystem named by a URI, one interface for both.

A *location* is a local path (an NFS mount is one) or a URI an fsspec filesystem opens
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``memory://x``). Options for the filesystem
(``endpoint_url``, ``region_name``, ...) come from the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...) or travel with the location as a query string
(:func:`with_options`: ``s3://bucket/run?endpoint_url=...``), so a location handed to another
process (a Ray actor) opens the same filesystem there. Secrets belong in the environment.

:class:`Storage` reads, writes, lists and removes named objects under its root. Its two kinds
keep the atomicity rules of the stores (``cluster.store``) differently:

- **Local** (the default, unchanged): files written then fsynced, renames for atomic
  replacement, appends fsynced before they return (a failed append is cut back off).
- **Object stores** (no rename, no append): a ``put`` is atomic (the object is there whole or
  not at all). :meth:`Storage.write_atomic` is one put. An append-only log
  (:class:`cluster.frames.FrameLog`) is a *prefix of segment objects* ``NAME/000000000001.rec``, ... , one per
  append, that the reader lists and reads in order: a record is durable once its put returned,
  and a torn record cannot exist. Cost: one PUT per record appended, and a LIST plus a GET per
  record on recovery (the journal since the last checkpoint, pruned with it).
  :meth:`Storage.create` (a conditional put) lets writers without a lock claim a name.

Fault injection: :meth:`Storage.inject` installs a callable consulted before every write
(``fault(op, name)`` raises to make it fail, e.g. :class:`NoSpace` raising ``OSError(ENOSPC)``);
children share their root's fault.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cluster.storage_remote import RemotePath as RemotePath  # re-exported: its home was here

Fault = Callable[[str, str], None]
EXCLUSIVE_PROTOCOLS = {"s3", "s3a", "memory"}  # fsspec's pipe_file(mode="create") is a conditional put there


def is_uri(location: str | os.PathLike) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3://...``); False for a local path."""
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def with_options(url: str, options: Mapping[str, Any] | None) -> str:
    """``url`` with filesystem ``options`` attached as a query string (JSON values); ``url`` as is
    when there are none or it is a local path (options mean nothing there)."""
    if not options or not is_uri(url):
        return url
    base, _ = split_options(url)
    return base + "?" + urlencode({k: json.dumps(v) for k, v in sorted(options.items())})


def split_options(location: str) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`with_options`: the bare URL and its options. ``ValueError`` naming an option
    whose value is not JSON."""
    if not is_uri(location) or "?" not in location:
        return location, {}
    base, _, query = location.partition("?")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            options[key] = json.loads(value)
        except ValueError as e:
            raise ValueError(f"storage location {base}: option {key}={value!r} is not JSON") from e
    return base, options


def fsync_dir(path: Path) -> None:
    """fsync a local directory, so a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NoSpace:
    """A fault for :meth:`Storage.inject`: while ``full``, every write raises ``OSError(ENOSPC)``
    (``failures`` counts them); set ``full = False`` and space is back."""

    def __init__(self, full: bool = True) -> None:
        self.full, self.failures = full, 0

    def __call__(self, op: str, name: str) -> None:
        """Raise ``OSError(ENOSPC)`` naming ``op`` and ``name`` while full."""
        if self.full:
            self.failures += 1
            raise OSError(errno.ENOSPC, f"No space left on device (injected, {op} {name})")


class Storage:
    """A root directory on a local disk or a filesystem named by a URI (see the module doc).

    ``location``: a path, a URI (options in its query string, see :func:`with_options`) or a
    :class:`Storage` (a view of its root). ``options`` add to the URI's. Names passed to the
    methods are relative to the root, ``/``-separated. Raises ``ValueError`` for a URI whose
    filesystem fsspec does not know (naming the package it needs, when it says).
    """

    def __init__(self, location: str | os.PathLike | Storage, options: Mapping[str, Any] | None = None) -> None:
        if isinstance(location, Storage):
            self.local, self.fs, self.base, self.url = location.local, location.fs, location.base, location.url
            self.path, self._fault = location.path, location._fault
            return
        url, opts = split_options(os.fspath(location))
        opts.update(options or {})
        self._fault: list[Fault | None] = [None]
        if not is_uri(url):
            self.local, self.fs, self.path = True, None, Path(url.removeprefix("file://"))
            self.base = self.url = str(self.path)
            return
        import fsspec

        try:
            self.fs, self.base = fsspec.core.url_to_fs(url, **opts)
        except (ImportError, ValueError) as e:
            raise ValueError(f"storage location {url}: no filesystem for it ({e})") from e
        self.local, self.path = False, None
        self.base = self.base.rstrip("/")
        self.url = url.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # ------------------------------------------------------------------ naming
    def child(self, name: str) -> Storage:
        """The storage rooted at ``name`` under this root (sharing its filesystem and fault)."""
        out = Storage(self)
        out.path = self.path / name if self.local else None
        out.base = f"{self.base}/{name}" if not self.local else str(out.path)
        out.url = f"{self.url}/{name}"
        return out

    def where(self, name: str = "") -> str:
        """The full path or URL of ``name`` (for messages; the root itself with no name)."""
        return f"{self.url}/{name}" if name else self.url

    def _full(self, name: str) -> str:
        return str(self.path / name) if self.local else (f"{self.base}/{name}" if name else self.base)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: Fault | None) -> None:
        """Consult ``fault(op, name)`` before every write from now on, through this root and every view
        of it (None: none); it raises to make the write fail."""
        self._fault[0] = fault

    def _check(self, op: str, name: str) -> None:
        if self._fault[0] is not None:
            self._fault[0](op, self.where(name))

    # ------------------------------------------------------------------ reading
    def exists(self, name: str = "") -> bool:
        """True when ``name`` (a file, object or directory/prefix) exists."""
        if self.local:
            return (self.path / name).exists()
        self.fs.invalidate_cache()
        return self.fs.exists(self._full(name))

    def read_bytes(self, name: str) -> bytes:
        """The bytes of ``name``; ``FileNotFoundError`` when it does not exist."""
        if self.local:
            return (self.path / name).read_bytes()
        return self.fs.cat_file(self._full(name))

    def read_many(self, names: list[str]) -> list[bytes]:
        """The bytes of each of ``names``, in order (fetched concurrently on an object store)."""
        if self.local or not names:
            return [self.read_bytes(n) for n in names]
        got = self.fs.cat([self._full(n) for n in names], on_error="raise")
        return [got[self._full(n)] for n in names]

    def listing(self, name: str = "") -> dict[str, int | None]:
        """What is directly under ``name``: entry name -> size in bytes (None: a directory or prefix);
        empty when ``name`` does not exist."""
        if self.local:
            d = self.path / name
            if not d.is_dir():
                return {}
            found: dict[str, int | None] = {}
            for p in d.iterdir():
                try:  # another process may remove an entry between the listing and its stat (a temp file)
                    st = p.stat()
                except FileNotFoundError:
                    continue
                found[p.name] = None if stat.S_ISDIR(st.st_mode) else st.st_size
            return found
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self._full(name), detail=True)
        except FileNotFoundError:
            return {}
        full = self._full(name)
        return {PurePosixPath(e["name"]).name: (None if e.get("type") == "directory" else int(e.get("size") or 0))
                for e in entries if e["name"].rstrip("/") != full}

    def modified(self, name: str) -> float | None:
        """``name``'s modification time (Unix seconds), None when the filesystem does not say."""
        if self.local:
            return (self.path / name).stat().st_mtime
        try:
            stamp = self.fs.modified(self._full(name))
        except (NotImplementedError, OSError):
            return None
        return stamp.timestamp() if stamp is not None else None

    # ------------------------------------------------------------------ writing
    def makedirs(self, name: str = "") -> None:
        """Create the directory ``name`` and its parents (nothing on an object store: prefixes need none)."""
        self._check("mkdir", name)
        if self.local:
            (self.path / name).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` whole. Local: fsynced before returning (not atomic: for a file in a directory
        renamed into place later). Object store: one put (atomic)."""
        self._check("write", name)
        if self.local:
            with open(self.path / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return
        self.fs.pipe_file(self._full(name), data)

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically: a reader (or a crash) sees the old bytes or the new, never half.
        Local: a temporary file, fsync, rename, fsync of the directory. Object store: one put."""
        if not self.local:
            self.write_bytes(name, data)
            return
        self._check("write", name)
        final = self.path / name
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)

    @property
    def exclusive(self) -> bool:
        """True when :meth:`create` can refuse an existing name: local, S3 (``If-None-Match: *``), memory."""
        if self.local:
            return True
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool(set(protocols) & EXCLUSIVE_PROTOCOLS)

    def create(self, name: str, data: bytes) -> None:
        """Write ``name`` whole unless it exists (``FileExistsError``: another writer won the name); local:
        ``O_EXCL``, fsynced with its directory; object store: one conditional put. ``ValueError`` when not
        :attr:`exclusive`."""
        if not self.exclusive:
            raise ValueError(f"{self.url}: its filesystem ({self.fs.protocol}) offers no exclusive create "
                             "(conditional put)")
        self._check("create", name)
        if not self.local:
            self.fs.pipe_file(self._full(name), data, mode="create")
            return
        path = self.path / name
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)

    def append(self, name: str, data: bytes) -> None:
        """Local only: append ``data`` to the file ``name`` and fsync; a failed append is cut back off,
        so a later one never follows half a record. ``ValueError`` on an object store (use :class:`FrameLog`)."""
        if not self.local:
            raise ValueError(f"{self.url}: an object store cannot append; write segment objects (FrameLog)")
        self._check("append", name)
        path = self.path / name
        new = not path.exists()
        with open(path, "ab") as f:
            start = f.tell()
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                try:
                    f.truncate(start)
                except OSError:
                    pass  # recovery cuts a torn tail off anyway
                raise
        if new:
            fsync_dir(path.parent)

    def truncate(self, name: str, size: int) -> None:
        """Local only: cut the file ``name`` to ``size`` bytes and fsync."""
        self._check("truncate", name)
        with open(self.path / name, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())

    def remove(self, name: str) -> None:
        """Delete the file or object ``name`` (nothing when it is missing)."""
        self._check("remove", name)
        try:
            if self.local:
                (self.path / name).unlink()
            else:
                self.fs.rm_file(self._full(name))
        except FileNotFoundError:
            pass

    def remove_tree(self, name: str) -> None:
        """Delete the directory (or prefix) ``name`` and everything in it (nothing when missing)."""
        self._check("remove", name)
        if self.local:
            import shutil

            shutil.rmtree(self.path / name, ignore_errors=True)
            return
        try:
            self.fs.rm(self._full(name), recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache()
