"""Text to token windows with the model's own tokenizer, keeping the bytes each token covers.

Every learning and evaluation path reads documents through a :class:`Tokenizer`: the
byte tokenizer for models built from config (token id = byte value), the checkpoint's
own tokenizer (``AutoTokenizer``, local files only) for ``model.name_or_path``. Besides
the token ids, a tokenizer returns how many UTF-8 bytes each token covers, so that bits
per byte (:mod:`layers.eval`) is measured per byte of text whatever the vocabulary:
runs with different tokenizers compare.

Byte counts of a document sum to its UTF-8 length exactly. A token is charged the bytes
from the end of the previous token to its own end (offsets from the tokenizer), so a
character split over two byte-level tokens is charged to the first and special tokens
(BOS) cover nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from agents.config import ModelConfig
from layers.eval import loss_bits_per_byte, model_bits_per_byte

BASE_MANIFEST = "swarm_base.json"  # written by `swarm pretrain-base` next to the checkpoint


@dataclass(frozen=True)
class Encoded:
    """One document as tokens: ``ids`` (L,) int64 and ``nbytes`` (L,) int64, UTF-8 bytes per token."""

    ids: Tensor
    nbytes: Tensor

    def __len__(self) -> int:
        return int(self.ids.numel())


class Tokenizer(Protocol):
    """What the text path needs of a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int] | Tensor) -> str: ...

    def encode_with_bytes(self, text: str) -> Encoded: ...


class ByteTokenizer:
    """Bytes are tokens: id = byte value (vocabulary 256, no special tokens); every token covers one byte."""

    vocab_size = 256
    bos_token_id = None
    eos_token_id = None

    def encode(self, text: str | bytes) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else ids
        return bytes(int(i) for i in values).decode("utf-8", errors="replace")

    def encode_with_bytes(self, text: str) -> Encoded:
        data = text.encode("utf-8")
        ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)
        return Encoded(ids, torch.ones_like(ids))


def _utf8_prefix_bytes(text: str) -> np.ndarray:
    """(len(text) + 1,) int64: UTF-8 bytes of ``text[:k]`` for every k."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (codepoints >= 0x80) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    return np.concatenate([[0], np.cumsum(width, dtype=np.int64)])


class HFTokenizer:
    """A checkpoint's fast tokenizer (``tokenizer.json``) behind the :class:`Tokenizer` protocol.

    Documents are encoded with the tokenizer's own special tokens (a BOS where it adds
    one) and no length limit: windows are cut from them afterwards.
    """

    def __init__(self, tokenizer) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__}: a fast tokenizer (tokenizer.json) is needed for byte "
                             "offsets; save the tokenizer with a recent transformers to get one")
        self.hf = tokenizer
        self.vocab_size = len(tokenizer)
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.hf.backend_tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.hf.decode(values, skip_special_tokens=True)

    def encode_with_bytes(self, text: str) -> Encoded:
        enc = self.hf.backend_tokenizer.encode(text)  # no truncation: the backend has no max length
        prefix = _utf8_prefix_bytes(text)
        ends = np.array([0 if special else prefix[end] for (_, end), special
                         in zip(enc.offsets, enc.special_tokens_mask, strict=True)], dtype=np.int64)
        covering = np.flatnonzero(np.array(enc.special_tokens_mask) == 0)
        if covering.size:  # trimmed offsets may stop short of the text's end: the last token takes the rest
            ends[covering[-1]] = prefix[-1]
        ends = np.maximum.accumulate(ends) if ends.size else ends
        nbytes = np.diff(ends, prepend=0)  # bytes from the previous token's end to this one's
        return Encoded(torch.tensor(enc.ids, dtype=torch.long), torch.from_numpy(nbytes))


def encode_bytes(tokenizer: Tokenizer, data: bytes) -> list[int]:
    """Token ids of raw ``data``: the bytes themselves for the byte tokenizer (exact for any bytes),
    else the text they decode to as UTF-8 (invalid sequences replaced)."""
    if isinstance(tokenizer, ByteTokenizer):
        return list(data)
    return tokenizer.encode(data.decode("utf-8", errors="replace"))


def decode_bytes(tokenizer: Tokenizer, ids: Sequence[int] | Tensor) -> bytes:
    """Inverse of :func:`encode_bytes`: the bytes of ``ids`` (special tokens dropped)."""
    if isinstance(tokenizer, ByteTokenizer):
        return bytes(int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids))
    return tokenizer.decode(ids).encode("utf-8")


def load_tokenizer(cfg: ModelConfig) -> Tokenizer:
    """The tokenizer of ``cfg``'s model: bytes for a model built from config (or a base saved without
    a tokenizer by an older ``swarm pretrain-base``), else the checkpoint's own, from local files only.

    Raises:
        ValueError: ``name_or_path`` holds no tokenizer files, or only a slow tokenizer.
    """
    if not cfg.name_or_path:
        return ByteTokenizer()
    path = Path(cfg.name_or_path).expanduser()
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                                        "tokenizer.model"))
    if not has_tokenizer:
        if (path / BASE_MANIFEST).is_file():
            return ByteTokenizer()  # a byte-level base from `swarm pretrain-base` with pretrain.vocab_size 256
        raise ValueError(f"model.name_or_path: {str(path)!r} holds no tokenizer (tokenizer.json or "
                         "tokenizer_config.json); save one with tokenizer.save_pretrained(dir)")
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))


@dataclass(frozen=True)
class Windows:
    """Token windows with the bytes their targets cover.

    ``ids`` (N, T+1) int64: each window's first T tokens predict its last T.
    ``target_bytes`` (N, T) int64: UTF-8 bytes covered by each target token.
    """

    ids: Tensor
    target_bytes: Tensor

    def __post_init__(self) -> None:
        if self.ids.dim() != 2 or tuple(self.target_bytes.shape) != (self.ids.shape[0], self.ids.shape[1] - 1):
            raise ValueError(f"Windows: ids (N, T+1) and target_bytes (N, T) expected, got "
                             f"{tuple(self.ids.shape)} and {tuple(self.target_bytes.shape)}")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, index: slice) -> Windows:
        return Windows(self.ids[index], self.target_bytes[index])

    @property
    def inputs(self) -> Tensor:
        """(N, T) the tokens fed to the model."""
        return self.ids[:, :-1]

    @property
    def targets(self) -> Tensor:
        """(N, T) the tokens predicted."""
        return self.ids[:, 1:]

    def bits_per_byte(self, model, *, batch_size: int = 16) -> float:
        """Bits per byte of ``model`` on these windows, pooled over all of them
        (:func:`layers.eval.model_bits_per_byte` with these byte counts)."""
        return model_bits_per_byte(model, self.ids, batch_size=batch_size, window_bytes=self.target_bytes)

    def loss_bits_per_byte(self, loss: Tensor | float) -> float:
        """A mean cross-entropy (nats) over these windows' targets as bits per byte."""
        return loss_bits_per_byte(loss, self.targets, self.target_bytes)

    @staticmethod
    def cat(parts: Sequence[Windows]) -> Windows:
        """The windows of ``parts`` one after another (same T)."""
        return Windows(torch.cat([p.ids for p in parts]), torch.cat([p.target_bytes for p in parts]))


def sample_windows(doc: Encoded, batch_size: int, seq_len: int, generator: torch.Generator) -> Windows:
    """``batch_size`` random windows of ``seq_len + 1`` tokens of ``doc`` (repeated when shorter)."""
    ids, nbytes = doc.ids, doc.nbytes
    if ids.numel() < 1:
        raise ValueError("sample_windows: the document has no tokens")
    if ids.numel() < seq_len + 1:
        reps = (seq_len + 1) // ids.numel() + 1
        ids, nbytes = ids.repeat(reps), nbytes.repeat(reps)
    starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    return Windows(ids[idx], nbytes[idx][:, 1:])


def eval_positions(lengths: Sequence[int], seq_len: int, max_windows: int) -> list[tuple[int, int]]:
    """Deterministic window starts spread evenly through a set of documents: ``(document, start)`` pairs.

    A window takes ``seq_len + 1`` tokens, so document ``d`` of ``lengths[d]`` tokens offers
    ``lengths[d] - seq_len`` starts (none when shorter). The starts of all documents, one after
    another, are cut into ``n = min(max_windows, total starts)`` equal strata and window ``k`` takes
    the middle of stratum ``k`` (offset ``floor((k + 1/2) * total / n)``). So a file gets windows in
    proportion to its length, every part of every file (not only its top) is read, no start repeats,
    and the windows overlap only when the documents hold fewer than ``n * (seq_len + 1)`` tokens.
    Ordered by document, then start.

    Raises:
        ValueError: ``seq_len`` or ``max_windows`` < 1, or no document is longer than ``seq_len`` tokens.
    """
    if seq_len < 1 or max_windows < 1:
        raise ValueError(f"eval_positions: seq_len and max_windows must be >= 1, got {seq_len} and {max_windows}")
    starts = np.array([max(0, int(n) - seq_len) for n in lengths], dtype=np.int64)  # (D,) starts per document
    total = int(starts.sum())
    if total == 0:
        raise ValueError(f"no evaluation window of {seq_len + 1} tokens fits in the held-out documents "
                         f"({len(starts)} documents, longest {max(lengths, default=0)} tokens)")
    n = min(max_windows, total)
    offsets = (np.arange(n, dtype=np.int64) * 2 + 1) * total // (2 * n)  # (n,) strictly increasing in [0, total)
    ends = np.cumsum(starts)  # (D,) one past the last global start of each document
    docs = np.searchsorted(ends, offsets, side="right")  # (n,) the document holding each offset
    return [(int(d), int(o - (ends[d] - starts[d]))) for d, o in zip(docs, offsets, strict=True)]


def eval_windows(docs: Sequence[Encoded], seq_len: int, max_windows: int) -> Windows:
    """Deterministic evaluation windows spread through ``docs`` (:func:`eval_positions`): ``max_windows``
    windows of ``seq_len + 1`` tokens (fewer only when the documents offer fewer starts).

    Raises:
        ValueError: no document is longer than ``seq_len`` tokens.
    """
    docs = list(docs)  # every document is read: positions depend on all their lengths
    positions = eval_positions([len(d) for d in docs], seq_len, max_windows)
    ids = torch.stack([docs[d].ids[s:s + seq_len + 1] for d, s in positions])  # (N, T+1)
    nbytes = torch.stack([docs[d].nbytes[s + 1:s + seq_len + 1] for d, s in positions])  # (N, T)
    return Windows(ids, nbytes)
