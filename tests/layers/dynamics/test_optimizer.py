import math

import pytest
import torch

from layers import LevelsConfig, LevelStack
from layers.dynamics import DynamicsConfig, LevelOptimizer, PhaseConfig, TemperatureConfig
from tests.conftest import make_tiny


def _stream(seed, n, shape):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) * 0.1 + 0.05 for _ in range(n)]


def test_state_round_trip_continues_bit_identically():
    a, b = torch.zeros(8, 4), torch.zeros(8, 4)
    opt_a = LevelOptimizer({"m": a})
    drives = _stream(0, 30, (8, 4))
    for u in drives[:15]:
        opt_a.step({"m": u}, contributions=3.0)
    b.copy_(a)
    opt_b = LevelOptimizer({"m": b})
    opt_b.load_state_dict(opt_a.state_dict())
    for u in drives[15:]:
        opt_a.step({"m": u}, contributions=3.0)
        opt_b.step({"m": u}, contributions=3.0)
    assert torch.equal(a, b)
    assert opt_a.report() == opt_b.report()


def test_bad_updates_are_rejected_and_change_nothing():
    b = torch.zeros(2, 2)
    opt = LevelOptimizer({"m": b, "n": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match="unknown block 'x'"):
        opt.step({"x": torch.ones(2, 2)})
    with pytest.raises(ValueError, match=r"block 'n' update has shape \(2, 2\), expected \(3, 1\)"):
        opt.step({"m": torch.ones(2, 2), "n": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="block 'm' update contains NaN"):
        opt.step({"m": torch.full((2, 2), float("nan"))})
    assert float(b.abs().sum()) == 0 and opt.steps == 0


def test_bad_gradients_are_rejected_and_change_nothing():
    b = torch.zeros(2, 2)
    opt = LevelOptimizer({"m": b, "n": torch.zeros(3, 1)})
    ok = {"m": torch.ones(2, 2), "n": torch.ones(3, 1)}
    with pytest.raises(ValueError, match=r"block 'n' gradient has shape \(2, 2\), expected \(3, 1\)"):
        opt.step(ok, gradient={"m": torch.ones(2, 2), "n": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="block 'm' gradient contains NaN"):
        opt.step(ok, gradient={"m": torch.full((2, 2), float("nan")), "n": torch.ones(3, 1)})
    with pytest.raises(ValueError, match="gradient blocks"):
        opt.step(ok, gradient={"m": torch.ones(2, 2)})
    assert float(b.abs().sum()) == 0 and opt.steps == 0


def test_an_adam_like_drive_crystallises_only_when_the_temperature_measures_the_gradient():
    """Adam's direction is about +-1 on every coordinate with a steady sign, whatever the gradient's size.
    3 of 4 columns of each block carry a gradient 100 times smaller than the rest: heated by the drive
    nothing ever goes cold (growth never fires); heated by the gradient those columns freeze."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.ones(8, 4)
    scale[:, :3] = 0.01  # 75% of each block quiet, past the crystal fraction 1 - 1/e
    grads = [(torch.rand(8, 4, generator=gen) + 0.5) * scale for _ in range(60)]
    by_gradient = DynamicsConfig(temperature=TemperatureConfig(measure="gradient"))
    opts = {measure: LevelOptimizer({"a": torch.zeros(8, 4), "b": torch.zeros(8, 4)}, cfg)
            for measure, cfg in (("drive", None), ("gradient", by_gradient))}
    for g in grads:
        drive = {"a": -torch.sign(g), "b": -torch.sign(g)}  # Adam with a steady sign: unit moves everywhere
        for opt in opts.values():
            opt.step(drive, gradient={"a": g, "b": g})
    assert opts["drive"].report()["crystallised_fraction"] == 0.0 and opts["drive"].report()["growth_needed"] == 0.0
    report = opts["gradient"].report()
    assert report["crystallised_fraction"] == 1.0 and report["growth_needed"] == 1.0
    t = opts["gradient"].state["a"]["temperature"]
    assert float(t[:, :3].max()) < 1 / math.e < float(t[:, 3].min())  # the quiet columns froze, the loud stayed hot
    # the phase measures the drive either way: the same screening in both
    assert torch.equal(opts["drive"].state["a"]["screened"], opts["gradient"].state["a"]["screened"])


def test_an_unknown_temperature_measure_is_refused_by_name():
    with pytest.raises(ValueError, match="dynamics.temperature.measure"):
        TemperatureConfig(measure="loss")


def test_state_with_other_modulators_is_refused():
    opt = LevelOptimizer({"m": torch.zeros(2, 2)})
    other = LevelOptimizer({"m": torch.zeros(2, 2)}, DynamicsConfig(phase=PhaseConfig(enabled=False)))
    with pytest.raises(ValueError, match="other modulators"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="blocks differ"):
        LevelOptimizer({"z": torch.zeros(2, 2)}).load_state_dict(opt.state_dict())


def test_drives_a_stack_level_and_follows_growth():
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=4))
    opt = LevelOptimizer.for_level(stack, "swarm")
    name = stack.module_names[0]
    opt.step({name: torch.ones_like(stack.modules[name].B["swarm"])})
    assert float(stack.modules[name].B["swarm"].detach().abs().sum()) > 0
    stack.grow(6)
    opt.resize()
    assert opt.state[name]["temperature"].shape == stack.modules[name].B["swarm"].shape
    opt.step({name: torch.ones_like(stack.modules[name].B["swarm"])})
