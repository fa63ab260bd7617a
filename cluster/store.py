"""Durable state of one shared level: atomic checkpoints plus an append-only journal.

Directory layout::

    ckpt-000000000042/tensors.safetensors   the level's tensors at version 42
    ckpt-000000000042/manifest.json         id, parent, version, config hash, meta
    journal-000000000042.log                records accepted after version 42

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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from cluster.wire import DEFAULT_LIMITS, Limits, WireError, decode, encode

_FRAME = struct.Struct(">II")  # length, crc32


def tensors_id(tensors: Mapping[str, Tensor], config_hash: str) -> str:
    """SHA-256 over the config hash and every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(config_hash.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\x00{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        path = self._active_segment()
        new = not path.exists()
        with open(path, "ab") as f:
            f.write(frame)
            f.flush()
            os.fsync(f.fileno())
        if new:
            _fsync_dir(self.dir)

    def checkpoint(self, version: int, tensors: Mapping[str, Tensor],
                   meta: Mapping[str, Any] | None = None) -> Checkpoint:
        """Atomically write the state at ``version``; later appends go to a new journal segment."""
        final = self.dir / f"ckpt-{version:012d}"
        if final.exists():
            raise ValueError(f"checkpoint for version {version} already exists in {self.dir}")
        previous = self.latest_valid()
        cid = tensors_id(tensors, self.config_hash)
        manifest = {"id": cid, "parent": previous.id if previous else None, "version": version,
                    "config_hash": self.config_hash, "meta": dict(meta or {}), "tensors": "tensors.safetensors"}
        tmp = self.dir / f".tmp-ckpt-{version:012d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / "tensors.safetensors"),
                  metadata={"id": cid})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for name in ("tensors.safetensors", "manifest.json"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(self.dir)
        self._active_segment().touch()
        _fsync_dir(self.dir)
        self._prune()
        return Checkpoint(cid, manifest["parent"], version, self.config_hash, manifest["meta"], final)

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

    def _read_segment(self, seg: Path, warnings: list[str], *, last: bool) -> list[tuple[dict, dict]]:
        data = seg.read_bytes()
        records, offset = [], 0
        while offset < len(data):
            if offset + _FRAME.size > len(data):
                problem = "a torn record header"
            else:
                length, crc = _FRAME.unpack_from(data, offset)
                payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
                if len(payload) < length:
                    problem = "a torn record"
                elif zlib.crc32(payload) != crc:
                    problem = "a record with a bad checksum"
                else:
                    try:
                        records.append(decode(payload, self.limits))
                    except WireError as e:
                        problem = f"an undecodable record ({e})"
                    else:
                        offset += _FRAME.size + length
                        continue
            warnings.append(f"{seg.name}: {problem} at byte {offset}; "
                            + ("cut off (never acknowledged)" if last else "replay stops here"))
            if last:
                with open(seg, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
            break
        return records

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
