"""Float32 levels over a low-precision base: the cast at the boundary, gradients, state, PEFT round trip (CPU)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

from layers import LevelsConfig, LevelStack
from layers.level_linear import LevelLinear
from layers.projection import read_projection
from tests.conftest import make_tiny, randomize


def _linear(dtype: torch.dtype, d_in: int = 16, d_out: int = 12, rank: int = 4) -> LevelLinear:
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out, bias=True).to(dtype).requires_grad_(False)
    module = LevelLinear(base, read_projection(0, "m", rank, d_in), ["a", "b"], scale=0.5, dtype=torch.float32)
    with torch.no_grad():
        module.B["a"].normal_(0, 0.3)
        module.B["b"].normal_(0, 0.3)
    return module


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_levels_on_a_low_precision_base_round_once_to_the_base_dtype(dtype):
    module = _linear(dtype)
    x = torch.randn(3, 5, 16).to(dtype)  # (B, T, d_in) as the base's activations come
    y = module(x)
    assert y.dtype == dtype and module.P.dtype == module.B["a"].dtype == torch.float32
    # reference: the base output and the float32 delta summed in float32, rounded once
    base = module.base_layer(x).float()
    delta = F.linear(F.linear(x.float(), module.P), module.B["a"] + module.B["b"])  # (B, T, d_out)
    assert torch.equal(y, (base + 0.5 * delta).to(dtype))
    assert not torch.equal(y, module.base_layer(x))  # the levels do act


def test_the_level_gradient_is_float32_and_matches_a_float64_computation():
    module = _linear(torch.bfloat16)
    module.B["a"].requires_grad_(True)
    x = torch.randn(2, 7, 16).to(torch.bfloat16)
    module(x).float().pow(2).sum().backward()
    grad = module.B["a"].grad
    assert grad.dtype == torch.float32 and bool(torch.isfinite(grad).all())
    b = (module.B["a"] + module.B["b"]).detach().double().requires_grad_(True)
    y = module.base_layer(x).double() + 0.5 * F.linear(F.linear(x.double(), module.P.double()), b)
    y.pow(2).sum().backward()
    # bf16 rounding of the output enters dL/dy: agreement to bf16 precision
    torch.testing.assert_close(grad.double(), b.grad, rtol=2e-2, atol=2e-2)


def test_same_dtype_forward_is_the_plain_sum():
    module = _linear(torch.float32)
    x = torch.randn(4, 16)
    expected = torch.add(module.base_layer(x), F.linear(F.linear(x, module.P), module.B["a"] + module.B["b"]),
                         alpha=0.5)
    assert torch.equal(module(x), expected)  # bit for bit what it was before mixed dtypes


def test_stack_on_a_bf16_model_keeps_float32_levels_and_cpu_level_state():
    model = make_tiny("llama").to(torch.bfloat16)
    stack = LevelStack.attach(model, LevelsConfig(rank=8))
    assert {b.dtype for b in stack.parameters()} == {torch.float32}
    assert {m.P.dtype for m in stack.modules.values()} == {torch.float32}
    randomize(stack, std=0.05)
    state = stack.level_state("agent")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state.values())
    name = next(iter(state))
    state[name].add_(1.0)  # a copy: the level is untouched
    assert not torch.equal(state[name], stack.modules[name].B["agent"].detach())
    stack.load_level_state("swarm", stack.level_state("agent"))
    assert all(torch.equal(a, b) for a, b in zip(stack.level_state("swarm").values(),
                                                 stack.level_state("agent").values(), strict=True))


def test_a_level_over_a_bf16_base_exports_to_peft_with_the_same_logits(tmp_path, tokens):
    model = make_tiny("llama").to(torch.bfloat16)
    stack = LevelStack.attach(model, LevelsConfig(rank=8, scale=0.5))
    randomize(stack, std=0.1)
    directory = stack.export_peft("agent", tmp_path / "agent")
    stack.set_enabled(["agent"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = model(tokens).logits.float()
        peft = PeftModel.from_pretrained(make_tiny("llama").to(torch.bfloat16), str(directory)).eval()
        theirs = peft(tokens).logits.float()
        plain = make_tiny("llama").to(torch.bfloat16)(tokens).logits.float()
    lora = [p for n, p in peft.named_parameters() if "lora_" in n]
    assert lora and {p.dtype for p in lora} == {torch.float32}  # PEFT, too, keeps the adapter in float32
    assert float((ours - plain).abs().max()) > 0.05  # the level changes the logits
    assert float((ours - theirs).abs().max()) < 1e-2  # both round the float32 sum once to bf16
