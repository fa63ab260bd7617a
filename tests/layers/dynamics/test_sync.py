"""SyncGate: a test of "the pending sum is more than noise" with a known false-positive rate
(the math note is in docs/dynamics.md)."""

import math

import pytest
import torch

from layers.dynamics import SyncConfig, SyncGate, sync
from layers.dynamics.sync import betainc, drift_pvalue, drift_statistic, null_tail

ALPHA = 0.01


def test_betainc_matches_closed_forms():
    x = torch.tensor([1e-6, 0.01, 0.3, 0.5, 0.9, 0.9999], dtype=torch.float64)
    assert torch.allclose(betainc(x, 0.5, 0.5), 2 / math.pi * torch.asin(x.sqrt()), rtol=1e-10, atol=1e-13)
    assert torch.allclose(betainc(x, 1.0, 3.5), 1 - (1 - x) ** 3.5, rtol=1e-10, atol=1e-13)
    assert torch.allclose(betainc(x, 2.5, 1.0), x**2.5, rtol=1e-10, atol=1e-13)
    assert float(betainc(0.5, 4e5, 4e5)) == pytest.approx(0.5, abs=1e-6)  # large parameters converge
    assert float(betainc(0.0, 2, 3)) == 0 and float(betainc(1.0, 2, 3)) == 1


def test_one_coordinate_is_the_t_test():
    """r / t ~ Beta(1/2, (t - 1) / 2) for Gaussian noise: arcsine at t = 2, 1 - sqrt(x / 3) tail at t = 3."""
    r = torch.tensor([0.01, 0.5, 1.0, 1.9, 1.9999], dtype=torch.float64)
    assert torch.allclose(null_tail(r, 2, 1), 1 - 2 / math.pi * torch.asin((r / 2).sqrt()), atol=1e-12)
    assert torch.allclose(null_tail(1.5 * r, 3, 1), 1 - (1.5 * r / 3).sqrt(), atol=1e-12)


@pytest.mark.parametrize("t", [2, 3, 8, 40])
def test_the_null_law_is_continuous_where_its_method_changes(t, monkeypatch):
    """At 64 coordinates the Pearson type III tail agrees with the lattice convolution's at the 1% level."""
    x = 64 + 2.33 * math.sqrt(64 * 2 * (t - 1) / (t + 2))
    pearson = float(null_tail(x, t, 64))
    monkeypatch.setattr(sync, "EXACT_BELOW", 65)
    assert float(null_tail(x, t, 64)) == pytest.approx(pearson, rel=0.03)


def student4(gen, shape):
    """Student-t with 4 degrees of freedom (infinite kurtosis): z / sqrt(chi2_4 / 4)."""
    chi2 = torch.empty(shape).exponential_(generator=gen) + torch.empty(shape).exponential_(generator=gen)
    return torch.randn(shape, generator=gen) / (chi2 / 2).sqrt()


def firing_counts(noise, coords, trials, steps, seed, chunk=None):
    """Per step t = 2..steps, how many of ``trials`` independent windows of pure noise fire at level ALPHA.

    Vectorised over trials with the gate's own reductions (``drift_statistic`` then ``drift_pvalue``, design
    effect 1: the coordinates are independent). Each coordinate has its own scale (over 4 decades); each
    window is divided by its first update's RMS, as the gate does."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.exp(2 * torch.randn(coords, generator=gen))
    counts = [0] * (steps + 1)
    chunk = chunk or trials
    for start in range(0, trials, chunk):
        m = min(chunk, trials - start)
        sums, squares, fourths = (torch.zeros(m, coords) for _ in range(3))
        first = None
        for t in range(1, steps + 1):
            u = (torch.randn(m, coords, generator=gen) if noise == "gauss" else student4(gen, (m, coords))) * scale
            first = u.square().mean(-1, keepdim=True).sqrt() if first is None else first
            u = u / first
            u2 = u * u
            sums += u
            squares += u2
            fourths.addcmul_(u2, u2)
            if t >= 2:
                x, spread, count = drift_statistic(sums, squares, fourths)
                assert bool((count == coords).all())
                counts[t] += int((drift_pvalue(x, spread, coords, t) < ALPHA).sum())
    return counts[2:]


def band(trials):
    """The binomial 99.9% interval of a count of ALPHA-events among ``trials`` (normal approximation)."""
    half = 3.29 * math.sqrt(trials * ALPHA * (1 - ALPHA))
    return trials * ALPHA - half, trials * ALPHA + half


@pytest.mark.parametrize(("coords", "trials", "steps", "chunk"), [
    (1, 20000, 8, None), (10, 20000, 8, None), (1000, 5000, 6, 1000),
    pytest.param(100_000, 500, 3, 100, marks=pytest.mark.slow)])
def test_false_positive_rate_on_gaussian_noise_is_alpha_at_every_step_for_any_number_of_coordinates(
        coords, trials, steps, chunk):
    low, high = band(trials)
    counts = firing_counts("gauss", coords, trials, steps, seed=coords, chunk=chunk)
    assert all(low <= c <= high for c in counts), (counts, (low, high))


@pytest.mark.parametrize(("coords", "trials", "steps", "chunk"), [
    (1, 20000, 6, None), (10, 20000, 6, None), (1000, 5000, 6, 1000),
    pytest.param(10_000, 1000, 4, 250, marks=pytest.mark.slow)])
def test_false_positive_rate_on_heavy_tailed_noise(coords, trials, steps, chunk):
    """Student-t(4): calibrated for many coordinates (the variance of r_j is measured); for a few the
    Gaussian law is kept and is conservative (measured: 0.006-0.009 per step at 1 and 10 coordinates)."""
    low, high = band(trials)
    counts = firing_counts("t4", coords, trials, steps, seed=coords + 1, chunk=chunk)
    if coords >= 1000:
        assert all(low <= c <= high for c in counts), (counts, (low, high))
    else:
        assert all(trials * ALPHA / 2 <= c <= high for c in counts), (counts, (trials * ALPHA / 2, high))


def run_windows(gate, source, windows):
    """Window lengths and reasons over ``windows`` pushes."""
    out = []
    for _ in range(windows):
        while not (reason := gate.observe(source())):
            pass
        out.append((gate.steps, reason))
        gate.reset()
    return out


def warmed(coords, gen, scale, **config):
    """A gate that has seen 40 updates of noise, in windows of 4 (it measures its stream's noise on them)."""
    gate = SyncGate(SyncConfig(**config))
    for i in range(40):
        gate.observe(torch.randn(coords, generator=gen) * scale)
        if i % 4 == 3:
            gate.reset()
    return gate


@pytest.mark.parametrize(("snr", "fraction", "median", "worst"), [
    (0.2, 1.0, 3, 5), (0.3, 1.0, 2, 3), (0.5, 1.0, 2, 2), (0.5, 0.1, 4, 6), (0.3, 0.1, 6, 10)])
def test_a_drift_the_size_of_real_gradients_fires_within_a_few_steps(snr, fraction, median, worst):
    """Drift of ``snr`` noise standard deviations on a ``fraction`` of 10,000 coordinates (a fresh random
    pattern per window). Measured over 20 windows (max_interval 50): SNR 0.2 everywhere fires in 2-4 steps,
    0.3 in 2, 0.5 on 10% of the coordinates in 2-4, 0.3 on 10% in 2-7."""
    coords = 10_000
    gen = torch.Generator().manual_seed(7)
    scale = torch.exp(torch.randn(coords, generator=gen))
    gate = warmed(coords, gen, scale, max_interval=50)
    drifting = int(fraction * coords)

    def source():
        return (drift + torch.randn(coords, generator=gen)) * scale

    lengths = []
    for _ in range(20):
        drift = torch.zeros(coords)
        drift[:drifting] = snr * torch.where(torch.rand(drifting, generator=gen) < 0.5, -1.0, 1.0)
        ((length, reason),) = run_windows(gate, source, 1)
        assert reason == "coherent"
        lengths.append(length)
    assert sorted(lengths)[10] <= median and max(lengths) <= worst, sorted(lengths)


def test_correlated_coordinates_are_counted_as_the_independent_units_they_are_worth():
    """Noise with 4 shared factors carrying half its variance (design effect ~100 over 2000 coordinates):
    read as independent coordinates it fires at most steps; the gate measures the design effect on its
    stream and keeps to about alpha (conservative: the correction assumes weak correlations)."""
    coords, factors, windows, steps = 2000, 4, 400, 6
    gen = torch.Generator().manual_seed(3)
    loading = torch.randn(coords, factors, generator=gen) / math.sqrt(factors)

    def noise():
        return math.sqrt(0.5) * (torch.randn(coords, generator=gen) + loading @ torch.randn(factors, generator=gen))

    gate = SyncGate(SyncConfig(max_interval=steps))
    naive = fired = 0
    for window in range(windows + 10):
        for _ in range(steps):
            gate.observe(noise())
            if window >= 10 and gate.samples >= 2:  # 10 windows to measure the noise
                fired += gate.pvalue < ALPHA
                x, spread, count = drift_statistic(*(b[0] for b in (gate.sums, gate.squares, gate.fourths)))
                naive += float(drift_pvalue(x, spread, int(count), gate.samples)) < ALPHA
        gate.reset()
    decisions = windows * (steps - 1)
    assert gate.design_effect_pairs() > 20
    assert naive > 0.2 * decisions  # the independent-coordinate reading: a clock
    assert fired <= band(decisions)[1], fired / decisions


def test_an_independent_stream_measures_no_design_effect():
    gen = torch.Generator().manual_seed(4)
    gate = warmed(500, gen, torch.ones(500))
    assert gate.design_effect_pairs() == 1.0


def test_scale_does_not_matter():
    gen = torch.Generator().manual_seed(5)
    updates = [torch.randn(300, generator=gen) + 0.3 for _ in range(12)]
    pvalues = []
    for factor in (1e-12, 1.0, 1e12):
        gate = SyncGate(SyncConfig(max_interval=100))
        pvalues.append([(gate.observe(u * factor), gate.pvalue)[1] for u in updates])
    assert pvalues[0] == pytest.approx(pvalues[1], rel=1e-4, abs=1e-12)
    assert pvalues[2] == pytest.approx(pvalues[1], rel=1e-4, abs=1e-12)


def test_min_and_max_interval():
    gen = torch.Generator().manual_seed(6)
    coherent = {"a": torch.ones(40), "b": torch.ones(4, 5)}

    def steady():
        return {m: t + 0.1 * torch.randn(t.shape, generator=gen) for m, t in coherent.items()}

    gate = SyncGate(SyncConfig(min_interval=3))
    # a fresh gate cannot fire on coherence until it has measured its stream's noise (4 updates)
    assert [gate.observe(steady()) for _ in range(4)] == [None, None, None, "coherent"]
    gate.reset()
    assert [gate.observe(steady()) for _ in range(3)] == [None, None, "coherent"]  # min_interval 3
    gate.reset()
    gate = warmed(60, gen, torch.ones(60), max_interval=5)
    assert run_windows(gate, lambda: torch.randn(60, generator=gen), 5) == [(5, "max_interval")] * 5


def test_one_update_is_never_coherent():
    gate = SyncGate(SyncConfig())
    for _ in range(8):  # measure the noise, then a window of one update
        gate.observe(torch.randn(100))
    gate.reset()
    assert gate.observe(torch.ones(100)) is None and gate.pvalue == 1.0


def test_disabled_gate_pushes_every_min_interval_steps_whatever_it_sees():
    gate = SyncGate(SyncConfig(enabled=False, min_interval=3, max_interval=50))
    out = []
    for i in range(9):
        out.append(gate.observe(torch.full((5,), float(i))))
        if out[-1]:
            gate.reset()
    assert out == [None, None, "max_interval"] * 3
    gate = SyncGate(SyncConfig(enabled=False))  # min_interval 1: every step
    assert gate.observe(torch.ones(3)) == "max_interval"


def test_structure_may_change_only_between_windows():
    gate = SyncGate(SyncConfig())
    u = {"a": torch.randn(4), "b": torch.randn(2, 2)}
    gate.observe(u)
    with pytest.raises(ValueError, match="structure changed"):
        gate.observe({"a": torch.randn(4), "b": torch.randn(3)})
    gate.reset()  # e.g. the rank grew after a push: the half-made noise measurement is dropped
    assert gate.observe({"a": torch.randn(5), "b": torch.randn(3)}) is None


def test_state_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(8)
    stream = [{"a": torch.randn(30, generator=gen) + 0.2, "b": torch.randn(3, 4, generator=gen)} for _ in range(40)]
    gate = SyncGate(SyncConfig(max_interval=6))
    for u in stream[:17]:
        if gate.observe(u):
            gate.reset()
    state = {k: ([t.clone() for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0]) else v)
             for k, v in gate.state_dict().items()}
    twin = SyncGate(SyncConfig(max_interval=6))
    twin.load_state_dict(state)
    assert twin.pvalue == gate.pvalue
    for u in stream[17:]:
        a, b = gate.observe(u), twin.observe(u)
        assert (a, gate.pvalue, gate.deff) == (b, twin.pvalue, twin.deff)
        if a:
            gate.reset()
            twin.reset()


def test_a_checkpoint_of_the_ema_gate_is_upgraded_and_others_are_refused():
    gate = SyncGate(SyncConfig(max_interval=5))
    gate.load_state_dict({"steps": 3, "m1": [torch.zeros(4)], "m2": [torch.zeros(4)]})
    assert gate.steps == 3 and gate.samples == 0 and gate.sums is None
    assert [gate.observe(torch.randn(4)) for _ in range(2)] == [None, "max_interval"]  # on schedule
    with pytest.raises(ValueError, match="expected keys"):
        gate.load_state_dict({"steps": 3, "m1": None})
    bad = SyncGate(SyncConfig()).state_dict()
    bad["sums"] = [torch.zeros(4)]
    with pytest.raises(ValueError, match="all be given or all None"):
        gate.load_state_dict(bad)


def test_config_takes_alpha():
    assert SyncConfig().alpha == 0.01
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="dynamics.sync.alpha"):
            SyncConfig(alpha=alpha)
