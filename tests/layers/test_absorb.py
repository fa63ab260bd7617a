import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layers import LevelsConfig, LevelStack
from layers.absorb import add, cosine, degradation, fingerprint, logits_distance, plan_merge, split_shared
from tests.conftest import make_tiny


def _delta(seed: int, modules=("a", "b"), shape=(6, 4)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(shape, generator=g, dtype=torch.float64) for m in modules}


def test_cosine_and_task_arithmetic():
    d = _delta(0)
    assert cosine(d, d) == pytest.approx(1.0)
    assert cosine(d, {m: -t for m, t in d.items()}) == pytest.approx(-1.0)
    assert cosine(d, {m: torch.zeros_like(t) for m, t in d.items()}) == 0.0
    s = add([d, _delta(1)], [2.0, -1.0])
    assert torch.allclose(s["a"], 2 * d["a"] - _delta(1)["a"])


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 10_000))
def test_split_shared_is_exact_and_residuals_are_orthogonal_to_the_common_direction(n, seed):
    deltas = [_delta(seed + i) for i in range(n)]
    shared, residuals = split_shared(deltas)
    total = add(deltas)
    recon = add([shared, *residuals])
    assert all(torch.allclose(recon[m], total[m], atol=1e-10) for m in total)
    mean = add(deltas, [1 / n] * n)
    for r in residuals:
        assert abs(sum(float((r[m] * mean[m]).sum()) for m in r)) < 1e-8


def test_plan_merge_groups_by_similarity():
    base = _delta(0)
    near = {m: t + 0.05 * _delta(1)[m] for m, t in base.items()}  # cosine ~ 1
    half = {m: t + 1.2 * _delta(2)[m] for m, t in base.items()}  # cosine ~ 0.6
    other = _delta(3)  # cosine ~ 0
    d = plan_merge([base, near, other])
    assert d.groups == [[0, 1], [2]] and d.kinds == ["similar", "apart"]
    d = plan_merge([base, half, other])
    assert d.groups == [[0, 1], [2]] and d.kinds == ["moderate", "apart"]
    assert 0.3 < d.similarity[0][1] < 0.8
    with pytest.raises(ValueError, match="split_threshold"):
        plan_merge([base], merge_threshold=0.2, split_threshold=0.5)


def test_the_fingerprint_sees_a_changed_level_and_only_it():
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(names=["fast", "slow"], rank=4))
    windows = torch.randint(0, 64, (4, 17))
    before = fingerprint(model, stack, windows)
    assert set(before.bpb) == {"all", "fast", "slow"} and before.logits.shape[:2] == (4, 16)
    with torch.no_grad():
        for m in stack.modules.values():
            m.B["slow"].normal_(0, 0.5)
    after = fingerprint(model, stack, windows)
    deg = degradation(before, after, ["slow"])
    assert after.bpb["fast"] == pytest.approx(before.bpb["fast"])  # untouched level alone: unchanged
    assert deg["slow"] == pytest.approx(after.bpb["slow"] - before.bpb["slow"]) and deg["all"] != 0
    assert logits_distance(before, after) > 0 and math.isclose(logits_distance(before, before), 0, abs_tol=1e-6)
