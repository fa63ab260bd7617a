"""What every source yields: documents (text + where it came from), split into train and held out.

Torch-free and free of heavy imports: shared by every kind of source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, overload

T = TypeVar("T")


class WorkloadError(ValueError):
    """The workload's data cannot be used; the message names the file, line or row, and the field."""


@dataclass(frozen=True)
class Document:
    """One document: one context of training, or one held-out text.

    Attributes:
        text: the decoded text (strict UTF-8; line endings kept as they are in the file).
        source: where it came from: a file path, ``path:LINE`` for JSONL, ``DIR[row N]`` for a
            dataset row, ``synthetic:<agent id>[<context>]`` for a generated stream.
    """

    text: str
    source: str


@dataclass(frozen=True)
class AgentDocuments:
    """One agent's documents.

    Attributes:
        train: one context per document, in a fixed order (random access and ``len``; may read
            each document when it is accessed).
        held_out: fixed evaluation documents, disjoint from ``train``.
    """

    train: Sequence[Document]
    held_out: Sequence[Document]


class LazyDocuments(Sequence[Document]):
    """Documents made when accessed: subclasses give ``__len__`` and ``_load(i)`` for ``0 <= i < len``.

    Indexing normalises negative indices and raises ``IndexError`` out of range (so iteration
    stops); a slice gives a list. Nothing is cached: a context is opened once per
    ``steps_per_context`` steps, and caching every document would hold the whole corpus.
    """

    def _load(self, index: int) -> Document:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Document: ...

    @overload
    def __getitem__(self, index: slice) -> list[Document]: ...

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            return [self._load(i) for i in range(n)[index]]
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"document {index} out of range ({n} documents)")
        return self._load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} documents)"


def decode(data: bytes, where: str) -> str:
    """``data`` as strict UTF-8 (a BOM is kept, so the text encodes back to the same bytes).

    Raises:
        WorkloadError: not UTF-8; names ``where`` and the byte offset of the first bad byte.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WorkloadError(f"{where}: not UTF-8 text (byte {e.start}: {e.reason}); convert it to UTF-8 "
                            "(e.g. iconv -f latin1 -t utf-8) or leave it out") from None


class FileDocuments(LazyDocuments):
    """Whole files as documents, read and decoded when accessed; ``source`` is the path."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> Document:
        path = self.paths[index]
        return Document(decode(path.read_bytes(), str(path)), str(path))


def split_every(items: Sequence[T], every: int) -> tuple[list[T], list[T]]:
    """``(train, held_out)``: items at index ``every-1, 2*every-1, ...`` are held out, the rest train.

    Order is kept in both; the two are disjoint and together cover ``items``.
    """
    if every < 2:
        raise ValueError(f"held_out_every must be >= 2, got {every}")
    items = list(items)
    return ([x for i, x in enumerate(items) if i % every != every - 1],
            [x for i, x in enumerate(items) if i % every == every - 1])


def check_split(agent: str, train: Sequence, held_out: Sequence, every: int, what: str) -> str | None:
    """A message when ``agent``'s train or held-out part is empty (``what`` names its unit), else None."""
    if train and held_out:
        return None
    total = len(train) + len(held_out)
    return (f"agent {agent!r}: {total} {what}, so its {'held-out' if not held_out else 'train'} part is empty "
            f"(every {every}th is held out, workload.held_out_every={every}; "
            f"an agent needs at least {every})")


def check_file_split(agent: str, docs: AgentDocuments, every: int, what: str) -> str | None:
    """Read and decode every file of ``docs`` (file-backed parts); then :func:`check_split`.

    Raises:
        WorkloadError: a file is not UTF-8 (the first one found).
    """
    for part in (docs.train, docs.held_out):
        for path in part.paths:
            decode(path.read_bytes(), str(path))
    return check_split(agent, docs.train, docs.held_out, every, what)

# agent, team and domain names become actor names and run-directory paths (domain/team/agent)
_NAME = re.compile(r"[^\x00-\x1f\x7f/\\]{1,128}")


def check_name(value: object, where: str, field: str) -> str:
    """A name read from the data (str, or int turned into str), safe as a path component.

    Raises:
        WorkloadError: not a str/int, empty, over 128 characters, containing ``/``, ``\\`` or a
            control character, starting with ``.`` or with surrounding whitespace.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WorkloadError(f"{where}: field {field!r} must be a string (or integer) name, "
                            f"got {type(value).__name__}: {repr(value)[:80]}")
    name = str(value)
    if not _NAME.fullmatch(name) or name.startswith(".") or name != name.strip():
        raise WorkloadError(f"{where}: field {field!r}: {repr(name)[:80]} is not a usable name (1-128 "
                            "characters, no '/', '\\' or control characters, not starting with '.' or with spaces "
                            "around)")
    return name


def check_text(value: object, where: str, field: str) -> str:
    """A record's text: a non-empty string (not only whitespace).

    Raises:
        WorkloadError: missing (``None``), not a string, or empty; names ``where`` and ``field``.
    """
    if value is None:
        raise WorkloadError(f"{where}: field {field!r} is missing or null (workload.text_field)")
    if not isinstance(value, str):
        raise WorkloadError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise WorkloadError(f"{where}: field {field!r} is empty")
    return value


class InterleavedDocuments(LazyDocuments):
    """Several agents' documents as one stream, one document of each in turn (a central learner's data).

    Document ``i`` is document ``(i // k) % len(parts[i % k])`` of part ``i % k`` (k parts): every part
    gets every k-th context, and a shorter part starts over while a longer one goes on, so each part's
    share of the contexts is 1/k whatever its size. ``len`` is ``k * max(len(part))``.
    """

    def __init__(self, parts: Sequence[Sequence[Document]]) -> None:
        if not parts or any(len(p) == 0 for p in parts):
            raise ValueError(f"InterleavedDocuments: every part needs a document, got sizes {[len(p) for p in parts]}")
        self.parts = list(parts)

    def __len__(self) -> int:
        return len(self.parts) * max(len(p) for p in self.parts)

    def _load(self, index: int) -> Document:
        part = self.parts[index % len(self.parts)]
        return part[(index // len(self.parts)) % len(part)]


def union_documents(parts: Sequence[AgentDocuments]) -> AgentDocuments:
    """The documents of several agents as one agent's: train interleaved (:class:`InterleavedDocuments`),
    held out one after another (disjoint from train, as each part's are)."""
    held: list[Document] = [d for p in parts for d in p.held_out]
    return AgentDocuments(train=InterleavedDocuments([p.train for p in parts]), held_out=held)
