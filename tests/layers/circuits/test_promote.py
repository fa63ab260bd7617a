import itertools

import pytest
import torch

from layers import LevelsConfig, LevelStack
from layers.circuits import Circuit, CircuitsConfig, CircuitTracker, Promoter, promote
from tests.conftest import make_tiny, randomize

LEVELS = ["context", "agent", "swarm", "domain", "foundation"]


def plant(stack, level, module, seed=0, strength=0.5):
    m = stack.modules[module]
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(m.out_features, generator=gen)
    w = torch.randn(m.rank, generator=gen)
    u, w = u / u.norm(), w / w.norm()
    with torch.no_grad():
        m.B[level].add_(strength * torch.outer(u, w))
    return u, w


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("from_level, to_level", list(itertools.pairwise(LEVELS)))
def test_promotion_preserves_logits(family, from_level, to_level, tokens):
    model = make_tiny(family)
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    randomize(stack, std=0.05)
    module = stack.module_names[1]
    plant(stack, from_level, module)
    tracker = CircuitTracker()
    tracker.update({module: stack.modules[module].B[from_level]})
    circuit = max(tracker.all(), key=lambda c: abs(c.strength))
    with torch.no_grad():
        before = model(tokens).logits
        moved = promote(stack, circuit, from_level, to_level)
        after = model(tokens).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    src = stack.modules[module].B[from_level].detach()
    assert abs(float(circuit.u @ src @ circuit.w)) < 1e-5  # its component left the faster level
    assert abs(moved) > 0.4


def test_promotion_must_go_one_level_up():
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=4))
    c = Circuit(0, stack.module_names[0], torch.ones(64) / 8, torch.ones(4) / 2, torch.zeros(2))
    with pytest.raises(ValueError, match="not the level right after"):
        promote(stack, c, "context", "swarm")
    with pytest.raises(ValueError, match="not the level right after"):
        promote(stack, c, "agent", "context")
    with pytest.raises(ValueError, match="unknown module"):
        promote(stack, Circuit(0, "nope", c.u, c.w, c.traces), "context", "agent")


def _candidates(stack, n_modules, steps=30):
    tracker = CircuitTracker(CircuitsConfig(min_age=5))
    modules = stack.module_names[:n_modules]
    for i, m in enumerate(modules):
        plant(stack, "context", m, seed=i, strength=0.3 + 0.1 * i)
    for _ in range(steps):
        tracker.update({m: stack.modules[m].B["context"] for m in modules})
    return tracker


def test_bandwidth_defers_and_bypass_admits():
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=4))
    tracker = _candidates(stack, 6)
    assert len(tracker.candidates()) == 6
    promoter = Promoter("context", "agent", CircuitsConfig(tokens_per_window=2, window=10, bypass_threshold=1.0))
    events = promoter.step(stack, tracker, step=30)
    assert len(events) == 2 and promoter.counters == {"promoted": 2, "deferred": 4, "bypassed": 0}
    strengths = [abs(e.strength) for e in events]
    assert strengths == sorted(strengths, reverse=True)  # ranked by score x strength
    assert promoter.step(stack, tracker, step=35) == []  # same window: bucket empty
    assert len(promoter.step(stack, tracker, step=40)) == 2  # refilled
    bypass = Promoter("context", "agent", CircuitsConfig(tokens_per_window=0, bypass_threshold=0.9))
    events = bypass.step(stack, _candidates(stack, 2), step=0)
    assert events and all(e.bypassed for e in events) and bypass.counters["bypassed"] == len(events)


def test_promote_false_switches_every_promotion_path_off():
    import dataclasses

    from layers.circuits import CircuitsConfig, CircuitTracker, Promoter, proposals_from

    cfg = CircuitsConfig(min_age=2, score_threshold=0.0, traces=2)
    tracker = CircuitTracker(cfg)
    block = torch.zeros(8, 4)
    block[0, 0] = 1.0
    for _ in range(5):
        tracker.update({"m": block})
    assert proposals_from(tracker, "a")  # a stable circuit is proposed when promotion is on
    off = dataclasses.replace(cfg, promote=False)
    tracker.config = off
    assert proposals_from(tracker, "a") == []
    assert Promoter("context", "agent", off).step(None, tracker, 1) == []


def test_a_proposal_carries_the_matrix_of_each_module_with_a_stable_circuit():
    from layers.circuits import CircuitsConfig, CircuitTracker, proposals_from

    tracker = CircuitTracker(CircuitsConfig(min_age=2))
    gen = torch.Generator().manual_seed(0)
    stable = torch.outer(torch.randn(8, generator=gen), torch.randn(4, generator=gen)).double()  # not float32
    for i in range(80):  # "m" holds a constant circuit; "n" only noise that changes sign every update
        tracker.update({"m": stable, "n": (-1) ** i * 1e-3 * torch.ones(6, 4)})
    (p,) = proposals_from(tracker, "a")  # one per module, and only where a candidate is stable
    assert p.module == "m" and p.agent_id == "a" and p.b.dtype == torch.float32
    assert torch.equal(p.b, stable.float()) and p.b.data_ptr() != stable.data_ptr()  # a copy
    assert p.sigma == pytest.approx(float(torch.linalg.svdvals(stable)[0]), rel=1e-4) and p.score >= 0.8
