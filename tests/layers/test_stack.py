import pytest
import torch
from transformers.pytorch_utils import Conv1D

from layers import LevelLinear, LevelsConfig, LevelStack
from tests.conftest import TINY_MODELS, make_tiny, randomize

LEVELS = ["context", "agent", "swarm", "domain", "foundation"]


def test_default_targets_per_family(family):
    model = make_tiny(family)
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    suffixes = {n.rsplit(".", 1)[-1] for n in stack.module_names}
    assert suffixes == TINY_MODELS[family][1]
    assert all(isinstance(model.get_submodule(n), LevelLinear) for n in stack.module_names)


def test_base_frozen_and_attach_preserves_function(family, tokens):
    model = make_tiny(family)
    with torch.no_grad():
        ref = model(tokens).logits
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".B." in n for n in trainable)
    assert stack.levels == tuple(LEVELS)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, ref, rtol=0, atol=0)


def test_forward_equals_merged_weights(family, tokens):
    """y = W x + s * (sum_l B_l)(P x) equals running the base with W + s * sum_l B_l P merged in."""
    model = make_tiny(family)
    stack = LevelStack.attach(model, LevelsConfig(rank=8, scale=1.7))
    randomize(stack)
    stack.set_enabled(["agent", "domain"])
    with torch.no_grad():
        ours = model(tokens).logits
        merged = make_tiny(family)
        for name, module in stack.modules.items():
            delta = 1.7 * (module.B["agent"] + module.B["domain"]) @ module.P  # (d_out, d_in)
            target = merged.get_submodule(name)
            target.weight += delta.T if isinstance(target, Conv1D) else delta
        torch.testing.assert_close(ours, merged(tokens).logits, rtol=1e-5, atol=1e-5)


def test_set_enabled_selects_levels(tokens):
    model = make_tiny("llama")
    stack = LevelStack.attach(model)
    ref = model(tokens).logits.detach()
    randomize(stack)
    assert stack.set_enabled([]) == tuple(LEVELS)
    torch.testing.assert_close(model(tokens).logits, ref, rtol=0, atol=0)
    stack.set_enabled(["foundation", "context"])
    assert stack.enabled == ("context", "foundation")  # stack order
    with pytest.raises(ValueError, match="unknown level 'nope'"):
        stack.set_enabled(["nope"])


def test_using_restores_the_previous_levels(tokens):
    model = make_tiny("llama")
    stack = LevelStack.attach(model)
    randomize(stack)
    stack.set_enabled(["agent", "swarm"])
    with torch.no_grad():
        both = model(tokens).logits
        with stack.using(["agent"]) as chosen:
            assert chosen == ("agent",) == stack.enabled
            assert not torch.equal(model(tokens).logits, both)
            with stack.using(["foundation", "context"]) as inner:  # nested: stack order, then back out
                assert inner == ("context", "foundation") == stack.enabled
            assert stack.enabled == ("agent",)
        assert stack.enabled == ("agent", "swarm")
        torch.testing.assert_close(model(tokens).logits, both, rtol=0, atol=0)
        with stack.using([]):
            torch.testing.assert_close(model(tokens).logits, make_tiny("llama")(tokens).logits, rtol=0, atol=0)
    assert stack.enabled == ("agent", "swarm")


def test_using_restores_on_an_exception_and_refuses_unknown_levels_up_front():
    stack = LevelStack.attach(make_tiny("llama"))
    stack.set_enabled(["swarm"])
    with pytest.raises(RuntimeError, match="boom"), stack.using(["agent", "domain"]):
        assert stack.enabled == ("agent", "domain")
        raise RuntimeError("boom")
    assert stack.enabled == ("swarm",)
    with pytest.raises(ValueError, match="unknown level 'nope'"), stack.using(["agent", "nope"]):
        pass
    assert stack.enabled == ("swarm",)
    assert all(m.enabled == ("swarm",) for m in stack.modules.values())


def test_every_level_gets_the_same_gradient(tokens):
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    randomize(stack)
    stack.set_trainable(LEVELS)
    model(tokens).logits.square().mean().backward()
    for module in stack.modules.values():
        grads = [module.B[level].grad for level in LEVELS]
        assert grads[0] is not None and grads[0].abs().sum() > 0
        for g in grads[1:]:
            torch.testing.assert_close(g, grads[0], rtol=0, atol=0)


def test_set_trainable_controls_requires_grad():
    stack = LevelStack.attach(make_tiny("llama"))
    stack.set_trainable(["context", "agent"])
    assert {n.split(".")[-1] for n, p in stack.model.named_parameters() if p.requires_grad} == {"context", "agent"}


def test_level_state_round_trip():
    stack = LevelStack.attach(make_tiny("gpt2"), LevelsConfig(rank=8))
    randomize(stack)
    state = stack.level_state("swarm")
    assert set(state) == set(stack.module_names)
    stack.reset_level("swarm")
    assert all(float(t.abs().sum()) == 0 for t in stack.level_state("swarm").values())
    stack.load_level_state("swarm", state)
    for name, value in stack.level_state("swarm").items():
        assert torch.equal(value, state[name])
    state[stack.module_names[0]].add_(1.0)  # a copy, not a view
    assert not torch.equal(stack.level_state("swarm")[stack.module_names[0]], state[stack.module_names[0]])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda s, n: s.__setitem__("model.nope.q_proj", s[n]), "unknown module 'model.nope.q_proj'"),
        (lambda s, n: s.__setitem__(n, s[n][:, :-1]), "has shape"),
        (lambda s, n: s.__setitem__(n, s[n].double()), "has dtype torch.float64"),
        (lambda s, n: s[n].__setitem__((0, 0), float("nan")), "NaN or Inf"),
        (lambda s, n: s.__setitem__(n, s[n].tolist()), "not a tensor"),
        (lambda s, n: s.pop(n), "missing 1 module"),
    ],
)
def test_load_level_state_rejects_bad_input_and_changes_nothing(corrupt, message):
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8))
    randomize(stack)
    before = stack.level_state("agent")
    bad = {k: v * 2 for k, v in before.items()}
    name = stack.module_names[-1]
    corrupt(bad, name)
    with pytest.raises(ValueError, match=message):
        stack.load_level_state("agent", bad)
    for key, value in stack.level_state("agent").items():
        assert torch.equal(value, before[key]), f"{key} changed by a rejected load"


def test_unknown_level_is_rejected():
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8))
    with pytest.raises(ValueError, match="unknown level 'team'"):
        stack.level_state("team")


def test_custom_level_names_and_targets():
    cfg = LevelsConfig(names=["fast", "slow"], rank=4, target_modules=["q_proj", "re:.*layers\\.1\\.mlp\\.down_proj"])
    stack = LevelStack.attach(make_tiny("llama"), cfg)
    assert stack.levels == ("fast", "slow")
    assert stack.module_names == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                                  "model.layers.1.mlp.down_proj"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_modules": ["nope_proj"]}, "matches no module"),
        ({"target_modules": ["mlp"]}, "only nn.Linear and Conv1D"),
        ({"rank": 65}, "exceeds the input features"),
    ],
)
def test_attach_rejects_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LevelStack.attach(make_tiny("llama"), LevelsConfig(**kwargs))


def test_attach_twice_is_rejected_and_detach_restores():
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    with pytest.raises(ValueError, match="already has a level stack"):
        LevelStack.attach(model)
    restored = stack.detach()
    assert not any(isinstance(m, LevelLinear) for m in restored.modules())
    assert all(p.requires_grad for p in restored.parameters())
    LevelStack.attach(restored, LevelsConfig(rank=8))


def test_config_mapping_is_accepted():
    stack = LevelStack.attach(make_tiny("llama"), {"names": ["a", "b"], "rank": 4})
    assert stack.levels == ("a", "b") and stack.rank == 4


def test_same_projection_digest_for_same_seed():
    a = LevelStack.attach(make_tiny("llama", seed=1), LevelsConfig(rank=8, seed=3))
    b = LevelStack.attach(make_tiny("llama", seed=2), LevelsConfig(rank=8, seed=3))  # other base weights
    c = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8, seed=4))
    assert a.projection_digest() == b.projection_digest() != c.projection_digest()
