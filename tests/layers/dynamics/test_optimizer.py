import math

import pytest
import torch

from layers import LevelsConfig, LevelStack
from layers.dynamics import DynamicsConfig, LevelOptimizer, PhaseConfig
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


def test_bad_signals_are_rejected_and_change_nothing():
    b = torch.zeros(2, 2)
    opt = LevelOptimizer({"m": b, "n": torch.zeros(3, 1)})
    ok = {"m": torch.ones(2, 2), "n": torch.ones(3, 1)}
    with pytest.raises(ValueError, match=r"block 'n' signal has shape \(2, 2\), expected \(3, 1\)"):
        opt.step(ok, signal={"m": torch.ones(2, 2), "n": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="block 'm' signal contains NaN"):
        opt.step(ok, signal={"m": torch.full((2, 2), float("nan")), "n": torch.ones(3, 1)})
    with pytest.raises(ValueError, match="signal blocks"):
        opt.step(ok, signal={"m": torch.ones(2, 2)})
    assert float(b.abs().sum()) == 0 and opt.steps == 0


def test_an_adam_like_drive_crystallises_only_when_the_gradient_is_measured():
    """Adam's direction is about +-1 on every coordinate with a steady sign, whatever the gradient's size.
    Half of each block's coordinates carry a gradient 100 times smaller than the rest: measured on the
    drive nothing ever goes cold (growth never fires); measured on the gradient that half freezes."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.ones(8, 4)
    scale[:, :3] = 0.01  # 3 of 4 columns quiet: 75% of each block, past the crystal fraction 1 - 1/e
    grads = [(torch.rand(8, 4, generator=gen) + 0.5) * scale for _ in range(60)]
    by_drive = LevelOptimizer({"a": torch.zeros(8, 4), "b": torch.zeros(8, 4)})
    by_signal = LevelOptimizer({"a": torch.zeros(8, 4), "b": torch.zeros(8, 4)})
    for g in grads:
        drive = {"a": -torch.sign(g), "b": -torch.sign(g)}  # Adam with a steady sign: unit moves everywhere
        by_drive.step(drive)
        report = by_signal.step(drive, signal={"a": g, "b": g})
    assert by_drive.report()["crystallised_fraction"] == 0.0 and by_drive.report()["growth_needed"] == 0.0
    assert report["crystallised_fraction"] == 1.0 and report["growth_needed"] == 1.0
    t = by_signal.state["a"]["temperature"]
    assert float(t[:, :3].max()) < 1 / math.e < float(t[:, 3].min())  # the quiet columns froze, the loud stayed hot


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
