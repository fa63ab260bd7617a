"""An agent's durable inbox: documents sent to it live (``Learn``), journaled before they are acknowledged.

Layout, in the agent's store directory (``agents/<agent id>/inbox/``)::

    segment-000000000001.log   documents 1.. (framed like the level journals)
    segment-000000000513.log   the next segment, from document 513 on
    cursor.json                 the agent's consumed cursor (live) and its checkpointed one
    settings.json               learn.share and learn.max_inbox_bytes, as the writer was configured
    .lock                       writers and compaction take it (``flock``)

A record is ``length | crc32 | payload`` (:func:`cluster.lineage.frame`) whose payload is a wire
payload (:func:`cluster.wire.encode`) without tensors and with the meta ``seq, text, source, time``.
:meth:`Inbox.append` writes a whole batch of documents with one ``write`` and returns after fsync
(and after the directory's fsync when it started a segment), so an acknowledged document survives
a crash; a torn tail (a crash mid-append, never acknowledged) is cut off by the next writer under
the lock. Documents are numbered 1, 2, ... without gaps. Readers (the agent) never write a segment:
they stop at a tail still being written.

Exactly once: the agent's cursor (the last document it opened as a context) lives in the agent's
checkpoint (:mod:`agents.workload`). ``cursor.json`` only mirrors it: ``consumed`` is the live
cursor, from which the writer measures the inbox depth (unconsumed bytes, bounded by
``max_bytes``); ``durable`` is the oldest cursor of the agent's kept checkpoints, and only
segments wholly at or below it are deleted (:meth:`Inbox.release`), so a resume from any kept
checkpoint finds every document after its cursor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.lineage import frame, fsync_dir, read_frames
from cluster.wire import WireError, decode, encode

INBOX = "inbox"  # the inbox's directory inside an agent's store
SEGMENT_BYTES = 4 << 20  # a new segment starts past this size, so consumed ones can be deleted
MAX_DOCUMENT_BYTES = 1 << 20  # the wire decoder's longest string: no document may be longer


class InboxFull(Exception):
    """A batch that would take the inbox's unconsumed bytes past its limit; nothing of it was queued."""

    def __init__(self, directory: Path, depth: int, docs: int, adding: int, limit: int) -> None:
        super().__init__(f"inbox {directory} is full: {depth} unconsumed bytes in {docs} documents, adding "
                         f"{adding} bytes would pass learn.max_inbox_bytes={limit}")
        self.depth, self.docs, self.adding, self.limit = depth, docs, adding, limit


@dataclass(frozen=True)
class Document:
    """One queued document: its sequence number (1, 2, ...), its text, its source label, when it was queued."""

    seq: int
    text: str
    source: str = ""
    time: float = 0.0

    @property
    def nbytes(self) -> int:
        """UTF-8 bytes of its text."""
        return len(self.text.encode("utf-8"))


@dataclass(frozen=True)
class Receipt:
    """What an append durably queued: the documents' sequence numbers, their bytes, and the inbox's
    unconsumed bytes and documents after it."""

    seqs: list[int]
    nbytes: int
    depth: int
    depth_docs: int


def _segment_start(path: Path) -> int:
    return int(path.stem[8:])


class Inbox:
    """One agent's inbox in ``directory`` (created if missing); see the module doc.

    ``max_bytes``: the most unconsumed bytes an append may leave (None: unbounded).
    """

    def __init__(self, directory: str | Path, *, max_bytes: int | None = None,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        # what this process has parsed: seq -> (segment start, bytes); per segment the parsed end offset
        self._sizes: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._last = 0  # the highest sequence number parsed
        self._settings: tuple[tuple, dict] | None = None  # (file identity, settings) last read

    # ------------------------------------------------------------------ files
    def _segments(self) -> list[Path]:
        segs = [p for p in self.dir.glob("segment-*.log") if p.stem[8:].isdigit()]
        return sorted(segs, key=_segment_start)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _scan(self, *, repair: bool) -> list[Document]:
        """Parse what was appended since this process last looked (every segment when new to it); returns
        the new documents. ``repair`` (only under the lock): cut a torn tail of the last segment."""
        found: list[Document] = []
        segments = self._segments()
        live = {_segment_start(s) for s in segments}
        for start in [s for s in self._ends if s not in live]:  # compacted: forget them
            del self._ends[start]
        self._sizes = {q: n for q, n in self._sizes.items() if any(q >= s for s in live)}
        for i, seg in enumerate(segments):
            start = _segment_start(seg)
            offset = self._ends.get(start, 0)
            with open(seg, "rb") as f:
                f.seek(offset)
                data = f.read()
            frames, end, problem = read_frames(data)
            for at, payload in frames:
                try:
                    doc = _document(payload)
                except (WireError, KeyError, TypeError, ValueError) as e:
                    problem, end = f"an undecodable record ({e})", at
                    break
                found.append(doc)
                self._sizes[doc.seq] = doc.nbytes
                self._last = max(self._last, doc.seq)
            self._ends[start] = offset + end
            if problem is not None and repair and i == len(segments) - 1:
                with open(seg, "r+b") as f:  # never acknowledged: append returns only after fsync
                    f.truncate(offset + end)
                    os.fsync(f.fileno())
        return found

    def read_cursor(self) -> dict[str, int]:
        """``{"consumed": ..., "durable": ...}`` from ``cursor.json`` (zeros when absent or unreadable)."""
        try:
            data = json.loads((self.dir / "cursor.json").read_text())
            return {"consumed": int(data.get("consumed", 0)), "durable": int(data.get("durable", 0))}
        except (OSError, ValueError, TypeError, AttributeError):
            return {"consumed": 0, "durable": 0}

    def _write_json(self, name: str, data: dict) -> None:
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.dir / name)

    # ------------------------------------------------------------------ writing
    def append(self, texts: Sequence[tuple[str, str]]) -> Receipt:
        """Queue ``(text, source)`` documents, all or none, and return after they are durable.

        Raises:
            ValueError: an empty text, or one over :data:`MAX_DOCUMENT_BYTES`.
            InboxFull: the unconsumed bytes would pass ``max_bytes`` (nothing is queued).
        """
        for i, (text, _) in enumerate(texts):
            size = len(text.encode("utf-8"))
            if not size or size > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document {i}: {size} bytes (1 to {MAX_DOCUMENT_BYTES} allowed)")
        adding = sum(len(t.encode("utf-8")) for t, _ in texts)
        if not texts:
            return Receipt([], 0, *self.depth())
        with self._locked():
            self._scan(repair=True)
            consumed = self.read_cursor()["consumed"]
            depth, docs = self._depth(consumed)
            if self.max_bytes is not None and depth + adding > self.max_bytes:
                raise InboxFull(self.dir, depth, docs, adding, self.max_bytes)
            now, first = time.time(), self._last + 1
            records = [frame(encode({}, {"seq": first + i, "text": t, "source": s, "time": now}))
                       for i, (t, s) in enumerate(texts)]
            segments = self._segments()
            path = segments[-1] if segments else None
            if path is None or path.stat().st_size >= self.segment_bytes:
                path = self.dir / f"segment-{first:012d}.log"
            new = not path.exists()
            with open(path, "ab") as f:
                f.write(b"".join(records))
                f.flush()
                os.fsync(f.fileno())
            if new:
                fsync_dir(self.dir)
            self._scan(repair=False)
            depth, docs = self._depth(consumed)
        return Receipt(list(range(first, first + len(texts))), adding, depth, docs)

    def _depth(self, consumed: int) -> tuple[int, int]:
        sizes = [n for q, n in self._sizes.items() if q > consumed]
        return sum(sizes), len(sizes)

    def write_settings(self, share: float, max_bytes: int | None) -> None:
        """Record the writer's ``learn.share`` and ``learn.max_inbox_bytes`` for the agent (atomic; only
        when they changed)."""
        data = {"share": float(share), "max_inbox_bytes": max_bytes}
        if self.settings() != data:
            self._write_json("settings.json", data)

    def settings(self) -> dict | None:
        """What :meth:`write_settings` recorded (None: nothing yet); read again only when the file changed
        (one ``stat`` otherwise: the agent asks every step)."""
        path = self.dir / "settings.json"
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._settings is None or self._settings[0] != key:
                self._settings = (key, json.loads(path.read_text()))
            return self._settings[1]
        except (OSError, ValueError):
            return None

    @property
    def share(self) -> float:
        """``learn.share`` as the writer recorded it (0 until a writer did: nothing can be queued before)."""
        settings = self.settings()
        return float(settings.get("share", 0.0)) if settings else 0.0

    # ------------------------------------------------------------------ reading (the agent)
    def next_after(self, cursor: int) -> Document | None:
        """The first queued document after sequence number ``cursor`` (None: none yet)."""
        if self._last <= cursor:
            self._scan(repair=False)
        return self.document(cursor + 1) if self._last > cursor else None

    def document(self, seq: int) -> Document:
        """Document ``seq``; ``KeyError`` when the inbox does not hold it (never queued, or compacted)."""
        if seq > self._last:
            self._scan(repair=False)
        segments = [s for s in self._segments() if _segment_start(s) <= seq]
        if seq < 1 or not segments:
            raise KeyError(f"inbox {self.dir}: no document {seq}")
        frames, _, _ = read_frames(segments[-1].read_bytes())
        for _, payload in frames:
            doc = _document(payload)
            if doc.seq == seq:
                return doc
        raise KeyError(f"inbox {self.dir}: no document {seq} (last {self._last})")

    def depth(self, consumed: int | None = None) -> tuple[int, int]:
        """(unconsumed bytes, unconsumed documents) after ``consumed`` (default: ``cursor.json``'s)."""
        self._scan(repair=False)
        return self._depth(self.read_cursor()["consumed"] if consumed is None else consumed)

    @property
    def last(self) -> int:
        """The highest sequence number queued (0: none), as of the last look."""
        self._scan(repair=False)
        return self._last

    def consumed(self, cursor: int) -> None:
        """Mirror the agent's live cursor into ``cursor.json`` (the writer's depth counts from it)."""
        state = self.read_cursor()
        if state["consumed"] != cursor:
            self._write_json("cursor.json", {**state, "consumed": cursor})

    def release(self, durable: int) -> int:
        """Record ``durable`` (the oldest cursor any kept checkpoint of the agent holds) and delete the
        segments whose every document is at or below it (never the last one); returns how many went."""
        removed = 0
        with self._locked():
            state = self.read_cursor()
            self._write_json("cursor.json", {**state, "durable": durable})
            segments = self._segments()
            for seg, nxt in zip(segments, segments[1:], strict=False):
                if _segment_start(nxt) <= durable + 1:
                    seg.unlink()
                    removed += 1
            if removed:
                fsync_dir(self.dir)
        return removed


def _document(payload: bytes) -> Document:
    """A record's payload as a :class:`Document` (``WireError``/``KeyError``/``TypeError`` when malformed)."""
    _, meta = decode(payload)
    seq, text = meta["seq"], meta["text"]
    if not isinstance(seq, int) or not isinstance(text, str):
        raise TypeError(f"record with seq {seq!r} and a {type(text).__name__} text")
    return Document(seq, text, str(meta.get("source", "")), float(meta.get("time", 0.0)))
