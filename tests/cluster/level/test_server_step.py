"""server.step: the rms rule as before, the adam rule equal to torch's Adam, moments kept across a restart."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.server_step import ServerStep

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.ones(s) + 0.5 * torch.randn(s, generator=gen) for m, s in SHAPES.items()}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 12), lr=st.floats(1e-4, 1e-1))
def test_adam_drive_is_torch_adam_on_the_merged_gradient(seed, steps, lr):
    step = ServerStep("adam", lr, betas=(0.9, 0.99), eps=1e-8)
    params = {m: torch.zeros(s, requires_grad=True) for m, s in SHAPES.items()}
    ref = torch.optim.Adam(params.values(), lr=lr, betas=(0.9, 0.99), eps=1e-8)
    ours = {m: torch.zeros(s) for m, s in SHAPES.items()}
    for i in range(steps):
        g = grad(seed + i)
        for m, p in params.items():
            p.grad = g[m].clone()
        ref.step()
        for m, d in step.drive(g).update.items():
            ours[m] += d
    for m in SHAPES:
        torch.testing.assert_close(ours[m], params[m].detach(), rtol=1e-5, atol=1e-7)


def test_rms_drive_moves_by_exactly_lr_in_rms_and_zero_gradients_do_nothing():
    step = ServerStep("rms", 1e-3)
    drive = step.drive({m: 7.0 * g for m, g in grad(0).items()})
    flat = torch.cat([d.flatten() for d in drive.update.values()])
    assert float(flat.pow(2).mean().sqrt()) == pytest.approx(1e-3, rel=1e-5)
    assert drive.gradient is drive.update  # rms: the level measures what it applies
    assert step.drive({m: torch.zeros(s) for m, s in SHAPES.items()}) is None
    adam = ServerStep("adam", 1e-3)
    assert adam.drive({m: torch.zeros(s) for m, s in SHAPES.items()}) is None and adam.t == 0


def test_unknown_step_is_refused_by_name():
    with pytest.raises(ValueError, match="server.step"):
        ServerConfig(step="sgd")
    with pytest.raises(ValueError, match="'sgd' is not one of rms, adam"):
        ServerStep("sgd")


def test_adam_level_restarts_with_its_moments_bit_for_bit(tmp_path):
    """A restart from a checkpoint plus journal replays the same Adam drives as a level that never stopped."""
    cfg = ServerConfig(window=2, checkpoint_every=2, lr=1e-2, step="adam")
    crashed = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    twin = LevelCore("swarm/red", SHAPES, server=cfg)
    for i in range(11):  # 5 merges: checkpoints at 2 and 4, one merge and one push replayed from the journal
        for level in (crashed, twin):
            level.push(f"a{i % 3}", i // 3 + 1, level.version, grad(i))
    del crashed
    restarted = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    assert restarted.version == twin.version == 5 and restarted.server_step.t == twin.server_step.t == 5
    for i in range(11, 15):  # both carry on identically: the moments came back too
        for level in (restarted, twin):
            level.push(f"a{i % 3}", i // 3 + 1, level.version, grad(i))
    assert all(torch.equal(restarted.B[m], twin.B[m]) for m in SHAPES)


def test_adam_moves_a_level_further_than_rms_at_the_same_lr_on_a_steady_direction():
    """The point of adam: a coordinate whose merged gradient keeps its sign moves ~lr per merge,
    where rms spreads lr over all coordinates by their gradient size."""
    moved = {}
    for kind in ("rms", "adam"):
        level = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1, lr=1e-3, step=kind))
        for i in range(1, 9):
            level.push("a", i, level.version, grad(i))
        moved[kind] = float(torch.cat([b.flatten() for b in level.B.values()]).abs().mean())
    assert moved["adam"] > 0.9 * 8e-3 * 0.5 and moved["adam"] > moved["rms"]


def test_adam_drive_carries_the_merged_gradient_at_unit_rms_besides_its_normalised_update():
    """Adam moves every coordinate with a steady sign by about lr, large gradient or small; the gradient
    that may heat the level's temperature keeps the contrast."""
    g = {m: torch.zeros(s) for m, s in SHAPES.items()}
    name = next(iter(SHAPES))
    g[name][0, 0], g[name][0, 1] = 10.0, 0.1  # a loud coordinate and a quiet one
    out = ServerStep("adam", 1e-2).drive(g)
    u, s = out.update[name], out.gradient[name]
    assert float(u[0, 0]) == pytest.approx(float(u[0, 1]), rel=1e-3)  # Adam: both move by lr
    assert float(s[0, 0]) / float(s[0, 1]) == pytest.approx(100.0, rel=1e-5)  # the gradient: 100 times louder
    flat = torch.cat([t.flatten() for t in out.gradient.values()])
    assert float(flat.pow(2).mean().sqrt()) == pytest.approx(1e-2, rel=1e-5)
