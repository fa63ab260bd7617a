"""One agent's stream: documents from its data source, tokenized by the model's tokenizer.

The documents (train and held-out) come from :func:`agents.sources.documents_for`
(stdlib packages, synthetic streams, the user's files, JSONL or datasets). Each train
document is one context: the agent takes ``steps_per_context`` batches of random
windows from it, then moves to the next. The held-out documents give fixed evaluation
windows. Windows carry the bytes each target token covers (:class:`agents.text.Windows`),
so bits per byte is per byte of text whatever the tokenizer. Deterministic given the
seed, in every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from agents.config import WorkloadConfig
from agents.sources import AgentDocuments, documents_for
from agents.text import ByteTokenizer, Encoded, Tokenizer, Windows, eval_windows, sample_windows
from agents.topology import AgentSpec


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

    @property
    def source(self) -> str:
        """Where the current context's document came from ('' before the first batch)."""
        return self.documents.train[self.context % len(self.documents.train)].source if self.context >= 0 else ""

    def _open(self, context: int) -> Encoded:
        doc = self.documents.train[context % len(self.documents.train)]
        return self.tokenizer.encode_with_bytes(doc.text)

    def next_batch(self) -> tuple[Windows, bool]:
        """(B windows of T+1 tokens, whether a new context started with this batch)."""
        boundary = self.step_in_context >= self.cfg.steps_per_context
        if boundary:
            self.context += 1
            self._data = self._open(self.context)
            self.step_in_context = 0
        self.step_in_context += 1
        return sample_windows(self._data, self.cfg.batch_size, self.cfg.seq_len, self.gen), boundary

    def state_dict(self) -> dict:
        """Where the stream is: context, step in it, and the sampler's RNG state."""
        return {"context": self.context, "step_in_context": self.step_in_context, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.context, self.step_in_context = int(state["context"]), int(state["step_in_context"])
        self.gen.set_state(state["rng"])
        self._data = self._open(self.context) if self.context >= 0 else None

    def __iter__(self) -> Iterator[tuple[Windows, bool]]:
        while True:
            yield self.next_batch()
