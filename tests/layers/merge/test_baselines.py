import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.merge import (
    AndMask,
    CenteredClipping,
    CoordinateMedian,
    Krum,
    MeanAggregator,
    MultiKrum,
    SignMajority,
    Ties,
    TrimmedMean,
)


def rand(k, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(d, generator=gen) for _ in range(k)]


def test_mean_is_weighted_mean_times_server_rate():
    xs = rand(5, 7)
    w = [1, 2, 3, 4, 5]
    expected = sum(wi * x for wi, x in zip(w, xs, strict=True)) / sum(w)
    torch.testing.assert_close(MeanAggregator().aggregate(xs, w), expected)
    torch.testing.assert_close(MeanAggregator(server_lr=2.0).aggregate(xs, w), 2 * expected)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 9), d=st.integers(1, 6), seed=st.integers(0, 1000))
def test_median_and_trimmed_mean_match_numpy(k, d, seed):
    xs = rand(k, d, seed)
    arr = torch.stack(xs).numpy()
    np.testing.assert_allclose(CoordinateMedian().aggregate(xs).numpy(), np.median(arr, axis=0), rtol=1e-6)
    f = min(2, (k - 1) // 2)
    trimmed = np.sort(arr, axis=0)[f : k - f].mean(axis=0)
    np.testing.assert_allclose(TrimmedMean(f=2).aggregate(xs).numpy(), trimmed, rtol=1e-5, atol=1e-6)


def _krum_scores(xs, f):
    k = len(xs)
    scores = []
    for i in range(k):
        dists = sorted(float((xs[i] - xs[j]).pow(2).sum()) for j in range(k) if j != i)
        scores.append(sum(dists[: max(1, k - f - 2)]))
    return scores


@pytest.mark.parametrize("k, f", [(7, 1), (10, 3), (4, 1)])
def test_krum_and_multi_krum_match_the_definition(k, f):
    xs = rand(k, 5, seed=k)
    scores = _krum_scores(xs, f)
    order = np.argsort(scores)
    torch.testing.assert_close(Krum(f=f).aggregate(xs), xs[order[0]])
    torch.testing.assert_close(MultiKrum(f=f).aggregate(xs), torch.stack([xs[i] for i in order[: k - f]]).mean(0))


def test_krum_ignores_an_outlier():
    xs = [torch.ones(4) + 0.01 * x for x in rand(6, 4)] + [torch.full((4,), 100.0)]
    assert float((Krum(f=1).aggregate(xs) - 1).abs().max()) < 0.1


def test_centered_clipping_definition_and_limits():
    xs = rand(6, 4)
    torch.testing.assert_close(CenteredClipping(radius=1e9).aggregate(xs), torch.stack(xs).mean(0))  # no clipping
    c = 0.5
    agg = CenteredClipping(radius=c, iterations=2)
    v = torch.zeros(4)
    for _ in range(2):
        v = v + sum((x - v) * min(1.0, c / float((x - v).norm())) for x in xs) / len(xs)
    torch.testing.assert_close(agg.aggregate(xs), v)
    state = agg.state_dict()
    again = CenteredClipping(radius=c, iterations=2)
    again.load_state_dict(state)
    torch.testing.assert_close(again.aggregate(xs), agg.aggregate(xs))


def test_sign_majority_votes():
    xs = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, -1.0, -3.0]), torch.tensor([-0.5, -1.0, -1.0])]
    out = SignMajority().aggregate(xs)
    assert torch.equal(torch.sign(out), torch.tensor([1.0, -1.0, -1.0]))


def test_and_mask_keeps_only_agreeing_coordinates():
    xs = [torch.tensor([1.0, 1.0, 2.0]), torch.tensor([2.0, -1.0, 2.0]), torch.tensor([3.0, 1.0, -2.0])]
    out = AndMask(tau=1.0).aggregate(xs)
    torch.testing.assert_close(out, torch.tensor([2.0, 0.0, 0.0]))
    out = AndMask(tau=0.3).aggregate(xs)
    torch.testing.assert_close(out, torch.stack(xs).mean(0))


def test_ties_trim_elect_disjoint_mean():
    xs = [torch.tensor([4.0, 0.1, -3.0, 0.2]), torch.tensor([2.0, -0.1, 5.0, 0.3]), torch.tensor([-1.0, 0.0, 1.0, 6.0])]
    out = Ties(density=0.5).aggregate(xs)  # keep the top 2 magnitudes per update
    trimmed = [torch.tensor([4.0, 0, -3.0, 0]), torch.tensor([2.0, 0, 5.0, 0]), torch.tensor([-1.0, 0, 1.0, 6.0])]
    elected = torch.sign(sum(trimmed))
    expected = []
    for j in range(4):
        vals = [t[j] for t in trimmed if t[j] != 0 and torch.sign(t[j]) == elected[j]]
        expected.append(sum(vals) / len(vals) if vals else torch.tensor(0.0))
    torch.testing.assert_close(out, torch.stack(expected))


@pytest.mark.parametrize("cls", [MeanAggregator, CoordinateMedian, TrimmedMean, Krum, MultiKrum, CenteredClipping])
def test_identity_on_identical_inputs(cls):
    x = torch.randn(9)
    torch.testing.assert_close(cls().aggregate([x] * 5), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [MeanAggregator, CoordinateMedian, TrimmedMean, CenteredClipping, SignMajority,
                                 AndMask, Ties, Krum, MultiKrum])
def test_permutation_invariance(cls):
    xs = rand(7, 6, seed=3)
    ref = cls().aggregate(xs)
    for perm in itertools.islice(itertools.permutations(range(7)), 1, 40, 7):
        torch.testing.assert_close(cls().aggregate([xs[i] for i in perm]), ref, rtol=1e-5, atol=1e-6)
