import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.experiment.metrics import autocorrelation_time, cosine, level_of, mean_std, steps_to_target


def test_a_constant_direction_never_decorrelates():
    snaps = [torch.ones(16) * (1 + t) for t in range(10)]  # grows, same direction
    tau, censored = autocorrelation_time(snaps, spacing=5)
    assert censored and tau == 45


def test_orthogonal_snapshots_decorrelate_within_one_lag():
    snaps = [torch.eye(8)[t] for t in range(8)]  # cos(B_t, B_t+1) = 0
    tau, censored = autocorrelation_time(snaps, spacing=2)
    assert not censored
    assert tau == pytest.approx(2 * (1 - math.exp(-1)))  # interpolated between C(0)=1 and C(1)=0


def test_a_slow_rotation_has_a_longer_timescale_than_a_fast_one():
    def rotation(rate):
        return [torch.tensor([math.cos(rate * t), math.sin(rate * t)]) for t in range(60)]

    slow, _ = autocorrelation_time(rotation(0.02), 1)
    fast, _ = autocorrelation_time(rotation(0.2), 1)
    assert fast < slow
    assert fast == pytest.approx(math.acos(math.exp(-1)) / 0.2, rel=0.05)  # cos(rate * lag) = 1/e


def test_zero_snapshots_are_skipped():
    snaps = [torch.zeros(4), torch.tensor([1.0, 0, 0, 0]), torch.zeros(4), torch.tensor([1.0, 0, 0, 0])]
    tau, censored = autocorrelation_time(snaps, 1)
    assert censored and tau == 3


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_the_timescale_lies_within_the_run(t, spacing, seed):
    g = torch.Generator().manual_seed(seed)
    snaps = [torch.randn(8, generator=g) for _ in range(t)]
    tau, _ = autocorrelation_time(snaps, spacing)
    assert 0 <= tau <= spacing * (t - 1)


def test_steps_to_target_and_mean_std():
    curve = [(0, 3.0), (5, 2.5), (10, 2.0)]
    assert steps_to_target(curve, 2.5) == 5
    assert steps_to_target(curve, 1.0) is None
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))
    assert mean_std([1.0, None, float("nan")]) == (1.0, 0.0)


def test_cosine_and_level_names():
    assert cosine(torch.ones(3), torch.ones(3)) == pytest.approx(1.0)
    assert cosine(torch.zeros(3), torch.ones(3)) == 0.0
    assert level_of("context@python/text/json") == "context"
    assert level_of("swarm/text") == "swarm"
    assert level_of("foundation") == "foundation"
