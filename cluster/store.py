"""Durable state of one shared level: atomic checkpoints plus an append-only journal.

Directory layout::

    ckpt-000000000042/tensors.safetensors   the level's tensors at version 42
    ckpt-000000000042/manifest.json         id, parent, version, config hash, meta, time, seen, projection
    journal-000000000042.log                records accepted after version 42
    lineage.log                             one record per checkpoint ever written (kept or pruned)

A journal record is ``length (4 bytes, big-endian) | crc32 (4 bytes) | payload`` with the
payload in the wire format (``cluster.wire``); ``append`` returns only after fsync, so an
acknowledged record survives a crash. A checkpoint (``cluster.checkpoint``) is written into a temporary
directory, fsynced, then renamed into place (atomic). Its id is the SHA-256 of the
config hash and every tensor (name, dtype, shape, bytes); its manifest names its parent.

Recovery takes the newest checkpoint whose id verifies (a corrupt one is skipped with a
warning), then replays, in order, every journal segment starting at or after it. A torn
record at the end of the newest segment (a crash mid-append, never acknowledged) is
cut off with a warning. Appends always go to the segment of the newest checkpoint
directory, so falling back to an older checkpoint still replays everything.

Lineage: every checkpoint also appends a JSON record (id, parent, version, time, pushes and
bytes seen so far, journal records counted, config hash, projection digest, size on disk) to
``lineage.log``, framed and fsynced like the journal, after the checkpoint's rename and before
pruning, so ancestors stay listed once their directories are gone. A kept checkpoint the log
lacks (a store written before lineage existed, or a crash between rename and append) is
recorded from its manifest before the next one; the chain of such a store starts at its
oldest kept checkpoint.

Storage (``cluster.storage``): ``directory`` is a local path or a URI (``s3://bucket/run/levels/x``).
On a local disk everything above holds as written. On an object store (no rename, no append) a
checkpoint is written as the objects ``ckpt-N/tensors.safetensors`` and ``ckpt-N/manifest.json``
followed, last, by the commit marker ``ckpt-N/COMMIT`` (holding the id): a checkpoint without its
marker is a torn write, invisible to readers and deleted before its version is written again;
pruning deletes the marker first. A journal segment ``journal-N.log`` (and ``lineage.log``) is
a prefix of segment objects, one per append (:class:`cluster.frames.FrameLog`), read in order.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load, load_file, save, save_file
from torch import Tensor

from cluster.checkpoint import Checkpoint, checkpoint_problems, tensors_id
from cluster.frames import FRAME, FrameLog, count_frames, frame, read_frames
from cluster.lineage import (
    LINEAGE,
    Lineage,
    LineageRecord,
    append_lineage,
    parse_lineage,
    projection_digest,
    read_lineage,
    reported_seen,
)
from cluster.storage import RemotePath, Storage, fsync_dir
from cluster.wire import DEFAULT_LIMITS, Limits, WireError, decode, encode

COMMIT = "COMMIT"  # an object store's checkpoint exists once this marker (written last) does


def _number(name: str, prefix: str, suffix: str = "") -> int | None:
    """The number in ``<prefix><digits><suffix>`` (None: not such a name)."""
    core = name[len(prefix): len(name) - len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    return int(core) if core.isdigit() else None


@dataclass
class Recovery:
    """What a restart gets back: the checkpoint (or None), its tensors, then the journal records in order."""

    checkpoint: Checkpoint | None
    tensors: dict[str, Tensor] | None
    records: list[tuple[dict[str, Tensor], dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class LevelStore:
    """Checkpoints and journal of one level, in ``directory`` (created if missing): a local path, a
    URI (``s3://...``, see :mod:`cluster.storage`) or a :class:`cluster.storage.Storage`."""

    def __init__(self, directory: str | Path | Storage, *, config_hash: str, keep: int = 2,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if keep < 1:
            raise ValueError("LevelStore: keep must be >= 1")
        self.storage = directory if isinstance(directory, Storage) else Storage(directory)
        self.storage.makedirs()
        self.local = self.storage.local
        # a Path, or on an object store a path-like view of it (code written for local stores reads it)
        self.dir: Path = self.storage.path if self.local else RemotePath(self.storage)  # type: ignore[assignment]
        self.config_hash, self.keep, self.limits = config_hash, keep, limits
        self._logs: dict[str, FrameLog] = {}  # one per journal segment: it counts its objects on

    # ------------------------------------------------------------------ layout
    def _path(self, name: str) -> Path:
        """A checkpoint directory's path (local) or URL (object store), as :class:`Checkpoint` holds it."""
        return self.dir / name

    def _log(self, name: str) -> FrameLog:
        if name not in self._logs:
            self._logs[name] = FrameLog(self.storage, name)
        return self._logs[name]

    def _checkpoint_names(self) -> list[str]:
        """Checkpoint directories, oldest first: local ones as renamed into place, an object store's
        those whose commit marker exists."""
        if self.local:
            dirs = [p.name for p in self.dir.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit()]
        else:
            dirs = [n for n, size in self.storage.listing().items()
                    if size is None and _number(n, "ckpt-") is not None and self.storage.exists(f"{n}/{COMMIT}")]
        return sorted(dirs, key=lambda n: int(n[5:]))

    def _checkpoint_dirs(self) -> list[Path]:
        return [self._path(n) for n in self._checkpoint_names()]

    def _segment_names(self) -> list[str]:
        names = [n for n in self.storage.listing() if _number(n, "journal-", ".log") is not None]
        return sorted(names, key=lambda n: int(n[8:-4]))

    def _active_name(self) -> str:
        dirs = self._checkpoint_names()
        start = int(dirs[-1][5:]) if dirs else 0
        return f"journal-{start:012d}.log"

    # ------------------------------------------------------------------ writing
    def append(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Durably append one record (e.g. an accepted push); returns after fsync (an object store: after
        its segment object's put). Raises ``OSError`` when the write fails (nothing is appended then)."""
        payload = encode(tensors, meta, self.limits)
        self._log(self._active_name()).append(frame(payload))

    def checkpoint(self, version: int, tensors: Mapping[str, Tensor],
                   meta: Mapping[str, Any] | None = None) -> Checkpoint:
        """Atomically write the state at ``version`` and record it in the lineage; later appends go to a
        new journal segment."""
        name = f"ckpt-{version:012d}"
        if name in self._checkpoint_names():
            raise ValueError(f"checkpoint for version {version} already exists in {self.dir}")
        previous = self.latest_valid()
        cid = tensors_id(tensors, self.config_hash)
        seen = self._seen_since(self._complete_lineage(), dict(meta or {}))
        manifest = {"id": cid, "parent": previous.id if previous else None, "version": version,
                    "config_hash": self.config_hash, "meta": dict(meta or {}), "tensors": "tensors.safetensors",
                    "created": time.time(), "projection": projection_digest(self.config_hash, tensors),
                    "seen": seen}
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        if self.local:
            final = self._write_local(name, cpu, cid, manifest)
        else:
            final = self._write_committed(name, cpu, cid, manifest)
        self._log(self._active_name()).touch()
        if self.local:
            fsync_dir(self.dir)
        self._append_lineage(self._record_from_manifest(manifest, name))  # before pruning forgets it
        self._prune()
        return Checkpoint(cid, manifest["parent"], version, self.config_hash, manifest["meta"], final)

    def _write_local(self, name: str, tensors: dict[str, Tensor], cid: str, manifest: dict[str, Any]) -> Path:
        """A temporary directory, its files fsynced, renamed into place (atomic), the parent fsynced."""
        final = self.dir / name
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.storage.makedirs(tmp.name)
        save_file(tensors, str(tmp / "tensors.safetensors"), metadata={"id": cid})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for file in ("tensors.safetensors", "manifest.json"):
            with open(tmp / file, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(self.dir)
        return final

    def _write_committed(self, name: str, tensors: dict[str, Tensor], cid: str,
                         manifest: dict[str, Any]) -> RemotePath:
        """An object store's checkpoint: a torn earlier attempt removed, the tensors and the manifest
        put, then the commit marker, last."""
        self.storage.remove_tree(name)
        self.storage.write_bytes(f"{name}/tensors.safetensors", save(tensors, metadata={"id": cid}))
        self.storage.write_bytes(f"{name}/manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        self.storage.write_bytes(f"{name}/{COMMIT}", cid.encode())
        return self._path(name)

    def _record_from_manifest(self, manifest: Mapping[str, Any], name: str) -> LineageRecord:
        """The lineage record of the kept checkpoint ``name`` (see :meth:`LineageRecord.from_manifest`)."""
        if self.local:
            return LineageRecord.from_manifest(manifest, self.dir / name)
        sizes = self.storage.listing(name)
        seen = manifest.get("seen") or {}
        pushes, nbytes = reported_seen(manifest.get("meta") or {})
        created = manifest.get("created") or self.storage.modified(f"{name}/manifest.json")
        return LineageRecord(manifest["id"], manifest.get("parent"), int(manifest["version"]),
                             manifest["config_hash"], time=created, pushes=seen.get("pushes", pushes),
                             bytes=seen.get("bytes", nbytes), records=seen.get("records"),
                             journal_bytes=seen.get("journal_bytes"), counted_from=seen.get("counted_from"),
                             projection=manifest.get("projection"),
                             size=sum(s for n, s in sizes.items() if s is not None and n != COMMIT),
                             recorded=False, path=self._path(name))

    def _read_manifest(self, name: str) -> dict[str, Any]:
        return json.loads(self.storage.read_bytes(f"{name}/manifest.json"))

    # ------------------------------------------------------------------ lineage
    def _read_lineage(self, *, repair: bool) -> tuple[list[LineageRecord], list[str]]:
        if self.local:
            return read_lineage(self.dir, repair=repair)
        log = self._log(LINEAGE)
        records, end, warnings = parse_lineage(log.read(), repair=repair)
        if warnings and repair:
            log.cut(end)
        return records, warnings

    def _append_lineage(self, record: LineageRecord) -> None:
        if self.local:
            append_lineage(self.dir, record)
        else:
            self._log(LINEAGE).append(frame(json.dumps(record.to_json(), sort_keys=True).encode()))

    def _complete_lineage(self) -> list[LineageRecord]:
        """``lineage.log``'s records after recording every kept checkpoint newer than its last one (a
        store from before lineage, or a crash between a checkpoint's rename and its record)."""
        records, _ = self._read_lineage(repair=True)
        last = records[-1].version if records else -1
        for name in self._checkpoint_names():
            if int(name[5:]) > last:
                try:
                    rec = self._record_from_manifest(self._read_manifest(name), name)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # an unreadable manifest: recovery skips it too
                self._append_lineage(rec)
                records.append(rec)
        return records

    def _segment_counts(self, name: str) -> tuple[int, int]:
        """(records, payload bytes) of a journal segment: local, from the frame headers; an object
        store's, from its objects' sizes (each holds one frame)."""
        if self.local:
            return count_frames(self.dir / name)
        sizes = self._log(name).sizes()
        return len(sizes), sum(sizes) - FRAME.size * len(sizes)

    def _seen_since(self, lineage: list[LineageRecord], meta: dict[str, Any]) -> dict[str, Any]:
        """Pushes and bytes seen up to now: the journal records since the newest checkpoint added to what
        its lineage record counted (counting restarts there when it has none), and what ``meta`` reports."""
        dirs = self._checkpoint_names()
        start = int(dirs[-1][5:]) if dirs else 0
        n, nbytes = self._segment_counts(f"journal-{start:012d}.log")
        base = next((r for r in reversed(lineage) if r.version == start), None) if dirs else None
        if not dirs:
            counted = (0, 0, 0)
        elif base is not None and base.records is not None and base.counted_from is not None:
            counted = (base.records, base.journal_bytes or 0, base.counted_from)
        else:
            counted = (0, 0, start)
        records, journal_bytes, counted_from = counted[0] + n, counted[1] + nbytes, counted[2]
        pushes, sent = reported_seen(meta)
        return {"pushes": pushes, "bytes": sent if sent is not None else journal_bytes if records else None,
                "records": records, "journal_bytes": journal_bytes, "counted_from": counted_from}

    def lineage(self) -> Lineage:
        """Every checkpoint this store has written as far as its lineage goes, oldest first, with kept
        ones marked by their ``path`` (read only: nothing is repaired)."""
        records, warnings = self._read_lineage(repair=False)
        kept: dict[tuple[int, str], Path] = {}
        for name in self._checkpoint_names():
            try:
                rec = self._record_from_manifest(self._read_manifest(name), name)
            except (OSError, ValueError, KeyError, TypeError) as e:
                warnings.append(f"{name}/manifest.json: unreadable ({type(e).__name__}: {e})")
                continue
            kept[(rec.version, rec.id)] = self._path(name)
            if not any((r.version, r.id) == (rec.version, rec.id) for r in records):
                records.append(rec)
        records.sort(key=lambda r: r.version)
        for r in records:
            r.path = kept.get((r.version, r.id))
        complete = bool(records) and records[0].parent is None
        if not self._log(LINEAGE).exists() and records:
            warnings.append(f"no {LINEAGE} (a store written before lineage): the chain starts at the oldest "
                            f"kept checkpoint, version {records[0].version}")
        return Lineage(records, complete, warnings)

    def _prune(self) -> None:
        dirs = self._checkpoint_names()
        keep = dirs[-self.keep :]
        for d in dirs[: -self.keep]:
            if not self.local:
                self.storage.remove(f"{d}/{COMMIT}")  # first: a half-deleted checkpoint is not a committed one
            self.storage.remove_tree(d)
        oldest = int(keep[0][5:]) if keep else 0
        for seg in self._segment_names():
            if int(seg[8:-4]) < oldest:
                self._log(seg).remove()
                self._logs.pop(seg, None)

    # ------------------------------------------------------------------ reading
    def _load_checkpoint(self, name: str) -> tuple[Checkpoint, dict[str, Tensor]]:
        manifest = self._read_manifest(name)
        if manifest.get("config_hash") != self.config_hash:
            raise ValueError(f"checkpoint {name} was written with config hash {manifest.get('config_hash')!r}, "
                             f"this run has {self.config_hash!r}: resume with the same config")
        if self.local:
            tensors = load_file(str(self.dir / name / manifest["tensors"]))
        else:
            tensors = load(self.storage.read_bytes(f"{name}/{manifest['tensors']}"))
        if tensors_id(tensors, self.config_hash) != manifest["id"]:
            raise OSError(f"checkpoint {name}: tensors do not match the manifest id (corrupt)")
        return Checkpoint(manifest["id"], manifest["parent"], int(manifest["version"]), manifest["config_hash"],
                          manifest.get("meta", {}), self._path(name)), tensors

    def check_checkpoint(self, path: str | Path) -> list[str]:
        """Re-read one checkpoint directory (on an object store: its URL or name) and say what is wrong
        with it (empty: nothing): an unreadable manifest or tensor file, tensors that do not hash to the
        manifest's id, a recorded projection digest the tensors do not give, a config hash other than
        this store's."""
        if self.local:
            path = Path(path)
            read = lambda file: (path / file).read_bytes()  # noqa: E731
        else:
            name = str(path).rstrip("/").rpartition("/")[2]
            read = lambda file: self.storage.read_bytes(f"{name}/{file}")  # noqa: E731
        return checkpoint_problems(path, read, self.config_hash)

    def latest_valid(self) -> Checkpoint | None:
        """The newest checkpoint whose id verifies (None: none does). Raises ``ValueError`` when it was
        written under another config hash."""
        for name in reversed(self._checkpoint_names()):
            try:
                return self._load_checkpoint(name)[0]
            except ValueError:
                raise
            except Exception:
                continue
        return None

    def _read_segment(self, seg: str, warnings: list[str], *, last: bool,
                      repair: bool = True) -> list[tuple[dict, dict]]:
        """The records of one segment. A problem stops the replay there, with a warning; in the ``last``
        segment it is a record never acknowledged, cut off when ``repair``."""
        log = self._log(seg)
        frames, end, problem = read_frames(log.read())
        records, offset = [], end
        for at, payload in frames:
            try:
                records.append(decode(payload, self.limits))
            except WireError as e:
                problem, offset = f"an undecodable record ({e})", at
                break
        if problem is not None:
            warnings.append(f"{seg}: {problem} at byte {offset}; "
                            + ("cut off (never acknowledged)" if last else "replay stops here"))
            if last and repair:
                log.cut(offset)
        return records

    def check_journal(self) -> list[str]:
        """Every journal segment parsed and decoded without changing it; one line per problem found
        (a torn tail of the newest segment included: recovery would cut it off)."""
        problems: list[str] = []
        segments = self._segment_names()
        for i, seg in enumerate(segments):
            self._read_segment(seg, problems, last=i == len(segments) - 1, repair=False)
        return problems

    def recover(self) -> Recovery:
        """The newest verified checkpoint plus every journal record after it, in order."""
        warnings: list[str] = []
        chosen, tensors = None, None
        for name in reversed(self._checkpoint_names()):
            try:
                chosen, tensors = self._load_checkpoint(name)
                break
            except ValueError:
                raise
            except Exception as e:
                warnings.append(f"{name}: unreadable or corrupt, skipped ({type(e).__name__}: {e})")
        start = chosen.version if chosen else -1
        segments = [s for s in self._segment_names() if int(s[8:-4]) >= max(start, 0)]
        records = []
        for i, seg in enumerate(segments):
            records += self._read_segment(seg, warnings, last=i == len(segments) - 1)
        return Recovery(chosen, tensors, records, warnings)
