"""Durable state of one shared level: atomic checkpoints plus an append-only journal.

Directory layout::

    ckpt-000000000042/tensors.safetensors   the level's tensors at version 42
    ckpt-000000000042/manifest.json         id, parent, version, config hash, meta, time, seen, projection
    journal-000000000042.log                records accepted after version 42
    lineage.log                             one record per checkpoint ever written (kept or pruned)

A journal record is ``length (4 bytes, big-endian) | crc32 (4 bytes) | payload`` with the
payload in the wire format (``cluster.wire``); ``append`` returns only after fsync, so an
acknowledged record survives a crash. A checkpoint is written into a temporary
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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from cluster.lineage import (
    FRAME,
    LINEAGE,
    Lineage,
    LineageRecord,
    append_lineage,
    frame,
    fsync_dir,
    projection_digest,
    read_frames,
    read_lineage,
    reported_seen,
)
from cluster.wire import DEFAULT_LIMITS, Limits, WireError, decode, encode


def tensors_id(tensors: Mapping[str, Tensor], config_hash: str) -> str:
    """SHA-256 over the config hash and every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(config_hash.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\x00{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _count_frames(path: Path) -> tuple[int, int]:
    """(records, payload bytes) of a journal segment, from the frame headers only (0, 0: no file)."""
    n = size = 0
    if not path.exists():
        return 0, 0
    total = path.stat().st_size
    with open(path, "rb") as f:
        while (header := f.read(FRAME.size)) and len(header) == FRAME.size:
            length = FRAME.unpack(header)[0]
            if f.tell() + length > total:
                break  # a torn tail: never acknowledged
            n, size = n + 1, size + length
            f.seek(length, os.SEEK_CUR)
    return n, size


@dataclass
class Checkpoint:
    """One checkpoint's manifest: its id (SHA-256), its parent's id, the version it holds, the config
    hash it was written under, its meta (JSON) and its directory."""

    id: str
    parent: str | None
    version: int
    config_hash: str
    meta: dict[str, Any]
    path: Path


@dataclass
class Recovery:
    """What a restart gets back: the checkpoint (or None), its tensors, then the journal records in order."""

    checkpoint: Checkpoint | None
    tensors: dict[str, Tensor] | None
    records: list[tuple[dict[str, Tensor], dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class LevelStore:
    """Checkpoints and journal of one level, in ``directory`` (created if missing)."""

    def __init__(self, directory: str | Path, *, config_hash: str, keep: int = 2,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if keep < 1:
            raise ValueError("LevelStore: keep must be >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_hash, self.keep, self.limits = config_hash, keep, limits

    # ------------------------------------------------------------------ layout
    def _checkpoint_dirs(self) -> list[Path]:
        dirs = [p for p in self.dir.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit()]
        return sorted(dirs, key=lambda p: int(p.name[5:]))

    def _segments(self) -> list[Path]:
        segs = [p for p in self.dir.glob("journal-*.log") if p.stem[8:].isdigit()]
        return sorted(segs, key=lambda p: int(p.stem[8:]))

    def _active_segment(self) -> Path:
        dirs = self._checkpoint_dirs()
        start = int(dirs[-1].name[5:]) if dirs else 0
        return self.dir / f"journal-{start:012d}.log"

    # ------------------------------------------------------------------ writing
    def append(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Durably append one record (e.g. an accepted push); returns after fsync."""
        payload = encode(tensors, meta, self.limits)
        path = self._active_segment()
        new = not path.exists()
        with open(path, "ab") as f:
            f.write(frame(payload))
            f.flush()
            os.fsync(f.fileno())
        if new:
            fsync_dir(self.dir)

    def checkpoint(self, version: int, tensors: Mapping[str, Tensor],
                   meta: Mapping[str, Any] | None = None) -> Checkpoint:
        """Atomically write the state at ``version`` and record it in the lineage; later appends go to a
        new journal segment."""
        final = self.dir / f"ckpt-{version:012d}"
        if final.exists():
            raise ValueError(f"checkpoint for version {version} already exists in {self.dir}")
        previous = self.latest_valid()
        cid = tensors_id(tensors, self.config_hash)
        seen = self._seen_since(self._complete_lineage(), dict(meta or {}))
        manifest = {"id": cid, "parent": previous.id if previous else None, "version": version,
                    "config_hash": self.config_hash, "meta": dict(meta or {}), "tensors": "tensors.safetensors",
                    "created": time.time(), "projection": projection_digest(self.config_hash, tensors),
                    "seen": seen}
        tmp = self.dir / f".tmp-ckpt-{version:012d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / "tensors.safetensors"),
                  metadata={"id": cid})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for name in ("tensors.safetensors", "manifest.json"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(self.dir)
        self._active_segment().touch()
        fsync_dir(self.dir)
        append_lineage(self.dir, LineageRecord.from_manifest(manifest, final))  # before pruning forgets it
        self._prune()
        return Checkpoint(cid, manifest["parent"], version, self.config_hash, manifest["meta"], final)

    def _complete_lineage(self) -> list[LineageRecord]:
        """``lineage.log``'s records after recording every kept checkpoint newer than its last one (a
        store from before lineage, or a crash between a checkpoint's rename and its record)."""
        records, _ = read_lineage(self.dir, repair=True)
        last = records[-1].version if records else -1
        for path in self._checkpoint_dirs():
            if int(path.name[5:]) > last:
                try:
                    rec = LineageRecord.from_manifest(json.loads((path / "manifest.json").read_text()), path)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # an unreadable manifest: recovery skips it too
                append_lineage(self.dir, rec)
                records.append(rec)
        return records

    def _seen_since(self, lineage: list[LineageRecord], meta: dict[str, Any]) -> dict[str, Any]:
        """Pushes and bytes seen up to now: the journal records since the newest checkpoint added to what
        its lineage record counted (counting restarts there when it has none), and what ``meta`` reports."""
        dirs = self._checkpoint_dirs()
        start = int(dirs[-1].name[5:]) if dirs else 0
        n, nbytes = _count_frames(self.dir / f"journal-{start:012d}.log")
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
        records, warnings = read_lineage(self.dir, repair=False)
        kept: dict[tuple[int, str], Path] = {}
        for path in self._checkpoint_dirs():
            try:
                manifest = json.loads((path / "manifest.json").read_text())
                rec = LineageRecord.from_manifest(manifest, path)
            except (OSError, ValueError, KeyError, TypeError) as e:
                warnings.append(f"{path.name}/manifest.json: unreadable ({type(e).__name__}: {e})")
                continue
            kept[(rec.version, rec.id)] = path
            if not any((r.version, r.id) == (rec.version, rec.id) for r in records):
                records.append(rec)
        records.sort(key=lambda r: r.version)
        for r in records:
            r.path = kept.get((r.version, r.id))
        complete = bool(records) and records[0].parent is None
        if not (self.dir / LINEAGE).exists() and records:
            warnings.append(f"no {LINEAGE} (a store written before lineage): the chain starts at the oldest "
                            f"kept checkpoint, version {records[0].version}")
        return Lineage(records, complete, warnings)

    def _prune(self) -> None:
        dirs = self._checkpoint_dirs()
        keep = dirs[-self.keep :]
        for d in dirs[: -self.keep]:
            shutil.rmtree(d)
        oldest = int(keep[0].name[5:]) if keep else 0
        for seg in self._segments():
            if int(seg.stem[8:]) < oldest:
                seg.unlink()

    # ------------------------------------------------------------------ reading
    def _load_checkpoint(self, path: Path) -> tuple[Checkpoint, dict[str, Tensor]]:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("config_hash") != self.config_hash:
            raise ValueError(f"checkpoint {path.name} was written with config hash {manifest.get('config_hash')!r}, "
                             f"this run has {self.config_hash!r}: resume with the same config")
        tensors = load_file(str(path / manifest["tensors"]))
        if tensors_id(tensors, self.config_hash) != manifest["id"]:
            raise OSError(f"checkpoint {path.name}: tensors do not match the manifest id (corrupt)")
        return Checkpoint(manifest["id"], manifest["parent"], int(manifest["version"]), manifest["config_hash"],
                          manifest.get("meta", {}), path), tensors

    def check_checkpoint(self, path: str | Path) -> list[str]:
        """Re-read one checkpoint directory and say what is wrong with it (empty: nothing): an unreadable
        manifest or tensor file, tensors that do not hash to the manifest's id, a recorded projection
        digest the tensors do not give, a config hash other than this store's."""
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            cid, written_under = manifest["id"], manifest["config_hash"]
            tensors = load_file(str(path / manifest.get("tensors", "tensors.safetensors")))
        except Exception as e:  # noqa: BLE001 - JSON, a missing key, or safetensors' own SafetensorError
            return [f"{path}: unreadable ({type(e).__name__}: {e})"]
        problems = []
        actual = tensors_id(tensors, written_under)
        if actual != cid:
            problems.append(f"{path / 'tensors.safetensors'}: the tensors hash to {actual[:16]}..., "
                            f"manifest.json says id {cid[:16]}... (corrupt)")
        recorded = manifest.get("projection")
        if recorded is not None and recorded != projection_digest(written_under, tensors):
            problems.append(f"{path / 'manifest.json'}: projection digest {recorded[:16]}... does not match the "
                            f"tensors' ({projection_digest(written_under, tensors)[:16]}...)")
        if written_under != self.config_hash:
            problems.append(f"{path / 'manifest.json'}: written under config hash {written_under[:16]}..., "
                            f"expected {self.config_hash[:16]}...")
        return problems

    def latest_valid(self) -> Checkpoint | None:
        """The newest checkpoint whose id verifies (None: none does). Raises ``ValueError`` when it was
        written under another config hash."""
        for path in reversed(self._checkpoint_dirs()):
            try:
                return self._load_checkpoint(path)[0]
            except ValueError:
                raise
            except Exception:
                continue
        return None

    def _read_segment(self, seg: Path, warnings: list[str], *, last: bool,
                      repair: bool = True) -> list[tuple[dict, dict]]:
        """The records of one segment. A problem stops the replay there, with a warning; in the ``last``
        segment it is a record never acknowledged, cut off when ``repair``."""
        frames, end, problem = read_frames(seg.read_bytes())
        records, offset = [], end
        for at, payload in frames:
            try:
                records.append(decode(payload, self.limits))
            except WireError as e:
                problem, offset = f"an undecodable record ({e})", at
                break
        if problem is not None:
            warnings.append(f"{seg.name}: {problem} at byte {offset}; "
                            + ("cut off (never acknowledged)" if last else "replay stops here"))
            if last and repair:
                with open(seg, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
        return records

    def check_journal(self) -> list[str]:
        """Every journal segment parsed and decoded without changing it; one line per problem found
        (a torn tail of the newest segment included: recovery would cut it off)."""
        problems: list[str] = []
        segments = self._segments()
        for i, seg in enumerate(segments):
            self._read_segment(seg, problems, last=i == len(segments) - 1, repair=False)
        return problems

    def recover(self) -> Recovery:
        """The newest verified checkpoint plus every journal record after it, in order."""
        warnings: list[str] = []
        chosen, tensors = None, None
        for path in reversed(self._checkpoint_dirs()):
            try:
                chosen, tensors = self._load_checkpoint(path)
                break
            except ValueError:
                raise
            except Exception as e:
                warnings.append(f"{path.name}: unreadable or corrupt, skipped ({type(e).__name__}: {e})")
        start = chosen.version if chosen else -1
        segments = [s for s in self._segments() if int(s.stem[8:]) >= max(start, 0)]
        records = []
        for i, seg in enumerate(segments):
            records += self._read_segment(seg, warnings, last=i == len(segments) - 1)
        return Recovery(chosen, tensors, records, warnings)
