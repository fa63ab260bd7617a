import pytest
import torch

from layers.dynamics import SyncConfig, SyncGate, effective_samples


def test_effective_samples():
    assert effective_samples(0.9, 1) == pytest.approx(1.0)
    assert effective_samples(0.9, 10_000) == pytest.approx(19.0)
    assert effective_samples(0.9, 5) < effective_samples(0.9, 6)


def _windows(gate, source, limit):
    """Steps until each push, over ``limit`` pushes."""
    lengths, reasons = [], []
    for _ in range(limit):
        while True:
            reason = gate.observe(source())
            if reason:
                lengths.append(gate.steps)
                reasons.append(reason)
                gate.reset()
                break
    return lengths, reasons


def test_pure_noise_rarely_triggers_before_max_interval():
    gen = torch.Generator().manual_seed(0)
    gate = SyncGate(SyncConfig(max_interval=50))
    _, reasons = _windows(gate, lambda: torch.randn(2000, generator=gen), 20)
    assert reasons.count("coherent") <= 1


def test_consistent_drift_triggers_early():
    gen = torch.Generator().manual_seed(1)
    drift = torch.randn(2000, generator=gen)
    gate = SyncGate(SyncConfig(max_interval=50))
    lengths, reasons = _windows(gate, lambda: drift + 2.0 * torch.randn(2000, generator=gen), 10)
    assert set(reasons) == {"coherent"} and max(lengths) <= 15  # max_interval is 50


def test_min_interval_and_dict_updates():
    gate = SyncGate(SyncConfig(min_interval=3))
    u = {"a": torch.ones(4), "b": torch.ones(2, 2)}
    assert gate.observe(u) is None and gate.observe(u) is None
    assert gate.observe(u) == "coherent"
    gate.reset()
    with pytest.raises(ValueError, match="structure changed"):
        gate.observe({"a": torch.ones(4), "b": torch.ones(3)}) or gate.observe({"a": torch.ones(5), "b": torch.ones(3)})
