import pytest
import torch

from layers.dynamics import (
    DynamicsConfig,
    Homeostasis,
    HomeostasisConfig,
    LevelOptimizer,
    PhaseConfig,
    spectral_entropy,
)


def test_spectral_entropy_extremes():
    u, w = torch.randn(32, 1), torch.randn(1, 8)
    assert spectral_entropy(u @ w) == pytest.approx(0.0, abs=1e-6)
    assert spectral_entropy(torch.eye(8)) == pytest.approx(1.0)
    assert 0.5 < spectral_entropy(torch.randn(64, 8)) < 1.0


def _run(theta_on, theta_off, windows=40, window=20):
    gen = torch.Generator().manual_seed(0)
    b = torch.zeros(64, 16)
    signal = (torch.rand(64, 16, generator=gen) < 0.2).float()
    cfg = DynamicsConfig(phase=PhaseConfig(theta_on=theta_on, theta_off=theta_off))
    opt = LevelOptimizer({"m": b}, cfg)
    ctrl = Homeostasis(opt, HomeostasisConfig())
    history = []
    for _ in range(windows):
        for _ in range(window):  # the optimizer runs homeostasis itself at the end of every window
            opt.step({"m": signal + 0.3 * torch.randn(64, 16, generator=gen)})
        history.append({**ctrl.measure(), **opt.thresholds})
    return history


@pytest.mark.parametrize("theta_on, theta_off, start", [(0.02, 0.01, "all screened"), (0.99, 0.98, "all free")])
def test_level_returns_to_its_band(theta_on, theta_off, start):
    history = _run(theta_on, theta_off)
    band = HomeostasisConfig()
    first = history[0]["screened_fraction"]
    assert (first > band.screened_high) if start == "all screened" else (first < band.screened_low)
    inside = [i for i, h in enumerate(history) if band.screened_low <= h["screened_fraction"] <= band.screened_high]
    assert inside, f"never returned to the band from {start}"
    assert inside[0] <= 25, f"took {inside[0]} windows"
    assert all(band.screened_low <= h["screened_fraction"] <= band.screened_high for h in history[inside[0]:])


def test_entropy_moves_free_decay_the_right_way():
    b = torch.randn(32, 8)  # flat spectrum: above the band
    opt = LevelOptimizer({"m": b})
    ctrl = Homeostasis(opt, HomeostasisConfig(entropy_high=0.5))
    before = opt.thresholds["free_decay"]
    ctrl.update()
    assert opt.thresholds["free_decay"] > before
    b.copy_(torch.randn(32, 1) @ torch.randn(1, 8))  # rank one: below the band
    before = opt.thresholds["free_decay"]
    ctrl.update()
    assert opt.thresholds["free_decay"] < before


@pytest.mark.parametrize("enabled", [True, False])
def test_the_optimizer_runs_homeostasis_every_window_when_enabled(enabled):
    from layers.dynamics.config import HomeostasisConfig as H

    cfg = DynamicsConfig(phase=PhaseConfig(theta_on=0.02, theta_off=0.01), homeostasis=H(enabled=enabled, window=5))
    opt = LevelOptimizer({"m": torch.zeros(16, 4)}, cfg)
    seen = []
    for _ in range(10):
        opt.step({"m": torch.ones(16, 4)})
        seen.append(opt.thresholds["theta_on"])
    if enabled:  # moved at the ends of steps 5 and 10 only
        assert seen[3] == 0.02 and seen[4] != 0.02 and seen[8] == seen[4] and seen[9] != seen[8]
    else:
        assert set(seen) == {0.02}
