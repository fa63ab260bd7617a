"""Framed records and the append-only logs that hold them (journals, lineage logs, inboxes).

A frame is ``length (4 bytes, big-endian) | crc32 (4 bytes) | payload``: a reader finds where
the records end, and a torn or corrupted tail (a crash mid-append, never acknowledged) is
detected rather than decoded. :class:`FrameLog` is one such log on a :class:`cluster.storage.Storage`:
a file appended and fsynced on a local disk, a prefix of one object per append on an object store.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.storage import Storage

FRAME = struct.Struct(">II")  # length, crc32
SEGMENT = "{:012d}.rec"  # one object of a FrameLog on an object store


def frame(payload: bytes) -> bytes:
    """``payload`` framed: its length, its crc32, itself."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int, str | None]:
    """The framed records at the start of ``data`` as (offset, payload), where they end, and the
    problem found there (None: ``data`` ends cleanly)."""
    out, offset = [], 0
    while offset < len(data):
        if offset + FRAME.size > len(data):
            return out, offset, "a torn record header"
        length, crc = FRAME.unpack_from(data, offset)
        payload = data[offset + FRAME.size : offset + FRAME.size + length]
        if len(payload) < length:
            return out, offset, "a torn record"
        if zlib.crc32(payload) != crc:
            return out, offset, "a record with a bad checksum"
        out.append((offset, payload))
        offset += FRAME.size + length
    return out, offset, None


def count_frames(path: Path) -> tuple[int, int]:
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



class FrameLog:
    """An append-only log of framed records (:func:`frame`) named ``name`` in ``storage``.

    Local: one file, appended and fsynced. Object store: the prefix ``name/`` holding one segment
    object per append (``000000000001.rec``, ...), read back in order. A single writer per log
    (a level's server, an agent's worker): the next segment number is taken from a listing once
    and counted on in memory.
    """

    def __init__(self, storage: Storage, name: str) -> None:
        self.storage, self.name = storage, name
        self._next: int | None = None

    def _objects(self) -> list[tuple[str, int]]:
        """(segment object name, size), in order (object stores)."""
        found = [(n, s) for n, s in self.storage.listing(self.name).items()
                 if s is not None and n.endswith(".rec") and n[:-4].isdigit()]
        return sorted(found, key=lambda e: int(e[0][:-4]))

    def exists(self) -> bool:
        """True when the log has been created (a local file, or at least one segment object)."""
        return self.storage.exists(self.name) if self.storage.local else bool(self._objects())

    def append(self, framed: bytes) -> None:
        """Durably add ``framed`` (one or more whole frames) at the end; returns once it is durable."""
        if self.storage.local:
            self.storage.append(self.name, framed)
            return
        if self._next is None:
            objects = self._objects()
            self._next = int(objects[-1][0][:-4]) + 1 if objects else 1
        self.storage.write_bytes(f"{self.name}/{SEGMENT.format(self._next)}", framed)
        self._next += 1

    def touch(self) -> None:
        """Create the log empty when missing (local; an object store's empty log is no objects)."""
        if self.storage.local and not self.storage.exists(self.name):
            self.storage.append(self.name, b"")

    def read(self) -> bytes:
        """Every byte of the log in order (empty when it does not exist)."""
        if self.storage.local:
            try:
                return self.storage.read_bytes(self.name)
            except FileNotFoundError:
                return b""
        names = [f"{self.name}/{n}" for n, _ in self._objects()]
        return b"".join(self.storage.read_many(names))

    def sizes(self) -> list[int]:
        """Object stores: the size of each segment object, in order (each holds whole frames)."""
        return [s for _, s in self._objects()]

    def cut(self, offset: int) -> None:
        """Drop everything from byte ``offset`` on (a torn or bad tail). Object store: the segments
        starting at or after it are deleted, one straddling it is rewritten up to it."""
        if self.storage.local:
            self.storage.truncate(self.name, offset)
            return
        at = 0
        for n, size in self._objects():
            name = f"{self.name}/{n}"
            if at >= offset:
                self.storage.remove(name)
            elif at + size > offset:
                self.storage.write_bytes(name, self.storage.read_bytes(name)[: offset - at])
            at += size
        self._next = None

    def remove(self) -> None:
        """Delete the whole log."""
        if self.storage.local:
            self.storage.remove(self.name)
        else:
            self.storage.remove_tree(self.name)
        self._next = None
