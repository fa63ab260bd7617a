"""Tracking every N steps (``CircuitTracker.update(blocks, steps=N)``, ``circuits.context_track_every``)."""

import pytest
import torch

from layers.circuits import CircuitsConfig, CircuitTracker


def unit(n, seed):
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def context_stream(steps: int, seed: int):
    """A context level's B over one context: a circuit that grows from 0 as the level learns, a
    transient one (steps 3-8), one whose sign flips every 5 steps, and noise (orthogonal directions)."""
    gen = torch.Generator().manual_seed(seed)
    us = torch.linalg.qr(torch.randn(48, 3, generator=gen))[0].T  # (3, 48), orthonormal rows
    ws = torch.linalg.qr(torch.randn(16, 3, generator=gen))[0].T  # (3, 16)
    for t in range(1, steps + 1):
        b = min(t, 6) / 3 * torch.outer(us[0], ws[0]) + 0.01 * torch.randn(48, 16, generator=gen)
        if 3 <= t <= 8:
            b = b + 1.5 * torch.outer(us[1], ws[1])
        b = b + 1.0 * (-1) ** (t // 5) * torch.outer(us[2], ws[2])
        yield b, (us[0], ws[0])


def track(stream, every: int, count_steps: bool = True) -> CircuitTracker:
    """Update every ``every`` steps and at the end, as the agent does before a boundary's promotion."""
    tracker, last, items = CircuitTracker(), 0, list(stream)
    for i, (b, _) in enumerate(items, start=1):
        if i % every == 0 or i == len(items):
            tracker.update({"m": b}, steps=i - last if count_steps else 1)
            last = i
    return tracker


def test_an_update_of_n_steps_is_n_updates_of_the_same_blocks():
    b = {"m": 2 * torch.outer(unit(32, 0), unit(8, 1))}
    one, many = CircuitTracker(), CircuitTracker()
    one.update(b)
    many.update(b)
    one.update(b, steps=4)
    for _ in range(4):
        many.update(b)
    (a,), (c,) = one.all(), many.all()
    torch.testing.assert_close(a.traces, c.traces, rtol=1e-6, atol=1e-9)  # s is a float32 projection
    assert (a.age, a.missing) == (c.age, c.missing) == (5, 0)
    assert a.score == pytest.approx(c.score, abs=1e-6)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        one.update(b, steps=0)


@pytest.mark.parametrize("every", [1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_fires_at_the_default_and_coarser_cadences(every, seed):
    """Over a 20-step context the growing circuit is the one candidate at every cadence up to 4."""
    tracker = track(context_stream(20, seed), every)
    (_, (u, w)) = next(iter(context_stream(1, seed)))
    cands = tracker.candidates()
    assert len(cands) == 1, [(c.score, c.strength, c.age) for c in cands]
    assert abs(float(cands[0].u @ u)) * abs(float(cands[0].w @ w)) > 0.95
    assert cands[0].age == 20  # ages count steps, whatever the cadence


def test_counting_updates_instead_of_steps_would_lose_it():
    """The failure ``steps`` prevents: updated every 4 steps, a 20-step context gives 5 updates, below
    min_age (10), so an update-counting tracker would promote nothing."""
    assert CircuitsConfig().min_age == 10
    assert track(context_stream(20, 0), 4, count_steps=False).candidates() == []
    assert len(track(context_stream(20, 0), 4).candidates()) == 1


def test_the_cadence_is_validated():
    assert CircuitsConfig().context_track_every >= 1
    with pytest.raises(ValueError, match="circuits.context_track_every"):
        CircuitsConfig(context_track_every=0)
