"""An agent's durable inbox: documents sent to it live (``Learn``), journaled before they are acknowledged.

Layout, in the agent's store (``agents/<agent id>/inbox/``; a local directory or a URI prefix, see
:mod:`cluster.storage`)::

    segment-000000000001.log   documents 1.. (framed like the level journals)
    segment-000000000513.log   the next segment, from document 513 on
    cursor.json                 the agent's consumed cursor (live) and its checkpointed one
    settings.json               learn.share and learn.max_inbox_bytes, as the writer was configured
    .lock                       local only: writers and compaction take it (``flock``)

A record is ``length | crc32 | payload`` (:func:`cluster.lineage.frame`) whose payload is a wire
payload (:func:`cluster.wire.encode`) without tensors and with the meta ``seq, text, source, time``.
Documents are numbered 1, 2, ... without gaps; a segment is named by its first document. Readers
(the agent) never write a segment.

Local: :meth:`Inbox.append` writes a whole batch of documents with one ``write`` under the lock and
returns after fsync (and after the directory's fsync when it started a segment), so an acknowledged
document survives a crash; a torn tail (a crash mid-append, never acknowledged) is cut off by the
next writer under the lock; readers stop at a tail still being written.

Object stores (``s3://...``: no append, no lock): every append is one new segment object holding the
batch, written by a *conditional put* (:meth:`cluster.storage.Storage.create`: it fails when the name
exists), which is durable and whole once it returns (no torn tail can exist). Two writers that race
for the same next number cannot both win: the loser lists again, checks the depth against what the
winner queued, and takes the number after it, so numbering stays gapless and every acknowledged
document is in exactly one object. On a filesystem without a conditional put (``gs://``, ...)
:meth:`Inbox.append` refuses (:class:`InboxUnsupported`): two writers could overwrite each other's
acknowledged documents. ``cursor.json`` and ``settings.json`` are single puts (atomic). An append
costs a LIST, a GET of ``cursor.json`` and of each segment new to the writer, and one PUT.

Exactly once: the agent's cursor (the last document it opened as a context) lives in the agent's
checkpoint (:mod:`agents.workload`). ``cursor.json`` only mirrors it: ``consumed`` is the live
cursor, from which the writer measures the inbox depth (unconsumed bytes, bounded by
``max_bytes``); ``durable`` is the last document every kept checkpoint of the agent is done with
(its cursor, less the document it has open: a resume reopens that one), and only segments wholly at
or below it are deleted (:meth:`Inbox.release`; never the last one, so the next
number is never lost), so a resume from any kept checkpoint finds every document after its cursor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from cluster.frames import frame, read_frames
from cluster.storage import RemotePath, Storage, fsync_dir, is_uri, split_options, with_options
from cluster.wire import WireError, decode, encode

INBOX = "inbox"  # the inbox's directory inside an agent's store
SEGMENT_BYTES = 4 << 20  # a new local segment starts past this size, so consumed ones can be deleted
MAX_DOCUMENT_BYTES = 1 << 20  # the wire decoder's longest string: no document may be longer
SETTINGS_TTL_S = 2.0  # object stores: settings.json is read again at most this often (a GET each time)
RACES = 32  # object stores: appends another writer may win before this one gives up (nothing queued)
_SEGMENT = re.compile(r"segment-(\d{12})\.log")
_COLLAPSED_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # pathlib turns s3://b/x into s3:/b/x


class InboxFull(Exception):
    """A batch that would take the inbox's unconsumed bytes past its limit; nothing of it was queued."""

    reason = "full"  # the refusal's label (cluster.metrics, swarm_inbox_refusals)

    def __init__(self, directory: object, depth: int, docs: int, adding: int, limit: int) -> None:
        super().__init__(f"inbox {directory} is full: {depth} unconsumed bytes in {docs} documents, adding "
                         f"{adding} bytes would pass learn.max_inbox_bytes={limit}")
        self.depth, self.docs, self.adding, self.limit = depth, docs, adding, limit


class DocumentRefused(ValueError):
    """A document the inbox cannot hold (``reason``: ``empty`` or ``too large``); nothing was queued."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InboxUnsupported(ValueError):
    """An append to an inbox on a filesystem without a conditional put (see the module doc)."""

    reason = "unsupported store"


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


def inbox_location(store: str | os.PathLike) -> str | Path:
    """The inbox of the agent store ``store`` (a path, or a URI with its options, as
    :meth:`swarm.rundir.RunDir.agent_store` gives it): ``<store>/inbox``, options kept."""
    text = os.fspath(store)
    if not is_uri(text):
        return Path(text) / INBOX
    base, options = split_options(text)
    return with_options(f"{base.rstrip('/')}/{INBOX}", options)


class Inbox:
    """One agent's inbox at ``location`` (created if missing): a local directory, a URI (options in its
    query string) or a :class:`cluster.storage.Storage`; see the module doc. ``ValueError`` for a ``Path``
    holding a URI that pathlib collapsed (``s3:/bucket/...``): pass a URI as a string.
    ``max_bytes``: the most unconsumed bytes an append may leave (None: unbounded); ``segment_bytes``:
    local segments end past it (an object store's segment is one append)."""

    def __init__(self, location: str | os.PathLike | Storage, *, max_bytes: int | None = None,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        if isinstance(location, PurePath) and location.parts and _COLLAPSED_URI.fullmatch(location.parts[0]):
            raise ValueError(f"inbox location {location}: a URI turned into a path (pathlib keeps one '/' "
                             f"after '{location.parts[0]}'); pass the URI as a string")
        self.storage = location if isinstance(location, Storage) else Storage(location)
        self.local = self.storage.local
        self.storage.makedirs()
        # where another process opens the same inbox: an absolute path, or the URI with its options
        self.location = str(self.storage.path.resolve()) if self.local else \
            (os.fspath(location) if isinstance(location, str) else self.storage.url)
        self.dir: Path = self.storage.path if self.local else RemotePath(self.storage)  # type: ignore[assignment]
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        # what this process has parsed: seq -> bytes; per segment the parsed end offset
        self._sizes: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._last = 0  # the highest sequence number parsed
        self._settings: tuple[object, dict | None] | None = None  # (file identity or read time, settings)

    def __repr__(self) -> str:
        return f"Inbox({self.storage.url!r})"

    # ------------------------------------------------------------------ files
    def _segments(self) -> list[tuple[int, str, int | None]]:
        """(first document, name, size) of every segment, in order."""
        found = []
        for name, size in self.storage.listing().items():
            m = _SEGMENT.fullmatch(name)
            if m and size is not None:
                found.append((int(m[1]), name, size))
        return sorted(found)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.local:  # no lock there: appends claim their segment with a conditional put
            yield
            return
        with open(self.storage.path / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _read_segment(self, name: str, offset: int) -> bytes | None:
        """A segment's bytes from ``offset`` (None: deleted since it was listed: compacted)."""
        try:
            if self.local:
                with open(self.storage.path / name, "rb") as f:
                    f.seek(offset)
                    return f.read()
            return self.storage.read_bytes(name)[offset:]
        except FileNotFoundError:
            return None

    def _scan(self, *, repair: bool) -> list[Document]:
        """Parse what was appended since this process last looked (every segment when new to it); returns
        the new documents. ``repair`` (local, only under the lock): cut a torn tail of the last segment."""
        found: list[Document] = []
        segments = self._segments()
        live = {start for start, _, _ in segments}
        for start in [s for s in self._ends if s not in live]:  # compacted: forget them
            del self._ends[start]
        self._sizes = {q: n for q, n in self._sizes.items() if any(q >= s for s in live)}
        for i, (start, name, size) in enumerate(segments):
            offset = self._ends.get(start, 0)
            if offset >= (size or 0):  # nothing new (an object store's segment never changes once put)
                continue
            data = self._read_segment(name, offset)
            if data is None:
                continue
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
            if problem is not None and repair and self.local and i == len(segments) - 1:
                # never acknowledged: append returns only after fsync
                self.storage.truncate(name, offset + end)
        return found

    def read_cursor(self) -> dict[str, int]:
        """``{"consumed": ..., "durable": ...}`` from ``cursor.json`` (zeros when absent or unreadable)."""
        try:
            data = json.loads(self.storage.read_bytes("cursor.json"))
            return {"consumed": int(data.get("consumed", 0)), "durable": int(data.get("durable", 0))}
        except (OSError, ValueError, TypeError, AttributeError):
            return {"consumed": 0, "durable": 0}

    def _write_json(self, name: str, data: dict) -> None:
        self.storage.write_atomic(name, json.dumps(data).encode())

    # ------------------------------------------------------------------ writing
    def append(self, texts: Sequence[tuple[str, str]]) -> Receipt:
        """Queue ``(text, source)`` documents, all or none, and return after they are durable.

        Raises:
            DocumentRefused: an empty text, or one over :data:`MAX_DOCUMENT_BYTES` (a ``ValueError``).
            InboxFull: the unconsumed bytes would pass ``max_bytes`` (nothing is queued).
            InboxUnsupported: an object store without a conditional put (a ``ValueError``).
            OSError: the write failed, or (object stores) :data:`RACES` other appends won in a row.
        """
        for i, (text, _) in enumerate(texts):
            size = len(text.encode("utf-8"))
            if not size or size > MAX_DOCUMENT_BYTES:
                raise DocumentRefused(f"document {i}: {size} bytes (1 to {MAX_DOCUMENT_BYTES} allowed)",
                                      "too large" if size else "empty")
        if not texts:
            return Receipt([], 0, *self.depth())
        if not self.storage.exclusive:
            raise InboxUnsupported(f"inbox {self.storage.url}: its filesystem offers no conditional put, so "
                                   "two writers could overwrite each other's acknowledged documents; keep "
                                   "run.storage local or on S3 to send documents to this run")
        adding = sum(len(t.encode("utf-8")) for t, _ in texts)
        with self._locked():
            for _ in range(RACES):
                self._scan(repair=True)
                consumed = self.read_cursor()["consumed"]
                depth, docs = self._depth(consumed)
                if self.max_bytes is not None and depth + adding > self.max_bytes:
                    raise InboxFull(self.storage.url, depth, docs, adding, self.max_bytes)
                now, first = time.time(), self._last + 1
                data = b"".join(frame(encode({}, {"seq": first + i, "text": t, "source": s, "time": now}))
                                for i, (t, s) in enumerate(texts))
                if self._write(first, data):
                    break
            else:
                raise OSError(f"inbox {self.storage.url}: {RACES} other appends won the next segment in a "
                              "row; nothing of this one was queued, try again")
            self._scan(repair=False)
            depth, docs = self._depth(consumed)
        return Receipt(list(range(first, first + len(texts))), adding, depth, docs)

    def _write(self, first: int, data: bytes) -> bool:
        """Durably add ``data`` (documents ``first``..) at the end; False: another writer took ``first``
        (object stores), nothing written."""
        if not self.local:
            try:
                self.storage.create(f"segment-{first:012d}.log", data)
            except FileExistsError:
                return False
            return True
        segments = self._segments()
        if segments and (segments[-1][2] or 0) < self.segment_bytes:
            name = segments[-1][1]
        else:
            name = f"segment-{first:012d}.log"
        path = self.storage.path / name
        new = not path.exists()
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if new:
            fsync_dir(self.storage.path)
        return True

    def _depth(self, consumed: int) -> tuple[int, int]:
        sizes = [n for q, n in self._sizes.items() if q > consumed]
        return sum(sizes), len(sizes)

    def write_settings(self, share: float, max_bytes: int | None) -> None:
        """Record the writer's ``learn.share`` and ``learn.max_inbox_bytes`` for the agent (atomic; only
        when they changed)."""
        data = {"share": float(share), "max_inbox_bytes": max_bytes}
        if self.settings() != data:
            self._write_json("settings.json", data)
            self._settings = None

    def settings(self) -> dict | None:
        """What :meth:`write_settings` recorded (None: nothing yet). Local: read again only when the file
        changed (one ``stat`` otherwise: the agent asks every step); object store: at most every
        :data:`SETTINGS_TTL_S` seconds."""
        if not self.local:
            if self._settings is None or time.monotonic() - self._settings[0] >= SETTINGS_TTL_S:
                try:
                    data = json.loads(self.storage.read_bytes("settings.json"))
                except (OSError, ValueError):
                    data = None
                self._settings = (time.monotonic(), data)
            return self._settings[1]
        path = self.storage.path / "settings.json"
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
        segments = [name for start, name, _ in self._segments() if start <= seq]
        data = self._read_segment(segments[-1], 0) if seq >= 1 and segments else None
        if data is None:
            raise KeyError(f"inbox {self.storage.url}: no document {seq}")
        frames, _, _ = read_frames(data)
        for _, payload in frames:
            doc = _document(payload)
            if doc.seq == seq:
                return doc
        raise KeyError(f"inbox {self.storage.url}: no document {seq} (last {self._last})")

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
        """Record ``durable`` (the last document every kept checkpoint of the agent is done with) and delete
        the segments whose every document is at or below it (never the last one); returns how many went."""
        removed = 0
        with self._locked():
            state = self.read_cursor()
            if state["durable"] != durable:
                self._write_json("cursor.json", {**state, "durable": durable})
            segments = self._segments()
            for (_, name, _), (nxt, _, _) in zip(segments, segments[1:], strict=False):
                if nxt <= durable + 1:
                    self.storage.remove(name)
                    removed += 1
            if removed and self.local:
                fsync_dir(self.storage.path)
        return removed


def _document(payload: bytes) -> Document:
    """A record's payload as a :class:`Document` (``WireError``/``KeyError``/``TypeError`` when malformed)."""
    _, meta = decode(payload)
    seq, text = meta["seq"], meta["text"]
    if not isinstance(seq, int) or not isinstance(text, str):
        raise TypeError(f"record with seq {seq!r} and a {type(text).__name__} text")
    return Document(seq, text, str(meta.get("source", "")), float(meta.get("time", 0.0)))
