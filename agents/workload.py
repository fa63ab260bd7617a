"""One agent's stream: documents from its data source, tokenized by the model's tokenizer.

The documents (train and held-out) come from :func:`agents.sources.documents_for`
(stdlib packages, synthetic streams, the user's files, JSONL or datasets). Each train
document is one context: the agent takes ``steps_per_context`` batches of random
windows from it, then moves to the next. The held-out documents give fixed evaluation
windows. Windows carry the bytes each target token covers (:class:`agents.text.Windows`),
so bits per byte is per byte of text whatever the tokenizer. Deterministic given the
seed, in every process.

Live documents (``Learn``, :mod:`cluster.inbox`): with a ``feed`` attached, a context boundary takes
the feed's next document instead of the workload's, for the feed's ``share`` of the contexts while it
has any (a credit of ``share`` per boundary, capped at one context). The feed's cursor (the last
document opened), the open document and the counts of documents, bytes and steps learned from it are
part of :meth:`Workload.state_dict`, so a resumed agent reopens what its checkpoint had open and
takes each document once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from agents.config import WorkloadConfig
from agents.sources import AgentDocuments, documents_for
from agents.text import ByteTokenizer, Encoded, Tokenizer, Windows, eval_windows, sample_windows
from agents.topology import AgentSpec


class Feed(Protocol):
    """Documents sent to the agent live (:class:`cluster.inbox.Inbox`): each has ``seq``, ``text``, ``source``;
    ``share`` is the fraction of contexts they take while any are queued (read at every boundary)."""

    share: float

    def next_after(self, cursor: int) -> Any | None:
        """The first document after sequence number ``cursor`` (None: none queued yet)."""

    def document(self, seq: int) -> Any:
        """Document ``seq`` (``KeyError`` when it is not held)."""


class Workload:
    """One agent's stream: contexts of training windows, and fixed held-out windows.

    ``documents`` replaces the agent's own (``documents_for(cfg, spec)``), e.g. the union of several
    agents' documents for a central oracle. The held-out windows are ``cfg.eval_windows`` windows of
    ``cfg.seq_len + 1`` tokens spread through all held-out documents (:func:`agents.text.eval_positions`).
    """

    def __init__(self, cfg: WorkloadConfig, spec: AgentSpec, tokenizer: Tokenizer | None = None,
                 documents: AgentDocuments | None = None) -> None:
        self.cfg, self.spec = cfg, spec
        self.tokenizer = tokenizer or ByteTokenizer()
        digest = hashlib.sha256(f"{cfg.seed}/{spec.id}".encode()).digest()  # stable across processes
        self.gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        self.documents = documents or documents_for(cfg, spec)
        encoded = [self.tokenizer.encode_with_bytes(d.text) for d in self.documents.held_out]
        self.held_out: Windows = eval_windows(encoded, cfg.seq_len, cfg.eval_windows)
        self.context = -1
        self.step_in_context = cfg.steps_per_context  # the first next_batch opens context 0
        self._data: Encoded | None = None
        self.feed: Feed | None = None  # live documents: the worker attaches the agent's inbox
        # cursor: the last feed document opened; open: the one being learned (0: a workload document)
        self.fed: dict[str, Any] = {"cursor": 0, "open": 0, "credit": 0.0, "docs": 0, "bytes": 0, "steps": 0}
        self.feed_text = ""  # the text of the feed document being learned ('' in a workload document)

    @property
    def source(self) -> str:
        """Where the current context's document came from ('' before the first batch)."""
        if self.fed["open"]:
            return f"inbox #{self.fed['open']}"
        return self.documents.train[self.context % len(self.documents.train)].source if self.context >= 0 else ""

    def _open(self, context: int) -> Encoded:
        doc = self.documents.train[context % len(self.documents.train)]
        return self.tokenizer.encode_with_bytes(doc.text)

    def next_batch(self) -> tuple[Windows, bool]:
        """(B windows of T+1 tokens, whether a new context started with this batch)."""
        boundary = self.step_in_context >= self.cfg.steps_per_context
        if boundary:
            self._data = self._next_context()
            self.step_in_context = 0
        self.step_in_context += 1
        self.fed["steps"] += bool(self.fed["open"])
        return sample_windows(self._data, self.cfg.batch_size, self.cfg.seq_len, self.gen), boundary

    def _next_context(self) -> Encoded:
        """The next context's tokens: the feed's next document when its share is due, else the workload's."""
        doc = self._due_feed_document()
        if doc is not None:
            self.fed.update(open=doc.seq, cursor=doc.seq, docs=self.fed["docs"] + 1,
                            bytes=self.fed["bytes"] + len(doc.text.encode("utf-8")))
            self.feed_text = doc.text
            return self.tokenizer.encode_with_bytes(doc.text)
        self.fed["open"], self.feed_text = 0, ""
        self.context += 1
        return self._open(self.context)

    def _due_feed_document(self) -> Any | None:
        share = self.feed.share if self.feed is not None else 0.0
        if share <= 0:
            return None
        credit = min(1.0, self.fed["credit"] + share)  # capped: an idle feed saves up no burst
        doc = self.feed.next_after(self.fed["cursor"]) if credit >= 1.0 - 1e-9 else None
        self.fed["credit"] = credit - (doc is not None)
        return doc

    def state_dict(self) -> dict:
        """Where the stream is: context, step in it, the sampler's RNG state, and the feed's cursor and counts."""
        return {"context": self.context, "step_in_context": self.step_in_context, "rng": self.gen.get_state(),
                "fed": dict(self.fed)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a context open on a feed document is reopened from the feed
        (``ValueError`` when none is attached, ``KeyError`` when it no longer holds the document)."""
        self.context, self.step_in_context = int(state["context"]), int(state["step_in_context"])
        self.gen.set_state(state["rng"])
        self.fed.update(state.get("fed", {}))  # checkpoints from before the inbox have none
        if self.fed["open"]:
            if self.feed is None:
                raise ValueError(f"agent {self.spec.id}: its checkpoint is learning inbox document "
                                 f"{self.fed['open']} but no inbox is attached")
            self.feed_text = self.feed.document(int(self.fed["open"])).text
            self._data = self.tokenizer.encode_with_bytes(self.feed_text)
        else:
            self.feed_text = ""
            self._data = self._open(self.context) if self.context >= 0 else None

    def __iter__(self) -> Iterator[tuple[Windows, bool]]:
        while True:
            yield self.next_batch()
