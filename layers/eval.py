"""Bits per byte: the one definition every evaluation in the project uses.

Bits per byte of a set of next-token predictions is

    sum over target tokens of -log2 p(target | prefix)
    ---------------------------------------------------
    the UTF-8 bytes those target tokens cover

Pooling over windows or batches sums numerator and denominator separately (a
:class:`Tally`), never averages per-window ratios: windows of unequal byte counts would
otherwise weigh the same.

Every model today reads bytes (token id = byte value), so each target covers one byte and
``target_bytes`` can be left out. A tokenizer whose tokens cover several bytes passes the
byte count of each target token (a tensor shaped like the targets) or the total.

Logits are cast to float32 before the log-softmax, whatever the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)  # nats per bit

ByteCounts = Tensor | int | float | None  # per-target counts shaped like the targets, a total, or one per target


@dataclass(frozen=True)
class Tally:
    """Summed next-token loss in bits and the bytes its targets cover; add tallies to pool exactly."""

    bits: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.bits + other.bits, self.bytes + other.bytes)

    @property
    def bits_per_byte(self) -> float:
        """``bits / bytes``.

        Raises:
            ValueError: no bytes were counted.
        """
        if not self.bytes > 0:
            raise ValueError(f"bits per byte: the targets cover {self.bytes} bytes; need > 0")
        return self.bits / self.bytes


def pooled(tallies: Iterable[Tally]) -> float:
    """Bits per byte over several tallies: sum of bits over sum of bytes."""
    return sum(tallies, Tally()).bits_per_byte


def _check_pair(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and return ``(logits (B, T, V), targets (B, T))``; a single window (T, V)/(T,) gets B = 1."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise ValueError(f"logits and targets must be tensors, got {type(logits).__name__} and "
                         f"{type(targets).__name__}")
    if targets.dim() == 1 and logits.dim() == 2:
        logits, targets = logits.unsqueeze(0), targets.unsqueeze(0)  # (1, T, V), (1, T)
    if logits.dim() != 3:
        raise ValueError(f"logits: expected (B, T, V) or (T, V), got shape {tuple(logits.shape)}")
    if targets.dim() != 2 or tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"targets: expected shape {tuple(logits.shape[:2])} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets: expected integer token ids, got dtype {targets.dtype}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[-1]):
        raise ValueError(f"targets: token ids must lie in [0, {logits.shape[-1]}) (the vocabulary of the logits), "
                         f"got [{int(targets.min())}, {int(targets.max())}]")
    return logits, targets


def _count_bytes(target_bytes: ByteCounts, targets: Tensor, name: str = "target_bytes") -> float:
    """Total bytes covered by ``targets`` (any shape), from ``target_bytes`` as :func:`tally` takes it;
    errors name the caller's argument ``name``."""
    if target_bytes is None:
        total = float(targets.numel())
    elif isinstance(target_bytes, Tensor) and target_bytes.dim() > 0:
        if tuple(target_bytes.shape) != tuple(targets.shape):
            raise ValueError(f"{name}: expected shape {tuple(targets.shape)} (one count per target token) "
                             f"or a scalar total, got shape {tuple(target_bytes.shape)}")
        if target_bytes.dtype == torch.bool or target_bytes.dtype.is_complex:
            raise ValueError(f"{name}: expected a numeric tensor, got dtype {target_bytes.dtype}")
        if bool((target_bytes < 0).any()):
            raise ValueError(f"{name}: byte counts must be >= 0")
        total = float(target_bytes.double().sum())
    elif isinstance(target_bytes, Tensor | Real) and not isinstance(target_bytes, bool):
        total = float(target_bytes)  # a total: 0-d tensor or number
    else:
        raise ValueError(f"{name}: expected a tensor, a number or None, got {type(target_bytes).__name__}")
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"{name}: the targets must cover a finite number of bytes > 0, got {total}")
    return total


def _bits(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, T) next-token loss in bits of checked (B, T, V) logits and (B, T) targets, float32."""
    nats = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    return (nats / LN2).view(targets.shape)


def token_bits(logits: Tensor, targets: Tensor) -> Tensor:
    """Next-token loss of each target in bits, float32, shaped like ``targets``.

    Args:
        logits: (B, T, V) predictions, any float dtype (cast to float32), or (T, V).
        targets: (B, T) integer token ids, or (T,); ``logits[b, t]`` predicts ``targets[b, t]``.

    Returns:
        (B, T) ``-log2 p(targets[b, t])`` (or (T,) for one window). Differentiable: callers
        that only evaluate wrap it in ``torch.no_grad()`` (:func:`tally` does).

    Raises:
        ValueError: shapes that do not match, non-integer targets or ids outside the vocabulary.
    """
    checked_logits, checked_targets = _check_pair(logits, targets)
    return _bits(checked_logits, checked_targets).view(targets.shape)


def tally(logits: Tensor, targets: Tensor, target_bytes: ByteCounts = None) -> Tally:
    """Summed bits and bytes of the next-token predictions ``logits`` of ``targets``, without gradients.

    Args:
        logits: (B, T, V), or (T, V) for one window.
        targets: (B, T) token ids, or (T,).
        target_bytes: UTF-8 bytes each target token covers, a tensor shaped like ``targets``;
            or their total (a number or 0-d tensor); ``None`` means one byte per target
            (byte-level tokenizer).

    Raises:
        ValueError: mismatched shapes, bad target ids, negative byte counts or no bytes at all.
    """
    checked_logits, checked_targets = _check_pair(logits, targets)
    n_bytes = _count_bytes(target_bytes, targets)
    with torch.no_grad():
        bits = _bits(checked_logits, checked_targets)  # (B, T)
        return Tally(float(bits.double().sum()), n_bytes)


def bits_per_byte(logits: Tensor, targets: Tensor, target_bytes: ByteCounts = None) -> float:
    """Bits per byte of one batch of predictions: ``tally(logits, targets, target_bytes).bits_per_byte``.

    ``logits`` (B, T, V) or (T, V); ``targets`` (B, T) or (T,); ``target_bytes`` as in :func:`tally`.
    """
    return tally(logits, targets, target_bytes).bits_per_byte


def model_bits_per_byte(model, windows: Tensor, *, batch_size: int = 16, window_bytes: ByteCounts = None) -> float:
    """Bits per byte of ``model`` on ``windows``, pooled over all of them, without gradients.

    Args:
        model: a causal LM called as ``model(ids).logits`` -> (b, T, V). Its mode
            (``eval()``/``train()``) and enabled levels are the caller's.
        windows: (N, T+1) token ids; each window's first T tokens predict its last T.
        batch_size: windows per forward pass (memory only: the result does not depend on it
            beyond float rounding).
        window_bytes: bytes covered by each target, (N, T); or the total over all windows;
            ``None``: one byte per target.

    Raises:
        ValueError: ``windows`` not (N, T+1) with N >= 1 and T >= 1, ``batch_size`` < 1, or bad byte counts.
    """
    if not isinstance(windows, Tensor) or windows.dim() != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
        shape = tuple(windows.shape) if isinstance(windows, Tensor) else type(windows).__name__
        raise ValueError(f"windows: expected (N, T+1) token ids with N >= 1 and T >= 1, got {shape}")
    if windows.dtype.is_floating_point or windows.dtype.is_complex or windows.dtype == torch.bool:
        raise ValueError(f"windows: expected integer token ids, got dtype {windows.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an int >= 1, got {batch_size!r}")
    n_bytes = _count_bytes(window_bytes, windows[:, 1:], "window_bytes")  # validates before any forward pass
    bits = 0.0
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch_size):
            w = windows[i:i + batch_size]  # (b, T+1)
            logits = model(w[:, :-1]).logits  # (b, T, V)
            bits += tally(logits, w[:, 1:]).bits  # bytes were counted once above
    return Tally(bits, n_bytes).bits_per_byte


def loss_bits_per_byte(loss: Tensor | float, targets: Tensor, target_bytes: ByteCounts = None) -> float:
    """A mean next-token cross-entropy in nats (what ``F.cross_entropy`` returns) as bits per byte.

    For training loops that already hold the loss: no second pass over the logits.
    ``targets`` are the ones the loss was averaged over, (B, T) or any shape; ``target_bytes``
    as in :func:`tally`. With one byte per target this is ``loss / ln 2``.
    """
    if not isinstance(targets, Tensor) or targets.numel() < 1:
        raise ValueError("targets: expected a non-empty tensor of the token ids the loss was averaged over")
    n_bytes = _count_bytes(target_bytes, targets)
    nats = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
    return nats / LN2 * (targets.numel() / n_bytes)
