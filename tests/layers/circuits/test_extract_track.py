import math

import pytest
import torch

from layers.circuits import GOLDEN, CircuitsConfig, CircuitTracker, extract, stability_score


def unit(n, seed):
    v = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_extract_strongest_first_above_the_floor():
    u1, w1, u2, w2 = unit(32, 1), unit(8, 2), unit(32, 3), unit(8, 4)
    noise = 1e-3 * torch.randn(32, 8, generator=torch.Generator().manual_seed(5))
    b = 3 * torch.outer(u1, w1) + 1 * torch.outer(u2, w2) + noise
    found = extract(b, min_energy=0.01)
    assert len(found) == 2
    assert found[0].sigma == pytest.approx(3, rel=5e-2) and found[1].sigma == pytest.approx(1, rel=5e-2)
    assert abs(float(found[0].u @ u1)) > 0.99 and abs(float(found[0].w @ w1)) > 0.99
    for c in found:
        assert float(c.w[c.w.abs().argmax()]) > 0  # canonical sign
    torch.testing.assert_close(sum(c.matrix() for c in found), b, atol=1e-2, rtol=0)
    assert extract(torch.zeros(4, 3)) == []
    with pytest.raises(ValueError, match="2-D"):
        extract(torch.zeros(3))


def test_timescales_and_memory():
    cfg = CircuitsConfig(traces=5)
    assert cfg.timescales() == pytest.approx([GOLDEN**k for k in range(5)])
    assert CircuitsConfig(spacing="linear", ratio=1.0, traces=3).timescales() == [1.0, 2.0, 3.0]
    tracker = CircuitTracker(cfg)
    tracker.update({"m": 2 * torch.outer(unit(16, 0), unit(4, 1))})
    (c,) = tracker.all()
    assert c.traces.shape == (5,)  # fixed memory: K numbers per circuit


def test_stability_score_range():
    assert stability_score(torch.tensor([1.0, 1.0, 1.0])) == 1.0
    assert stability_score(torch.tensor([1.0, 0.1, 0.0])) == pytest.approx(0.05)
    assert stability_score(torch.tensor([1.0, -0.5, 0.5])) == pytest.approx(0.25)
    assert stability_score(torch.tensor([0.0, 1.0])) == 0.0


def _stream(kind: str, steps: int, seed: int = 0):
    u, w = unit(32, seed), unit(8, seed + 100)
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        if kind == "persistent":
            s = 2.0
        elif kind == "transient":
            s = 2.0 if t < 5 else 0.0
        else:  # flipping
            s = 2.0 * (-1) ** (t // 3)
        yield s * torch.outer(u, w) + 0.01 * torch.randn(32, 8, generator=gen)


def test_persistent_circuit_keeps_its_identity_and_becomes_a_candidate():
    tracker = CircuitTracker(CircuitsConfig(min_age=10))
    first_candidate = None
    for t, b in enumerate(_stream("persistent", 60)):
        tracker.update({"m": b})
        if first_candidate is None and tracker.candidates():
            first_candidate = t
    strongest = max(tracker.all(), key=lambda c: abs(c.strength))
    assert strongest.age == 60 and strongest.id == 0
    assert strongest.score > 0.9
    assert first_candidate is not None and 10 <= first_candidate < 60


@pytest.mark.parametrize("kind", ["transient", "flipping"])
def test_transient_and_flipping_circuits_never_become_candidates(kind):
    tracker = CircuitTracker()
    for b in _stream(kind, 80):
        tracker.update({"m": b})
        assert not [c for c in tracker.candidates() if abs(c.strength) > 0.5], kind
    if kind == "flipping":
        strongest = max(tracker.all(), key=lambda c: c.age)
        assert strongest.age == 80  # one identity across the flips (sign-aligned matching)
        assert strongest.score < 0.5


def test_faded_circuit_is_dropped_after_max_missing():
    tracker = CircuitTracker(CircuitsConfig(max_missing=3))
    for b in _stream("transient", 12):
        tracker.update({"m": b})
    assert all(c.strength == 0 or abs(c.strength) < 0.1 for c in tracker.all())
    assert not [c for c in tracker.all() if c.age > 5 and c.missing > 3]


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="circuits.spacing"):
        CircuitsConfig(spacing="fibonacci")
    with pytest.raises(ValueError, match="circuits.ratio"):
        CircuitsConfig(ratio=1.0)
    assert math.isclose(CircuitsConfig().ratio, GOLDEN)
