"""The fast resonance merge (fused C loops, and the streaming torch path) against the formula of DESIGN
section 4 written densely on the K x d stack, over several calls (the centre carries state).

Tolerance: ``||fast - reference|| <= 1e-5 ||reference||`` per call (float32 values; the paths sum in a
different order, so they agree to float rounding, not bit for bit), and the same for the centre.
"""

import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.merge import ResonanceAggregator, ResonanceConfig, native, threshold

RTOL = 1e-5


def reference(xs: torch.Tensor, w: torch.Tensor, v: torch.Tensor, cfg: ResonanceConfig):
    """(u, g_hat) for the (K, d) stack ``xs``, weights (K,) and centre ``v`` (d,), in float64."""
    xs, w = xs.double(), w.double()
    total = float(w.sum())
    tau = threshold(total**2 / float((w**2).sum()), cfg)
    center = v.double()
    dist = (xs - center).norm(dim=1)  # (K,)
    radius = cfg.rho * float(torch.quantile(dist, 0.5))
    scale = torch.where((dist <= radius) | (dist == 0), torch.ones_like(dist), radius / dist)  # (K,)
    g_hat = center + ((w * scale)[:, None] * (xs - center)).sum(0) / total  # (d,)
    vote = (w[:, None] * torch.sign(xs)).sum(0)  # (d,)
    m = vote.abs() / total
    passed = m >= tau
    if cfg.elect:
        g_hat = torch.where(passed & (torch.sign(g_hat) != torch.sign(vote)), torch.zeros_like(g_hat), g_hat)
    gain = torch.where(passed, 1 + cfg.beta * (m - tau) / (1 - tau), torch.full_like(m, cfg.leak))
    u = g_hat * gain
    budget = cfg.kappa * float(g_hat.norm() / u.norm()) if float(u.norm()) > 0 else 0.0
    return u * budget, g_hat


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a.double() - b.double()).norm()) <= RTOL * float(b.double().norm()) + 1e-30


paths = [pytest.param(False, id="torch"),
         pytest.param(None, id="native", marks=pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler"))]


@pytest.mark.parametrize("use_native", paths)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 11), d=st.integers(1, 5000), rounds=st.integers(1, 3),
       spread=st.floats(0.0, 3.0), outlier=st.floats(1.0, 1e4), split=st.floats(0.0, 1.0),
       weighted=st.booleans(), elect=st.booleans(), momentum=st.sampled_from([0.0, 0.5]))
def test_fast_merge_matches_the_dense_formula(use_native, seed, k, d, rounds, spread, outlier, split, weighted, elect,
                                              momentum):
    """Random K, d (across the 2048-value blocks), weights, an outlier, dict parts, several calls."""
    gen = torch.Generator().manual_seed(seed)
    cfg = ResonanceConfig(elect=elect, momentum=momentum)
    agg = ResonanceAggregator(cfg, native=use_native)
    cut = int(split * d)
    v = torch.zeros(d, dtype=torch.float64)  # the centre starts at 0
    for _ in range(rounds):
        mu = torch.randn(d, generator=gen)
        xs = mu + spread * torch.randn(k, d, generator=gen)  # (K, d)
        xs[0] *= outlier  # one push far out: clipping acts
        xs[:, : d // 7] *= (torch.rand(k, d // 7, generator=gen) > 0.3)  # exact zeros: sign 0 in the vote
        w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1 if weighted else torch.ones(k, dtype=torch.float64)
        updates = [{"a": x[:cut].reshape(-1), "b": x[cut:]} if cut else x.clone() for x in xs]
        out = agg.aggregate(updates, w.tolist())
        got = torch.cat([out["a"], out["b"]]) if cut else out
        want, g_hat = reference(xs, w, v, cfg)
        assert close(got, want), (float((got - want).norm()), float(want.norm()))
        v = momentum * v + (1 - momentum) * g_hat
        assert close(torch.cat(agg.center), v)


def test_the_native_path_runs_where_a_compiler_is():
    """Guards the test above: with a C compiler the fused loops are built and used for float32 inputs."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    xs = [torch.randn(3000) for _ in range(5)]
    agg = ResonanceAggregator()
    assert native.kernels() is not None and agg._kernels([[x] for x in xs]) is not None
    assert agg._kernels([[x.double()] for x in xs]) is None  # other dtypes: the torch path
    fast, slow = agg.aggregate(xs), ResonanceAggregator(native=False).aggregate(xs)
    assert close(fast, slow) and math.isfinite(float(fast.norm()))


@pytest.mark.parametrize("use_native", paths)
def test_a_non_finite_input_is_named_before_the_centre_changes(use_native):
    """The merge's own first pass replaces aggregate's validation read: same error, no state touched."""
    agg = ResonanceAggregator(native=use_native)
    agg.aggregate([torch.ones(4000), torch.ones(4000)])
    before = [c.clone() for c in agg.center]
    bad = torch.ones(4000)
    bad[3999] = float("inf")
    with pytest.raises(ValueError, match=r"update 2, key 'b': contains NaN or Inf"):
        agg.aggregate([{"a": torch.ones(1), "b": torch.ones(4000)}] * 2 + [{"a": torch.ones(1), "b": bad}])
    with pytest.raises(ValueError, match=r"update 1: contains NaN or Inf"):
        agg.aggregate([torch.zeros(4000), torch.full((4000,), float("nan"))])
    assert all(torch.equal(a, b) for a, b in zip(agg.center, before, strict=True))
    huge = torch.full((4000,), 1e30)  # finite, but its float32 g.g overflows: merged (clipped), not refused
    assert math.isfinite(float(agg.aggregate([torch.ones(4000), torch.ones(4000), huge]).norm()))
