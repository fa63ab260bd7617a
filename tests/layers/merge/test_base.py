import pytest
import torch

from layers.merge import AGGREGATORS, make_aggregator


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@pytest.mark.parametrize(
    "updates, message",
    [
        ([torch.ones(3), torch.tensor([1.0, float("nan"), 0.0])], r"update 1: contains NaN or Inf"),
        ([torch.ones(3), torch.tensor([1.0, float("inf"), 0.0])], r"update 1: contains NaN or Inf"),
        ([torch.ones(3), torch.ones(4)], r"update 1: shape \(4,\) differs from update 0's \(3,\)"),
        ([{"a": torch.ones(2)}, {"a": torch.ones(2), "b": torch.ones(1)}], r"update 1: keys differ .*extra \['b'\]"),
        ([{"a": torch.ones(2)}, {"a": torch.ones(3)}], r"update 1, key 'a': shape \(3,\)"),
        ([{"a": torch.ones(2)}, {"a": torch.tensor([0.0, float("nan")])}], r"update 1, key 'a': contains NaN"),
        ([torch.ones(2), {"a": torch.ones(2)}], r"update 1: expected a tensor"),
        ([torch.ones(2, dtype=torch.int64)], r"update 0: dtype torch.int64 is not floating point"),
        ([], r"no updates"),
    ],
)
def test_bad_updates_are_rejected_with_the_entry_named(name, updates, message):
    with pytest.raises(ValueError, match=message):
        make_aggregator(name).aggregate(updates)


@pytest.mark.parametrize("weights, message", [([1.0], "1 weights for 2 updates"), ([1.0, -1.0], r"weights\[1\]"),
                                               ([0.0, 0.0], "sum must be > 0"), ([1.0, float("nan")], r"weights\[1\]")])
def test_bad_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        make_aggregator("resonance").aggregate([torch.ones(2), torch.ones(2)], weights)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multi_krum"])
def test_one_vote_rules_refuse_weights(name):
    with pytest.raises(ValueError, match="weights are not supported"):
        make_aggregator(name).aggregate([torch.ones(2), torch.ones(2)], [1.0, 2.0])
    make_aggregator(name).aggregate([torch.ones(2), torch.ones(2)], [2.0, 2.0])  # uniform is fine


def test_unknown_aggregator_is_named():
    with pytest.raises(ValueError, match="unknown aggregator 'avg'"):
        make_aggregator("avg")


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_output_keeps_dtype_and_structure(name):
    xs = [{"w": torch.randn(2, 3, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)} for _ in range(5)]
    out = make_aggregator(name).aggregate(xs)
    assert set(out) == {"w", "b"} and out["w"].shape == (2, 3) and out["w"].dtype == torch.float64
