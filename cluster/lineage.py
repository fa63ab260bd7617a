"""The lineage log of a store: one record per checkpoint ever written, kept or pruned.

``lineage.log`` holds records framed like the journal (``length (4 bytes, big-endian) | crc32
(4 bytes) | payload``), each payload one checkpoint's :class:`LineageRecord` as UTF-8 JSON.
:func:`append_lineage` returns only after fsync, so a record survives a crash once written; a
torn or bad tail (a crash mid-append) is ignored with a warning by readers and cut off before
the next append. :class:`cluster.store.LevelStore` writes it; ``swarm checkpoint`` reads it.

Also here: what a record says about a checkpoint that no
manifest field held before lineage (the pushes and bytes seen, the projection digest).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from cluster.frames import frame, read_frames
from cluster.storage import fsync_dir

LINEAGE = "lineage.log"


def read_ranks(tensors: Mapping[str, Tensor]) -> dict[str, int]:
    """Module -> rank R of its write matrices B (d_out, R) in a checkpoint's tensors: ``B/<module>`` of a
    level server, ``levels/<level>/<module>`` of an agent (other tensors are ignored)."""
    ranks: dict[str, int] = {}
    for name, t in tensors.items():
        parts = name.split("/")
        if t.dim() == 2 and ((len(parts) == 2 and parts[0] == "B") or (len(parts) == 3 and parts[0] == "levels")):
            ranks[parts[-1]] = max(ranks.get(parts[-1], 0), int(t.shape[-1]))
    return ranks


def projection_digest(config_hash: str, tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 of the definition of the read projections P a state was computed under: P's rows are a
    function of (levels.seed, module name, rank, d_in) (:mod:`layers.projection`); the config hash fixes
    the seed, the model and its modules, and the ranks come from the state's B (growth raises them)."""
    return hashlib.sha256(json.dumps({"config": config_hash, "ranks": read_ranks(tensors)},
                                     sort_keys=True).encode()).hexdigest()


def dir_size(path: Path) -> int:
    """Bytes of the files directly in ``path`` (a checkpoint directory)."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def reported_seen(meta: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(pushes, bytes) the writer reports in a checkpoint's meta: ``seen.pushes``/``seen.bytes`` when
    given, else a level server's accepted pushes (``state.stats.accepted``) or an agent's pushes and
    bytes sent (``counters.pushes``, ``counters.bytes_sent``); None where the meta says nothing."""
    def get(*path: str) -> Any:
        node: Any = meta
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node if isinstance(node, int) and not isinstance(node, bool) else None

    pushes = next((v for v in (get("seen", "pushes"), get("state", "stats", "accepted"), get("counters", "pushes"))
                   if v is not None), None)
    nbytes = next((v for v in (get("seen", "bytes"), get("counters", "bytes_sent")) if v is not None), None)
    return pushes, nbytes


@dataclass
class LineageRecord:
    """One checkpoint as the lineage remembers it.

    Attributes:
        id, parent, version, config_hash: as in its manifest.
        time: when it was written (Unix seconds; a manifest's file time for checkpoints from before lineage).
        pushes: pushes seen so far (accepted by a server, sent by an agent); None: unknown.
        bytes: bytes of pushes seen so far (as reported, else journaled since ``counted_from``); None: unknown.
        records, journal_bytes: journal records (and their payload bytes) appended since version
            ``counted_from`` (None: not counted).
        counted_from: the version ``records`` (and journaled ``bytes``) count from: 0, or the oldest kept
            checkpoint of a store written before lineage.
        projection: :func:`projection_digest` of its tensors (None: from before lineage, not computed).
        size: bytes on disk of its directory.
        recorded: False when rebuilt from a kept manifest that ``lineage.log`` lacks.
        path: its directory while it is kept (None: pruned).
    """

    id: str
    parent: str | None
    version: int
    config_hash: str
    time: float | None = None
    pushes: int | None = None
    bytes: int | None = None
    records: int | None = None
    journal_bytes: int | None = None
    counted_from: int | None = None
    projection: str | None = None
    size: int | None = None
    recorded: bool = True
    path: Path | None = None

    _FIELDS = ("id", "parent", "version", "config_hash", "time", "pushes", "bytes", "records", "journal_bytes",
               "counted_from", "projection", "size")

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``lineage.log`` (no ``recorded``/``path``)."""
        return {k: getattr(self, k) for k in self._FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LineageRecord:
        """Inverse of :meth:`to_json`; ``ValueError`` when id, version or config_hash is missing."""
        if not isinstance(data.get("id"), str) or not isinstance(data.get("version"), int) \
                or not isinstance(data.get("config_hash"), str):
            raise ValueError(f"a lineage record needs id, version and config_hash, got {sorted(data)}")
        return cls(**{k: data.get(k) for k in cls._FIELDS})

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], path: Path) -> LineageRecord:
        """The record of a kept checkpoint, from its ``manifest.json`` (fields it lacks stay None)."""
        seen = manifest.get("seen") or {}
        pushes, nbytes = reported_seen(manifest.get("meta") or {})
        return cls(manifest["id"], manifest.get("parent"), int(manifest["version"]), manifest["config_hash"],
                   time=manifest.get("created", (path / "manifest.json").stat().st_mtime),
                   pushes=seen.get("pushes", pushes), bytes=seen.get("bytes", nbytes), records=seen.get("records"),
                   journal_bytes=seen.get("journal_bytes"), counted_from=seen.get("counted_from"),
                   projection=manifest.get("projection"),
                   size=dir_size(path), recorded=False, path=path)


@dataclass
class Lineage:
    """A store's checkpoints, oldest first: every record of ``lineage.log`` plus kept checkpoints it lacks.

    ``complete``: the chain reaches the store's first checkpoint; else it starts at ``records[0]``
    (a store written before lineage). ``warnings``: a torn or bad tail of ``lineage.log``, unreadable manifests.
    """

    records: list[LineageRecord]
    complete: bool
    warnings: list[str] = field(default_factory=list)


def read_lineage(directory: Path, *, repair: bool) -> tuple[list[LineageRecord], list[str]]:
    """The records of ``directory/lineage.log`` in order (none: no file), and warnings for a torn or
    bad tail, cut off when ``repair`` (the writer does, before appending)."""
    path = Path(directory) / LINEAGE
    if not path.exists():
        return [], []
    records, end, warnings = parse_lineage(path.read_bytes(), repair=repair)
    if warnings and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return records, warnings


def parse_lineage(data: bytes, *, repair: bool) -> tuple[list[LineageRecord], int, list[str]]:
    """The records a lineage log's bytes hold, the byte where the good part ends, and a warning for a
    torn or bad tail (worded for ``repair``: the caller cuts the log at that byte)."""
    frames, end, problem = read_frames(data)
    records: list[LineageRecord] = []
    for at, payload in frames:
        try:
            records.append(LineageRecord.from_json(json.loads(payload.decode())))
        except (ValueError, TypeError, UnicodeDecodeError) as e:  # a checksummed record that is not one
            problem, end = f"an unreadable record ({type(e).__name__}: {e})", at
            break
    warnings = []
    if problem is not None:
        warnings.append(f"{LINEAGE}: {problem} at byte {end}; " + ("cut off" if repair else "ignored from there"))
    return records, end, warnings


def append_lineage(directory: Path, record: LineageRecord) -> None:
    """Durably append ``record`` to ``directory/lineage.log``; returns after fsync."""
    path = Path(directory) / LINEAGE
    new = not path.exists()
    with open(path, "ab") as f:
        f.write(frame(json.dumps(record.to_json(), sort_keys=True).encode()))
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)
