import pytest
import torch

from layers.dynamics import (
    ConsolidationConfig,
    DynamicsConfig,
    LevelOptimizer,
    MassConfig,
    PhaseConfig,
    TemperatureConfig,
    ViscosityConfig,
)


def only(name: str, **kwargs) -> DynamicsConfig:
    """A config with one modulator switched on (``phase``: the phase without consolidation)."""
    off = dict(viscosity=ViscosityConfig(enabled=False), temperature=TemperatureConfig(enabled=False),
               phase=PhaseConfig(enabled=False), mass=MassConfig(enabled=False),
               consolidation=ConsolidationConfig(enabled=False))
    cls = {"viscosity": ViscosityConfig, "temperature": TemperatureConfig, "phase": PhaseConfig, "mass": MassConfig}
    off[name] = cls[name](**kwargs)
    return DynamicsConfig(**off)


def test_all_off_is_plain_addition():
    b = torch.zeros(3, 2)
    opt = LevelOptimizer({"m": b}, DynamicsConfig(lr=0.5, viscosity=ViscosityConfig(enabled=False),
                                                  temperature=TemperatureConfig(enabled=False),
                                                  phase=PhaseConfig(enabled=False), mass=MassConfig(enabled=False)))
    u = torch.randn(3, 2)
    opt.step({"m": u})
    torch.testing.assert_close(b, 0.5 * u)


def test_viscosity_resists_reversals_and_depletes():
    b = torch.zeros(1, 1)
    opt = LevelOptimizer({"m": b}, only("viscosity", build=0.1, deplete=0.5))
    one = torch.ones(1, 1)
    for _ in range(5):  # resistance r+ builds to 0.5; forward moves are free
        before = b.clone()
        opt.step({"m": one})
        assert float(b - before) == pytest.approx(1.0)
    before = b.clone()
    opt.step({"m": -one})  # reversal: divided by 1 + r+ = 1.5
    assert float(b - before) == pytest.approx(-1 / 1.5)
    for _ in range(8):  # sustained opposite moves deplete r+ (x 0.5 each)
        opt.step({"m": -one})
    before = b.clone()
    opt.step({"m": -one})
    assert float(b - before) == pytest.approx(-1 / (1 + 0.5 * 0.5**9), rel=1e-5)
    before = b.clone()
    opt.step({"m": one})  # now a positive move is the reversal, against r- built by 10 negative moves
    assert float(b - before) == pytest.approx(1 / (1 + 1.0), rel=1e-5)


def test_temperature_cold_moves_less_and_blocks_crystallise():
    hot, cold = torch.zeros(4, 4), torch.zeros(4, 4)
    cfg = only("temperature", heat=0.5, floor=0.1, growth_fraction=0.4)
    opt = LevelOptimizer({"hot": hot, "cold": cold}, cfg)
    drive = torch.ones(4, 4)
    for _ in range(20):  # "hot" is driven, "cold" only sees a whisper
        opt.step({"hot": drive, "cold": drive * 1e-6})
    st = opt.state
    assert float(st["hot"]["temperature"].min()) > 0.9
    assert float(st["cold"]["temperature"].max()) < 1 / 2.718
    assert opt.temperature.crystallised(st["cold"]) and not opt.temperature.crystallised(st["hot"])
    report = opt.report()
    assert report["crystallised_fraction"] == 0.5 and report["growth_needed"] == 1.0
    h0, c0 = hot.clone(), cold.clone()
    opt.step({"hot": drive, "cold": drive})  # same drive now
    moved_hot, moved_cold = float((hot - h0).mean()), float((cold - c0).mean())
    assert moved_cold < moved_hot / 10  # cold: floor mobility and the crystal divisor


def test_phase_hysteresis_and_free_decay():
    b = torch.ones(1, 2)
    opt = LevelOptimizer({"m": b}, only("phase", rate=0.5, theta_on=0.6, theta_off=0.2, free_decay=0.1,
                                        screened_decay=0.0))
    active = torch.tensor([[1.0, 0.0]])
    for _ in range(3):  # param 0 active: a -> 0.875 > theta_on -> SCREENED
        opt.step({"m": active * 0.0 + torch.tensor([[1.0, 1e-9]])})
    assert opt.state["m"]["screened"].tolist() == [[True, False]]
    b.fill_(1.0)
    opt.step({"m": torch.zeros(1, 2)})  # a0 = 0.44: between thresholds, stays SCREENED (hysteresis)
    assert opt.state["m"]["screened"].tolist() == [[True, False]]
    assert float(b[0, 0]) == pytest.approx(1.0) and float(b[0, 1]) == pytest.approx(0.9)  # FREE decays
    for _ in range(2):
        opt.step({"m": torch.zeros(1, 2)})  # a0 = 0.11 < theta_off -> FREE
    assert opt.state["m"]["screened"].tolist() == [[False, False]]


def test_phase_activity_is_bimodal_after_a_run():
    """20% of parameters carry a steady signal, the rest noise: activities split, few stay in limbo."""
    gen = torch.Generator().manual_seed(0)
    b = torch.zeros(64, 16)
    signal = (torch.rand(64, 16, generator=gen) < 0.2).float()
    opt = LevelOptimizer({"m": b}, only("phase"))
    for _ in range(200):
        noise = torch.randn(64, 16, generator=gen) * 0.3
        opt.step({"m": signal * 1.0 + noise})
    a = opt.state["m"]["activity"]
    limbo = ((a > 0.2) & (a < 0.5)).float().mean()
    assert float(limbo) < 0.1
    screened = opt.state["m"]["screened"]
    assert float((screened == signal.bool()).float().mean()) > 0.95


def test_mass_grows_with_contributions_and_slows_moves():
    few, many = torch.zeros(2, 2), torch.zeros(2, 2)
    opt_few = LevelOptimizer({"m": few}, only("mass", half=10.0, leak=0.0))
    opt_many = LevelOptimizer({"m": many}, only("mass", half=10.0, leak=0.0))
    for _ in range(20):
        opt_few.step({"m": torch.ones(2, 2)}, contributions=1.0)
        opt_many.step({"m": torch.ones(2, 2)}, contributions=25.0)  # a level driven by 25 agents
    assert float(opt_many.state["m"]["mass"][0, 0]) == 500.0
    assert float(many.mean()) < float(few.mean()) / 3
    before = few.clone()
    opt_few.step({"m": torch.ones(2, 2)}, contributions=0.0)
    assert float((few - before)[0, 0]) == pytest.approx(1 / (1 + 20 / 10))
