"""Top-activating snippets: the pure math picks the contexts where a circuit reads most strongly."""

import pytest
import torch

from layers.circuits.snippets import Snippet, activations, cut_snippet, top_positions, top_snippets


def planted(n=4, t=16, r=6, seed=0):
    """(h, w): small noise with a large read along w planted at (window 2, position 5), a smaller one at
    (0, 9) and a large read against w at (3, 3)."""
    gen = torch.Generator().manual_seed(seed)
    h = 0.01 * torch.randn(n, t, r, generator=gen)
    w = torch.randn(r, generator=gen)
    w = w / w.norm()
    h[2, 5] += 3.0 * w
    h[0, 9] += 1.0 * w
    h[3, 3] -= 5.0 * w
    return h, w


def test_the_planted_context_comes_first_and_the_sign_follows_the_strength():
    h, w = planted()
    act = activations(h, w, strength=0.7)
    assert act.shape == (4, 16)
    assert top_positions(act, 2)[0][:2] == (2, 5) and top_positions(act, 2)[1][:2] == (0, 9)
    assert top_positions(activations(h, w, strength=-0.7), 1)[0][:2] == (3, 3)  # a reversed circuit reads the other way


def test_positions_are_spread_and_non_finite_scores_are_skipped():
    scores = torch.zeros(2, 20)
    scores[0, 10], scores[0, 11], scores[1, 0] = 5.0, 4.0, 3.0
    scores[1, 5] = float("nan")
    top = top_positions(scores, 3, min_gap=4)
    assert [p[:2] for p in top] == [(0, 10), (1, 0), (0, 0)]  # then the ties, first in reading order
    assert all(not (n == 0 and t == 11) for n, t, _ in top)  # too close to (0, 10)
    assert all(v == v for *_, v in top)
    with pytest.raises(ValueError, match="scores must be"):
        top_positions(torch.zeros(3), 1)


def test_snippet_bytes_surround_the_focus_token():
    tokens = [bytes([c]) for c in b"def add(a, b):\n    return a + b\n"]
    position = tokens.index(b"r")
    before, focus, after = cut_snippet(tokens, position, before=6, after=3)
    assert (before, focus, after) == (b":\n    ", b"r", b"etu")
    assert before + focus + after in b"".join(tokens)
    with pytest.raises(ValueError, match="outside"):
        cut_snippet(tokens, len(tokens))


def test_top_snippets_name_their_source_and_show_the_highlight():
    h, w = torch.zeros(2, 8, 3), torch.tensor([0.0, 1.0, 0.0])
    h[1, 2, 1], h[0, 4, 1] = 9.0, 2.0
    tokens = [[bytes([c]) for c in b"abcdefgh"], [bytes([c]) for c in b"ijklmnop"]]
    best = top_snippets(activations(h, w), tokens, 1, before=2, after=2, sources=["red/x", "blue/y"])[0]
    assert isinstance(best, Snippet) and best.source == "blue/y"
    assert (best.before, best.focus, best.after) == (b"ij", b"k", b"lm") and best.text() == "ij[k]lm"
    with pytest.raises(ValueError, match="one per score"):
        top_snippets(activations(h, w), tokens[:1], 1)
