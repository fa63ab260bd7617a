import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from layers.merge import ResonanceAggregator, ResonanceConfig, threshold


def vectors(k_min=1, k_max=8, d_max=24):
    """K vectors of one dimension d, values bounded away from float trouble."""
    return st.integers(1, d_max).flatmap(
        lambda d: st.lists(
            st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=d, max_size=d),
            min_size=k_min, max_size=k_max,
        )
    ).map(lambda rows: [torch.tensor(r, dtype=torch.float32) for r in rows])


@settings(max_examples=60, deadline=None)
@given(xs=vectors(k_min=2), data=st.data())
def test_permutation_invariance(xs, data):
    weights = data.draw(st.lists(st.floats(0.1, 5), min_size=len(xs), max_size=len(xs)))
    perm = data.draw(st.permutations(range(len(xs))))
    a = ResonanceAggregator().aggregate(xs, weights)
    b = ResonanceAggregator().aggregate([xs[i] for i in perm], [weights[i] for i in perm])
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(xs=vectors(k_min=1, k_max=1))
def test_single_update_is_returned(xs):
    agg = ResonanceAggregator()
    torch.testing.assert_close(agg.aggregate(xs), xs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(agg.aggregate(xs), xs[0], rtol=1e-5, atol=1e-5)  # also with a centre


@settings(max_examples=60, deadline=None)
@given(xs=vectors(k_min=1, k_max=1), k=st.integers(2, 9), warm=st.booleans())
def test_identical_updates_are_returned(xs, k, warm):
    agg = ResonanceAggregator()
    if warm:
        agg.aggregate([torch.randn_like(xs[0]), torch.randn_like(xs[0])])  # some other centre first
    torch.testing.assert_close(agg.aggregate(xs * k, [1.0 + i for i in range(k)]), xs[0], rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(xs=vectors(k_min=1, k_max=4), w=st.floats(0.1, 10))
def test_exactly_opposed_pairs_cancel(xs, w):
    pairs = [t for x in xs for t in (x, -x)]
    weights = [w for _ in xs for _ in (0, 1)]
    out = ResonanceAggregator().aggregate(pairs, weights)
    assert float(out.abs().max()) <= 1e-5


@settings(max_examples=80, deadline=None)
@given(data=st.data(), k_honest=st.integers(3, 12), d=st.integers(1, 16))
def test_gated_coordinates_carry_the_honest_majority_sign(data, k_honest, d):
    """Attackers below tau in weight cannot flip the sign of any coordinate that passes the gate."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    honest = [torch.randn(d, generator=gen) + 0.5 for _ in range(k_honest)]
    cfg = ResonanceConfig()
    k_attack = data.draw(st.integers(0, k_honest))
    weights = [1.0] * (k_honest + k_attack)
    k_eff = (k_honest + k_attack)
    tau = threshold(k_eff, cfg)
    assume(k_attack / (k_honest + k_attack) < tau)
    if data.draw(st.booleans()):  # arbitrary values
        attack = [torch.tensor(data.draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=d, max_size=d)))
                  for _ in range(k_attack)]
    else:  # targeted: all of an honest-sized norm on one coordinate, against the honest sign
        j = data.draw(st.integers(0, d - 1))
        norm = float(torch.stack(honest).norm(dim=1).median())
        target = -torch.sign(torch.stack(honest).sum(0)[j]) * norm
        attack = [torch.nn.functional.one_hot(torch.tensor(j), d).float() * target for _ in range(k_attack)]
    xs = honest + attack
    out = ResonanceAggregator(cfg).aggregate(xs, weights)
    agreement = torch.stack([torch.sign(x) for x in xs]).sum(0).abs() / len(xs)
    honest_sign = torch.sign(torch.stack([torch.sign(x) for x in honest]).sum(0))
    passed = agreement >= tau
    ok = (torch.sign(out) == honest_sign) | (out == 0)
    assert bool(ok[passed].all()), (out, honest_sign, passed)


def test_targeted_attack_inside_the_radius_cannot_flip_a_gated_coordinate():
    """9 honest pushes, slightly positive on coordinate 0; 2 attackers put their whole (honest-sized)
    norm on -coordinate 0. The vote passes (m = 7/11 > tau) but the clipped mean is negative there:
    the elect step must zero it rather than let the attackers' sign through."""
    honest = [torch.tensor([0.1, 1.0, 1.0, 1.0, 1.0]) + 0.01 * x for x in torch.randn(9, 5)]
    attack = [torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0])] * 2
    out = ResonanceAggregator().aggregate(honest + attack)
    assert float(out[0]) >= 0
    unelected = ResonanceAggregator(ResonanceConfig(elect=False)).aggregate(honest + attack)
    assert float(unelected[0]) < 0  # the failure the elect step prevents


def test_elect_acts_only_where_the_vote_is_certified():
    """Found by bench/robustness.py. Under IPM (8 of 25 attackers send -0.1 x the honest mean) with
    per-agent SNR < 1, the unanimous attackers own the vote's sign on most coordinates, below tau,
    while the clipped mean keeps the honest sign there. Elect applied everywhere deleted those
    honest coordinates (cosine 0.52); applied only where the gate passes it keeps them (0.73)."""
    from layers.merge.attacks import attack_updates

    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(2000, generator=gen)
    agg = ResonanceAggregator()
    for _ in range(5):
        honest = torch.stack([mu + 3.0 * torch.randn(2000, generator=gen) for _ in range(17)])
        out = agg.aggregate(list(torch.cat([honest, attack_updates("ipm", honest, 8, n=25)])))
    assert float(torch.nn.functional.cosine_similarity(out, mu, dim=0)) > 0.65


def test_gain_amplifies_coherent_coordinates_within_the_norm_budget():
    agree = torch.tensor([1.0, 1.0, 1.0, 1.0])
    noisy = torch.tensor([1.0, -1.0, 1.0, -1.0])
    xs = [agree + 0.1 * noisy * (1 if i % 2 else -1) for i in range(8)]  # coordinate-wise full agreement
    xs = [torch.cat([x, torch.tensor([(-1.0) ** i])]) for i, x in enumerate(xs)]  # plus one split coordinate
    agg = ResonanceAggregator()
    out = agg.aggregate(xs)
    mean = torch.stack(xs).mean(0)
    torch.testing.assert_close(out.norm(), mean.norm(), rtol=1e-5, atol=1e-6)  # norm budget (kappa = 1)
    assert float(out[-1].abs()) < 1e-6  # the split coordinate gets nothing (mean 0 there)
    assert agg.stats["gated_fraction"] == pytest.approx(1 / 5)


def test_clipping_bounds_one_huge_push():
    honest = [torch.ones(10) + 0.01 * torch.randn(10) for _ in range(9)]
    out = ResonanceAggregator().aggregate(honest + [torch.full((10,), 1e6)])
    assert float(out.norm()) < 2 * float(torch.stack(honest).mean(0).norm())


def test_state_round_trip_is_exact():
    xs = [torch.randn(30) for _ in range(5)]
    a = ResonanceAggregator()
    a.aggregate(xs)
    b = ResonanceAggregator()
    b.load_state_dict(a.state_dict())
    ys = [torch.randn(30) for _ in range(5)]
    torch.testing.assert_close(a.aggregate(ys), b.aggregate(ys), rtol=0, atol=0)


def test_dict_updates_keep_their_structure():
    xs = [{"b": torch.randn(3, 4), "a": torch.randn(5)} for _ in range(4)]
    out = ResonanceAggregator().aggregate(xs)
    assert list(out) == ["b", "a"] and out["b"].shape == (3, 4)
    flat = ResonanceAggregator().aggregate([torch.cat([x["b"].reshape(-1), x["a"]]) for x in xs])
    torch.testing.assert_close(torch.cat([out["b"].reshape(-1), out["a"]]), flat, rtol=1e-5, atol=1e-6)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_o_d_no_k_by_d_temporary():
    k, d = 32, 4096
    xs = [{"a": torch.randn(d), "b": torch.randn(d // 2)} for _ in range(k)]
    agg = ResonanceAggregator()
    agg.aggregate(xs)  # warm buffers
    with _LargestTensor() as mode:
        agg.aggregate(xs)
    assert mode.largest <= d, f"a temporary of {mode.largest} elements (K x d = {k * d})"


def test_threshold_follows_the_design():
    cfg = ResonanceConfig()
    assert threshold(1, cfg) == 0.9  # capped
    assert threshold(25, cfg) == pytest.approx(1.645 / 5)
    assert threshold(100, cfg) == pytest.approx(0.25)  # eps_max + delta
    assert np.isclose(threshold(4, cfg), 1.645 / 2)


@pytest.mark.parametrize("field, value", [("tau_max", 1.0), ("leak", 2.0), ("rho", 0.0), ("momentum", 1.0)])
def test_bad_constants_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"merge.resonance.{field}"):
        ResonanceConfig(**{field: value})
