import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers import LevelsConfig, LevelStack
from tests.conftest import make_tiny, randomize


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_grow_preserves_logits_and_old_rows(family, tokens):
    model = make_tiny(family)
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    randomize(stack)
    old_p = {n: p.clone() for n, p in stack.projections().items()}
    with torch.no_grad():
        before = model(tokens).logits
        stack.grow(20)
        after = model(tokens).logits
    assert stack.rank == 20
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)
    for name, module in stack.modules.items():
        assert module.P.shape == (20, module.in_features)
        assert torch.equal(module.P[:8], old_p[name])
        torch.testing.assert_close(module.P @ module.P.T, torch.eye(20), atol=1e-6, rtol=0)
        for b in module.B.values():
            assert b.shape == (module.out_features, 20) and float(b.detach()[:, 8:].abs().sum()) == 0


@settings(max_examples=10, deadline=None)
@given(r1=st.integers(1, 12), extra=st.integers(1, 12), seed=st.integers(0, 1000))
def test_grown_stack_equals_stack_built_at_new_rank(r1, extra, seed):
    """New rows are deterministic: growing R -> R' gives the P of a stack built at R'."""
    grown = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=r1, seed=seed, target_modules=["q_proj"]))
    grown.grow(r1 + extra)
    built = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=r1 + extra, seed=seed, target_modules=["q_proj"]))
    assert grown.projection_digest() == built.projection_digest()


def test_grow_keeps_parameters_trainable():
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(rank=4))
    stack.set_trainable(["agent"])
    params = list(stack.parameters(["agent"]))
    stack.grow(6)
    assert all(a is b for a, b in zip(params, stack.parameters(["agent"]), strict=True))  # same objects, new shapes
    opt = torch.optim.AdamW(stack.parameters(["agent"]), lr=1e-2)  # rebuilt after growth
    model(torch.randint(0, 256, (1, 8))).logits.mean().backward()
    opt.step()
    assert any(float(p.detach()[:, 4:].abs().sum()) > 0 for p in stack.parameters(["agent"]))


def test_grow_rejects_bad_rank():
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8))
    with pytest.raises(ValueError, match="must exceed the current rank 8"):
        stack.grow(8)
    with pytest.raises(ValueError, match="exceeds the input features"):
        stack.grow(65)
    assert stack.rank == 8
