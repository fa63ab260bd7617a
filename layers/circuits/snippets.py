"""What a circuit does: the contexts of held-out text on which it reads most strongly.

A circuit ``sigma u w^T`` of a module's write matrix reads its input in P-space: on a token whose
module input is ``x``, the level writes ``sigma (w . P x) u``. Its *activation* there is
``sign(strength) * (w . P x)``: positive where the circuit pushes in the direction it learned, and
largest on the contexts it responds to. Its top-activating snippets are the tokens of highest
activation, each with a few tokens of text on either side, the token's own bytes highlighted.

Pure tensor math (no model, no data source): :func:`activations` turns captured ``P x`` into
activations, :func:`top_positions` picks the best non-overlapping positions, :func:`cut_snippet`
turns a position into bytes. ``swarm/api/snippets.py`` feeds held-out windows through a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Snippet:
    """One top-activating context: ``before`` + ``focus`` + ``after`` are consecutive bytes of held-out
    text; ``focus`` is the token on which the circuit read ``activation``; ``window`` and ``position``
    say where (window index, token index in it); ``source`` names whose data it came from."""

    before: bytes
    focus: bytes
    after: bytes
    activation: float
    window: int
    position: int
    source: str = ""

    def text(self, marker: tuple[str, str] = ("[", "]")) -> str:
        """The snippet as one line of text with the focus token between ``marker`` (bytes decoded as
        UTF-8 with replacement; newlines and tabs shown as ``\\n`` and ``\\t``)."""
        def show(b: bytes) -> str:
            return b.decode("utf-8", errors="replace").replace("\n", "\\n").replace("\t", "\\t")
        return f"{show(self.before)}{marker[0]}{show(self.focus)}{marker[1]}{show(self.after)}"


def activations(h: Tensor, w: Tensor, strength: float = 1.0) -> Tensor:
    """The circuit's activation at every position: ``sign(strength) * (h @ w)``.

    Args:
        h: (..., R) the module's read-projected inputs ``P x``.
        w: (R,) the circuit's read direction.
        strength: the circuit's signed strength; only its sign matters (0 counts as positive).

    Returns:
        (...) activations, float32.
    """
    if w.dim() != 1 or h.shape[-1] != w.shape[0]:
        raise ValueError(f"activations: h (..., R) and w (R,) expected, got {tuple(h.shape)} and {tuple(w.shape)}")
    sign = -1.0 if strength < 0 else 1.0
    return sign * (h.float() @ w.float())  # (...)


def top_positions(scores: Tensor, k: int, min_gap: int = 8) -> list[tuple[int, int, float]]:
    """The ``k`` highest ``scores`` (N windows, T positions) as ``(window, position, score)``, best first,
    no two in the same window closer than ``min_gap`` positions (so the snippets differ). Non-finite
    scores are skipped. Fewer than ``k`` when fewer positions qualify.
    """
    if scores.dim() != 2:
        raise ValueError(f"top_positions: scores must be (N, T), got shape {tuple(scores.shape)}")
    if k < 0 or min_gap < 1:
        raise ValueError(f"top_positions: need k >= 0 and min_gap >= 1, got k={k} min_gap={min_gap}")
    flat = scores.detach().float().reshape(-1)  # (N*T,)
    n_pos = scores.shape[1]
    order = torch.argsort(flat, descending=True, stable=True).tolist()
    chosen: list[tuple[int, int, float]] = []
    for i in order:
        if len(chosen) >= k:
            break
        value = float(flat[i])
        if value != value or value in (float("inf"), float("-inf")):
            continue
        n, t = divmod(i, n_pos)
        if all(c[0] != n or abs(c[1] - t) >= min_gap for c in chosen):
            chosen.append((n, t, value))
    return chosen


def cut_snippet(tokens: Sequence[bytes], position: int, *, before: int = 24, after: int = 8) -> tuple[bytes, bytes,
                                                                                                         bytes]:
    """``(before, focus, after)`` bytes around token ``position`` of a window whose tokens are ``tokens``
    (each token's bytes): up to ``before`` bytes that precede the token, the token, and up to ``after``
    bytes that follow it. Byte counts, not tokens, so a snippet's length does not depend on the tokenizer.
    """
    if not 0 <= position < len(tokens):
        raise ValueError(f"cut_snippet: position {position} outside the window's {len(tokens)} tokens")
    head = b"".join(tokens[:position])[-before:] if before > 0 else b""
    tail = b"".join(tokens[position + 1:])[:after] if after > 0 else b""
    return head, bytes(tokens[position]), tail


def top_snippets(scores: Tensor, tokens: Sequence[Sequence[bytes]], k: int, *, before: int = 24, after: int = 8,
                 min_gap: int = 8, sources: Sequence[str] | None = None) -> list[Snippet]:
    """The ``k`` top-activating snippets of ``scores`` (N, T) over windows whose tokens' bytes are
    ``tokens[n][t]`` (T per window); ``sources[n]`` names window n's owner. See :func:`top_positions`
    and :func:`cut_snippet`."""
    if len(tokens) != scores.shape[0] or any(len(t) != scores.shape[1] for t in tokens):
        raise ValueError(f"top_snippets: tokens must be {scores.shape[0]} windows of {scores.shape[1]} tokens "
                         "(one per score)")
    out = []
    for n, t, value in top_positions(scores, k, min_gap):
        head, focus, tail = cut_snippet(tokens[n], t, before=before, after=after)
        out.append(Snippet(head, focus, tail, value, n, t, sources[n] if sources is not None else ""))
    return out
