import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from layers import LevelsConfig, LevelStack
from layers.eval import Tally, bits_per_byte, loss_bits_per_byte, model_bits_per_byte, pooled, tally, token_bits
from tests.conftest import make_tiny, randomize


def _brute(logits: torch.Tensor, targets: torch.Tensor, target_bytes: torch.Tensor | None = None) -> float:
    """Token by token in float64: -log2 softmax(logits)[target], summed, over the bytes covered."""
    bits, n_bytes = 0.0, 0.0
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            row = [float(x) for x in logits[b, t]]
            top = max(row)
            log_z = top + math.log(sum(math.exp(x - top) for x in row))
            bits += (log_z - row[int(targets[b, t])]) / math.log(2)
            n_bytes += 1.0 if target_bytes is None else float(target_bytes[b, t])
    return bits / n_bytes


def _case(seed: int, b: int = 3, t: int = 7, v: int = 11, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, t, v, generator=g)  # (B, T, V)
    targets = torch.randint(0, v, (b, t), generator=g)  # (B, T)
    counts = torch.randint(0, 4, (b, t), generator=g)  # (B, T) bytes per target
    counts[0, 0] = 1  # at least one byte
    return logits, targets, counts


def test_equals_a_token_by_token_loop():
    logits, targets, counts = _case(0)
    assert bits_per_byte(logits, targets) == pytest.approx(_brute(logits, targets), rel=1e-6)
    assert bits_per_byte(logits, targets, counts) == pytest.approx(_brute(logits, targets, counts), rel=1e-6)
    # uniform predictions: exactly log2(V) bits per one-byte token
    assert bits_per_byte(torch.zeros(2, 5, 256), torch.zeros(2, 5, dtype=torch.long)) == pytest.approx(8.0)


def test_units_are_bits_per_byte_of_the_cross_entropy():
    logits, targets, _ = _case(1)
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert bits_per_byte(logits, targets) == pytest.approx(float(nats) / math.log(2), rel=1e-6)
    # a token covering two bytes halves its share
    assert bits_per_byte(logits, targets, 2 * targets.numel()) == pytest.approx(float(nats) / math.log(2) / 2, rel=1e-6)
    assert loss_bits_per_byte(nats, targets) == pytest.approx(float(nats) / math.log(2), rel=1e-12)
    assert loss_bits_per_byte(nats, targets, 2 * targets.numel()) == pytest.approx(float(nats) / math.log(2) / 2)


def test_batched_equals_unbatched():
    logits, targets, counts = _case(2)
    one_by_one = [tally(logits[i], targets[i], counts[i]) for i in range(targets.shape[0])]  # (T, V), (T,)
    assert pooled(one_by_one) == pytest.approx(bits_per_byte(logits, targets, counts), rel=1e-6)
    bits = token_bits(logits, targets)
    assert bits.shape == targets.shape and bits.dtype == torch.float32
    torch.testing.assert_close(token_bits(logits[1], targets[1]), bits[1])


def test_pooled_is_sum_over_sum_not_the_mean_of_ratios():
    logits, targets, _ = _case(3, b=2)
    counts = torch.tensor([[1] * 7, [3] * 7])  # the second window covers three times the bytes
    parts = [tally(logits[i:i + 1], targets[i:i + 1], counts[i:i + 1]) for i in range(2)]
    assert pooled(parts) == pytest.approx(sum(p.bits for p in parts) / sum(p.bytes for p in parts), rel=1e-12)
    assert pooled(parts) == pytest.approx(bits_per_byte(logits, targets, counts), rel=1e-6)
    mean_of_ratios = sum(p.bits_per_byte for p in parts) / 2
    assert abs(pooled(parts) - mean_of_ratios) > 1e-3
    assert (parts[0] + parts[1]).bytes == 28 and Tally().bits == 0.0


def test_float32_whatever_the_logits_dtype():
    logits, targets, _ = _case(4)
    half = logits.to(torch.bfloat16)
    assert bits_per_byte(half, targets) == pytest.approx(_brute(half.float(), targets), rel=1e-6)
    assert token_bits(half, targets).dtype == torch.float32


def test_no_gradient_when_evaluating_but_token_bits_is_differentiable():
    logits, targets, _ = _case(5)
    logits.requires_grad_(True)
    assert isinstance(tally(logits, targets).bits, float)
    token_bits(logits, targets).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(1, 6), v=st.integers(2, 9), scale=st.floats(0.0, 20.0),
       seed=st.integers(0, 2**31 - 1), per_token=st.booleans())
def test_property_matches_the_loop_and_pools_exactly(b, t, v, scale, seed, per_token):
    logits, targets, counts = _case(seed, b, t, v, scale)
    counts = counts if per_token else None
    expected = _brute(logits, targets, counts)
    got = bits_per_byte(logits, targets, counts)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert got >= 0
    # one tally per window; a window may cover no bytes (tally refuses it alone), its bits still count
    parts = [Tally(tally(logits[i], targets[i]).bits, t if counts is None else float(counts[i].sum()))
             for i in range(b)]
    assert pooled(parts) == pytest.approx(got, rel=1e-5, abs=1e-6)


def test_model_bits_per_byte_pools_batches_and_keeps_the_model_state():
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(names=["fast", "slow"], rank=4))
    randomize(stack)
    windows = torch.randint(0, 256, (5, 9), generator=torch.Generator().manual_seed(0))  # (N, T+1)
    with torch.no_grad():
        logits = model(windows[:, :-1]).logits  # (N, T, V)
    whole = bits_per_byte(logits, windows[:, 1:])
    for batch_size in (1, 2, 5, 16):
        assert model_bits_per_byte(model, windows, batch_size=batch_size) == pytest.approx(whole, rel=1e-5)
    counts = torch.full((5, 8), 2)
    assert model_bits_per_byte(model, windows, window_bytes=counts) == pytest.approx(whole / 2, rel=1e-5)
    assert model_bits_per_byte(model, windows, window_bytes=80) == pytest.approx(whole / 2, rel=1e-5)
    assert stack.enabled == ("fast", "slow") and not model.training
    assert all(p.grad is None for p in stack.parameters())


def test_rejects_bad_input_naming_the_argument():
    logits, targets, counts = _case(6)
    with pytest.raises(ValueError, match="targets: expected shape"):
        bits_per_byte(logits, targets[:, :-1])
    with pytest.raises(ValueError, match="logits: expected"):
        bits_per_byte(logits[0, 0], targets)
    with pytest.raises(ValueError, match="targets: expected integer"):
        bits_per_byte(logits, targets.float())
    with pytest.raises(ValueError, match=r"targets: token ids must lie in \[0, 11\)"):
        bits_per_byte(logits, targets + 11)
    with pytest.raises(ValueError, match="target_bytes: expected shape"):
        bits_per_byte(logits, targets, counts[:, :-1])
    with pytest.raises(ValueError, match="target_bytes: .*> 0"):
        bits_per_byte(logits, targets, torch.zeros_like(counts))
    with pytest.raises(ValueError, match="target_bytes: .*> 0"):
        bits_per_byte(logits, targets, 0)
    with pytest.raises(ValueError, match="target_bytes: byte counts must be >= 0"):
        bits_per_byte(logits, targets, counts - 5)
    with pytest.raises(ValueError, match="target_bytes: expected a tensor"):
        bits_per_byte(logits, targets, "3")
    with pytest.raises(ValueError, match="target_bytes"):
        bits_per_byte(logits[:, :0], targets[:, :0])  # no targets: no bytes
    with pytest.raises(ValueError, match="bytes"):
        _ = Tally(1.0, 0.0).bits_per_byte
    with pytest.raises(ValueError, match="bytes"):
        pooled([])
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="windows: expected"):
        model_bits_per_byte(model, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="windows: expected integer"):
        model_bits_per_byte(model, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="batch_size"):
        model_bits_per_byte(model, torch.zeros(4, 5, dtype=torch.long), batch_size=0)
    with pytest.raises(ValueError, match="window_bytes: expected shape"):
        model_bits_per_byte(model, torch.zeros(4, 5, dtype=torch.long), window_bytes=torch.ones(4, 5))
    with pytest.raises(ValueError, match="targets: expected a non-empty"):
        loss_bits_per_byte(1.0, torch.zeros(0, dtype=torch.long))
