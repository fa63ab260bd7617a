"""Attacks built against a normalised mean, on synthetic honest updates where the answer is known."""

from __future__ import annotations

import pytest
import torch

from layers.merge import AGGREGATORS
from layers.merge.attacks import (
    ATTACKS,
    agr_attack,
    agr_gamma,
    alie_opt_z,
    alie_z,
    attack_updates,
    direction,
    ipm_epsilon,
)


def _honest(k: int = 8, d: int = 500, snr: float = 0.3, seed: int = 0) -> torch.Tensor:
    """k noisy copies of one true gradient: per-update signal-to-noise ``snr`` (noisy like real pushes)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    return torch.stack([snr * mu + torch.randn(d, generator=g) for _ in range(k)])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def test_alie_z_max_is_zero_for_ten_senders_two_attackers():
    """The reason ALIE was inert: its z_max for (10, 2) is 0, the crafted update is the honest mean."""
    assert alie_z(10, 2) == pytest.approx(0.0, abs=1e-5)


def test_alie_opt_z_is_positive_and_the_crafted_update_stays_within_the_honest_spread():
    honest = _honest()
    z, bound = alie_opt_z(honest, 2, 10)
    assert 0 < z <= bound
    mean, std = honest.double().mean(0), honest.double().std(0)
    crafted = attack_updates("alie_opt", honest, 2, n=10)
    assert crafted.shape == (2, honest.shape[1])
    torch.testing.assert_close(crafted[0].double(), mean - z * std, rtol=1e-5, atol=1e-5)
    spread = float((honest.double() - mean).norm(dim=1).max())
    assert float((crafted[0].double() - mean).norm()) <= spread * (1 + 1e-5)
    # it turns the merged direction further from the honest mean than the z_max ALIE (which sends the mean)
    merged_opt = torch.cat([honest, crafted]).double().mean(0)
    merged_alie = torch.cat([honest, attack_updates("alie", honest, 2, n=10)]).double().mean(0)
    assert _cos(merged_opt, mean) < _cos(merged_alie, mean) - 0.01


def test_alie_opt_z_is_zero_without_spread():
    same = torch.ones(4, 10)
    assert alie_opt_z(same, 2, 6) == (0.0, 0.0)


@pytest.mark.parametrize("kind", ["unit", "sign", "std"])
def test_min_max_puts_the_crafted_update_at_the_honest_max_distance(kind):
    honest = _honest(seed=1)
    x, chosen = agr_attack(honest, "min_max", 2, 10, kind)
    x = x.double()
    assert chosen == kind
    h = honest.double()
    worst_pair = float(torch.cdist(h, h).max())
    assert float((x - h).norm(dim=1).max()) == pytest.approx(worst_pair, rel=1e-6)
    assert agr_gamma(honest, direction(honest, kind), "min_max") > 0


def test_min_sum_puts_the_crafted_update_at_the_honest_max_sum():
    honest = _honest(seed=2)
    x = agr_attack(honest, "min_sum", 2, 10, "std")[0].double()
    h = honest.double()
    bound = float(torch.cdist(h, h).pow(2).sum(dim=1).max())
    assert float((x - h).norm(dim=1).pow(2).sum()) == pytest.approx(bound, rel=1e-6)
    # min-sum is the tighter constraint: never farther along p than min-max
    p = direction(honest, "unit")
    assert agr_gamma(honest, p, "min_sum") <= agr_gamma(honest, p, "min_max") + 1e-9


def test_min_max_takes_the_direction_that_turns_the_normalised_mean_furthest():
    """Against a unit-RMS step only the direction counts. Along -unit(mean) a point inside the honest
    spread only shrinks the mean (cosine 1: no harm); the attacker takes the direction with the lowest
    cosine, which turns the merged direction away from the honest one."""
    honest = _honest(snr=0.3, seed=3)
    mean = honest.double().mean(0)

    def merged_cos(x):
        return _cos((8 * mean + 2 * x.double()) / 10, mean)

    for rule in ("min_max", "min_sum"):
        assert merged_cos(agr_attack(honest, rule, 2, 10, "unit")[0]) == pytest.approx(1.0, abs=1e-9)
        x, chosen = agr_attack(honest, rule, 2, 10)
        fixed = {k: merged_cos(agr_attack(honest, rule, 2, 10, k)[0]) for k in ("unit", "sign", "std")}
        assert merged_cos(x) == pytest.approx(min(fixed.values())) and fixed[chosen] == min(fixed.values())
        assert merged_cos(x) < 0.97, rule
        torch.testing.assert_close(attack_updates(rule, honest, 2, n=10)[1], x)


def test_ipm_large_flips_the_sign_of_the_mean_and_small_ipm_does_not():
    honest = _honest(seed=4)
    mean = honest.double().mean(0)
    assert ipm_epsilon(2, 10) == pytest.approx(8.0)  # 2 x the threshold (n - f) / f = 4
    large = torch.cat([honest, attack_updates("ipm_large", honest, 2, n=10)]).double().mean(0)
    small = torch.cat([honest, attack_updates("ipm", honest, 2, n=10)]).double().mean(0)
    assert _cos(large, mean) == pytest.approx(-1.0, abs=1e-6)
    torch.testing.assert_close(large, -0.8 * mean)  # (8 - 2 x 8) / 10
    assert _cos(small, mean) == pytest.approx(1.0, abs=1e-6)  # it only shrinks the mean


def test_ipm_epsilon_refuses_no_attackers():
    with pytest.raises(ValueError, match="0 < f < n"):
        ipm_epsilon(0, 10)


@pytest.mark.parametrize("kind", ATTACKS)
def test_every_attack_is_finite_shaped_and_pure(kind):
    honest = _honest(k=4, d=64, seed=5)
    before = honest.clone()
    out = attack_updates(kind, honest, 3, n=7, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 64) and out.dtype == honest.dtype and bool(torch.isfinite(out).all())
    assert torch.equal(honest, before)  # the honest updates are not touched
    assert attack_updates(kind, honest, 0).shape == (0, 64)


def test_unknown_attack_and_direction_are_named():
    honest = _honest(k=3, d=8)
    with pytest.raises(ValueError, match="'nope'"):
        attack_updates("nope", honest, 1)
    with pytest.raises(ValueError, match="'up'"):
        direction(honest, "up")
    with pytest.raises(ValueError, match="'mid'"):
        agr_gamma(honest, direction(honest, "unit"), "mid")


def test_ipm_large_reverses_the_mean_but_not_the_median():
    """Through the real aggregators: two of ten senders reverse the mean's direction (what a unit-RMS
    FedAvg step follows); the coordinate median keeps the honest direction."""
    honest = _honest(k=8, snr=1.0, seed=6)
    pushes = list(torch.cat([honest, attack_updates("ipm_large", honest, 2, n=10)]))
    mean = honest.double().mean(0)
    merged = {name: AGGREGATORS[name]().aggregate(pushes) for name in ("mean", "median")}
    assert _cos(merged["mean"], mean) < 0 < _cos(merged["median"], mean)
