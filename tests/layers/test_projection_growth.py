"""Swarm growth events on a stack and on a shared base: rows, bit agreement, the function kept."""

import pytest
import torch

from layers import LevelsConfig, LevelStack
from layers.hosted import SharedBase
from layers.projection import ReadGrowth, complement_rows, continuation_rows, read_projection
from tests.conftest import make_tiny, randomize

CFG = LevelsConfig(rank=4, target_modules=["q_proj", "v_proj"])


def carried(stack, added, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {n: complement_rows(m.P, torch.randn(3 * added, m.in_features, generator=gen, dtype=torch.float64), added)
            for n, m in stack.modules.items()}


def test_continuation_rows_continue_the_deterministic_projection_and_otherwise_stay_orthonormal():
    p = read_projection(0, "m", 4, 32)
    assert torch.equal(continuation_rows(0, "m", p.float(), 3), read_projection(0, "m", 7, 32, start=4))
    other = torch.cat([p, complement_rows(p, torch.randn(2, 32, dtype=torch.float64), 2)])  # data rows in P
    rows = continuation_rows(0, "m", other.float(), 3)
    full = torch.cat([other, rows])
    assert torch.allclose(full @ full.T, torch.eye(9, dtype=torch.float64), atol=1e-6)
    assert torch.equal(rows, continuation_rows(0, "m", other.float(), 3))  # a function of P's bits


def test_complement_rows_span_what_P_misses_and_no_more():
    p = read_projection(0, "m", 4, 16)
    inside = torch.randn(3, 4, dtype=torch.float64) @ p  # in P's span: nothing to add
    assert complement_rows(p, inside, 2).shape == (0, 16)
    target = torch.randn(2, 16, dtype=torch.float64)
    rows = complement_rows(p, target, 5)  # only 2 directions beyond P
    assert rows.shape == (2, 16)
    grown = torch.cat([p, rows])
    assert torch.allclose(target @ grown.T @ grown, target, atol=1e-9)  # now spanned exactly


def test_an_event_with_carried_rows_gives_two_stacks_the_same_P_and_keeps_the_function(tokens):
    a = LevelStack.attach(make_tiny("llama"), CFG)
    b = LevelStack.attach(make_tiny("llama"), CFG)
    randomize(a)
    for level in a.levels:
        b.load_level_state(level, a.level_state(level))
    with torch.no_grad():
        before = a.model(tokens).logits
    event = ReadGrowth(4, 6, carried(a, 2), source="test")
    assert a.apply_growth(event) and b.apply_growth(event)
    assert not a.apply_growth(event)  # idempotent
    assert a.projection_digest() == b.projection_digest() and a.rank == 6
    with torch.no_grad():
        assert torch.allclose(a.model(tokens).logits, before, rtol=0, atol=1e-6)
    for n, m in a.modules.items():
        assert torch.equal(m.P[4:], event.rows[n].to(m.P))
        assert all(float(t.detach()[:, 4:].abs().sum()) == 0 for t in m.B.values())
    with pytest.raises(ValueError, match="does not start at this stack's rank 6"):
        a.apply_growth(ReadGrowth(4, 8, source="late"))
    with pytest.raises(ValueError, match=r"rows of 'x' have shape \(1, 3\)"):
        ReadGrowth(6, 8, {"x": torch.zeros(1, 3)})


def test_a_shared_base_grows_every_stack_on_it_with_one_P(tokens):
    model = make_tiny("llama")
    base = SharedBase(model, CFG)
    heard = []
    s1, s2 = base.stack_for("a", CFG), base.stack_for("b", CFG)
    s1.growth_listeners.append(heard.append)
    randomize(s1)
    with torch.no_grad():
        before = s1.model(tokens).logits
    event = ReadGrowth(4, 8, source="test")
    with pytest.raises(ValueError, match="shared base"):
        s1.apply_growth(event)
    assert base.apply_growth(event) and not base.apply_growth(event)
    assert heard == [event] and s1.rank == s2.rank == 8
    for name, slot in base.slots.items():
        assert s1.modules[name].P is slot.P and s2.modules[name].P is slot.P
        assert s1.modules[name].B["agent"].shape[1] == 8
    with torch.no_grad():
        assert torch.allclose(s1.model(tokens).logits, before, rtol=0, atol=1e-6)
    s3 = base.stack_for("c", CFG)  # a later agent (config rank 4) joins the grown base
    assert s3.rank == 8 and s3.growths == [event]
    alone = LevelStack.attach(make_tiny("llama"), CFG)
    alone.apply_growth(event)
    assert alone.projection_digest() == s1.projection_digest()  # host and standalone agents agree bit for bit
