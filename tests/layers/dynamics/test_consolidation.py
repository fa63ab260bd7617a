"""Consolidation: what a level learned while SCREENED, and what was written into it, is not forgotten.

Synthetic streams where the answer is known: a signal on some parameters (screened), a weak
transient on others (never screened), then a long quiet period of zero or noise drive.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.dynamics import (
    ConsolidationConfig,
    DynamicsConfig,
    HomeostasisConfig,
    LevelOptimizer,
    MassConfig,
    PhaseConfig,
    TemperatureConfig,
    ViscosityConfig,
)

SHAPE = (48, 12)


def phase_only(free_decay: float, consolidate: bool, **phase) -> DynamicsConfig:
    """Phase (and consolidation) alone; homeostasis off, so the free decay stays as configured."""
    return DynamicsConfig(lr=0.01, viscosity=ViscosityConfig(enabled=False),
                          temperature=TemperatureConfig(enabled=False), mass=MassConfig(enabled=False),
                          homeostasis=HomeostasisConfig(enabled=False),
                          phase=PhaseConfig(free_decay=free_decay, **phase),
                          consolidation=ConsolidationConfig(enabled=consolidate))


def learn(opt: LevelOptimizer, gen: torch.Generator, steps: int = 150):
    """A signal on 20% of parameters (screened), a weak transient on another 20% (under the noise
    floor: never screened), noise everywhere. Returns the masks and whether the transient ever screened."""
    r = torch.rand(*SHAPE, generator=gen)
    signal, transient = r < 0.2, (r >= 0.2) & (r < 0.4)
    sign = torch.randn(*SHAPE, generator=gen).sign()
    ever = torch.zeros(SHAPE, dtype=torch.bool)
    for _ in range(steps):
        drive = sign * (1.0 * signal + 0.1 * transient) + 0.2 * torch.randn(*SHAPE, generator=gen)
        opt.step({"m": drive})
        ever |= opt.state["m"]["screened"]
    return signal, transient, ever


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), quiet=st.integers(100, 800), free_decay=st.floats(0.005, 0.05))
def test_screened_signal_survives_a_quiet_period_and_a_transient_decays_at_the_configured_rate(seed, quiet,
                                                                                               free_decay):
    gen = torch.Generator().manual_seed(seed)
    b = torch.zeros(SHAPE)
    opt = LevelOptimizer({"m": b}, phase_only(free_decay, consolidate=True))
    signal, transient, ever = learn(opt, gen)
    assert bool(signal.any()) and bool(transient.any())
    assert bool(opt.state["m"]["screened"][signal].all()) and not bool(ever[transient].any())
    end = b.clone()
    for _ in range(quiet):  # the stream stopped: nothing drives the level
        opt.step({"m": torch.zeros(SHAPE)})
    kept = b[signal] / end[signal]
    assert float(kept.min()) > 0.93  # consolidated: at most the last steps' unconsolidated share is lost
    # never screened: nothing anchored, so it decays at exactly the configured rate, horizon 1 / free_decay
    torch.testing.assert_close(b[transient], end[transient] * (1 - free_decay) ** quiet, rtol=1e-4, atol=1e-9)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), quiet=st.integers(100, 600), free_decay=st.floats(0.005, 0.05))
def test_without_consolidation_the_signal_decays_on_every_free_step(seed, quiet, free_decay):
    """The ablation: each parameter shrinks by exactly (1 - free_decay) per step it spends FREE."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.zeros(SHAPE)
    opt = LevelOptimizer({"m": b}, phase_only(free_decay, consolidate=False))
    assert "free" not in opt.state["m"]
    signal, _, _ = learn(opt, gen)
    end = b.clone()
    free_steps = torch.zeros(SHAPE)
    for _ in range(quiet):
        opt.step({"m": torch.zeros(SHAPE)})
        free_steps += (~opt.state["m"]["screened"]).float()
    torch.testing.assert_close(b, end * (1 - free_decay) ** free_steps, rtol=1e-4, atol=1e-9)
    assert float((b[signal] / end[signal]).max()) < (1 - free_decay) ** (quiet - 30)


def test_consolidated_signal_survives_noise_with_every_mechanism_on():
    """Default dynamics (homeostasis included), then 1000 steps of pure noise: the signal stays, the
    consolidation ablation loses it."""
    kept = {}
    for on in (True, False):
        gen = torch.Generator().manual_seed(3)
        b = torch.zeros(SHAPE)
        opt = LevelOptimizer({"m": b}, DynamicsConfig(lr=0.01, consolidation=ConsolidationConfig(enabled=on)))
        signal, _, _ = learn(opt, gen, steps=200)
        end = b.clone()
        for _ in range(1000):
            opt.step({"m": 0.2 * torch.randn(*SHAPE, generator=gen)})
        kept[on] = float((b[signal] * end[signal].sign()).mean() / end[signal].abs().mean())
    assert kept[True] > 0.8 and kept[False] < 0.3, kept


def test_what_is_written_from_outside_is_kept():
    """A promoted circuit (added to B outside the optimizer, as a level server's consensus does)
    survives 500 merges of noise; without consolidation the free decay takes its FREE entries."""
    gen = torch.Generator().manual_seed(0)
    u, w = torch.randn(SHAPE[0], generator=gen), torch.randn(SHAPE[1], generator=gen)
    circuit = torch.outer(u, w)  # (d_out, R)
    kept = {}
    for on in (True, False):
        b = torch.zeros(SHAPE)
        opt = LevelOptimizer({"m": b}, DynamicsConfig(lr=0.01, consolidation=ConsolidationConfig(enabled=on)))
        for _ in range(50):
            opt.step({"m": 0.2 * torch.randn(*SHAPE, generator=gen)})
        b.add_(circuit)
        for _ in range(500):
            opt.step({"m": 0.2 * torch.randn(*SHAPE, generator=gen)})
        kept[on] = float((b * circuit).sum() / circuit.pow(2).sum())  # the circuit's share still in B
    assert kept[True] == pytest.approx(1.0, abs=0.05) and kept[False] < 0.7, kept


def test_state_round_trip_is_exact_and_carries_the_unconsolidated_part():
    gen = torch.Generator().manual_seed(1)
    a, c = torch.zeros(SHAPE), torch.zeros(SHAPE)
    opt_a = LevelOptimizer({"m": a})
    drives = [0.2 * torch.randn(*SHAPE, generator=gen) + 0.3 for _ in range(60)]
    for d in drives[:30]:
        opt_a.step({"m": d})
    state = opt_a.state_dict()
    assert float(state["blocks"]["m"]["free"].abs().sum()) > 0
    c.copy_(a)
    opt_c = LevelOptimizer({"m": c})
    opt_c.load_state_dict(state)
    for d in drives[30:]:
        opt_a.step({"m": d})
        opt_c.step({"m": d})
    assert torch.equal(a, c) and torch.equal(opt_a.state["m"]["free"], opt_c.state["m"]["free"])
    assert opt_a.report() == opt_c.report() and opt_a.report()["consolidated_norm"] > 0


def test_a_checkpoint_from_before_consolidation_is_upgraded_as_unconsolidated():
    old_cfg = DynamicsConfig(consolidation=ConsolidationConfig(enabled=False))
    b = torch.zeros(SHAPE)
    old = LevelOptimizer({"m": b}, old_cfg)
    for _ in range(10):
        old.step({"m": torch.ones(SHAPE)})
    new = LevelOptimizer({"m": b})
    new.load_state_dict(old.state_dict())
    assert torch.equal(new.state["m"]["free"], b)  # nothing counts as consolidated: the former rule
    assert new.report()["consolidated_norm"] == 0.0
    broken = old.state_dict()
    del broken["blocks"]["m"]["activity"]
    with pytest.raises(ValueError, match="other modulators"):
        new.load_state_dict(broken)


def test_growth_keeps_the_unconsolidated_part_of_old_columns():
    b = torch.zeros(4, 2)
    opt = LevelOptimizer({"m": b})
    opt.step({"m": torch.ones(4, 2)})
    before = opt.state["m"]["free"].clone()
    opt.params["m"] = torch.cat([b, torch.zeros(4, 3)], dim=1)  # what LevelStack.grow does to B
    opt.resize()
    assert opt.state["m"]["free"].shape == (4, 5)
    assert torch.equal(opt.state["m"]["free"][:, :2], before) and float(opt.state["m"]["free"][:, 2:].abs().sum()) == 0


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_bad_rate_is_refused_by_name(rate):
    with pytest.raises(ValueError, match=r"dynamics\.consolidation.*rate"):
        ConsolidationConfig(rate=rate)


def test_without_phase_there_is_nothing_to_consolidate():
    opt = LevelOptimizer({"m": torch.zeros(2, 2)}, DynamicsConfig(phase=PhaseConfig(enabled=False)))
    assert opt.consolidation is None and "free" not in opt.state["m"]
