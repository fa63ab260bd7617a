import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.wire import DTYPES, Limits, WireError, decode, encode


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(sorted(DTYPES)), shape=st.lists(st.integers(0, 5), max_size=4), seed=st.integers(0, 99))
def test_round_trip_is_exact(dtype, shape, seed):
    t = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 10).to(DTYPES[dtype])
    out, meta = decode(encode({"x": t, "y": torch.ones(2)}, {"seq": seed, "who": "a"}))
    assert meta == {"seq": seed, "who": "a"}
    assert out["x"].dtype == t.dtype and out["x"].shape == t.shape and torch.equal(out["x"], t)


def _payload(entries, meta=None, v=1):
    return msgpack.packb({"v": v, "meta": meta or {}, "tensors": entries}, use_bin_type=True)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\xc1garbage", "not a valid msgpack payload"),
        (msgpack.packb([1, 2]), "exactly the keys"),
        (_payload([], v=2), "unsupported payload version 2"),
        (_payload([["w", "complex64", [1], 8, b"\0" * 8]]), r"tensor 'w': dtype 'complex64' is not allowed"),
        (_payload([["w", "float32", [2], 4, b"\0" * 4]]), r"tensor 'w': nbytes 4 does not match shape \[2\]"),
        (_payload([["w", "float32", [2], 8, b"\0" * 5]]), r"tensor 'w': raw data has 5 bytes, header says 8"),
        (_payload([["w", "float32", [-1], 0, b""]]), r"tensor 'w': shape must be"),
        (_payload([["w", "float32", [1]]]), r"tensor entry 0: must be \[name, dtype, shape, nbytes, raw\]"),
        (_payload([[7, "float32", [1], 4, b"\0" * 4]]), r"tensor entry 0: name must be a string"),
        (_payload([["w", "float32", [1], 4, b"\0" * 4]] * 2), "duplicate tensor names"),
        (msgpack.packb({"v": 1, "meta": {}, "tensors": [msgpack.ExtType(5, b"x")]}), "extension type 5"),
    ],
)
def test_malformed_payloads_are_rejected_with_the_field_named(payload, message):
    with pytest.raises(WireError, match=message):
        decode(payload)


def test_size_limits_are_enforced_before_allocating():
    big = encode({"w": torch.zeros(1000)})
    with pytest.raises(WireError, match="exceeds the limit|not a valid msgpack"):
        decode(big, Limits(max_tensor_bytes=100))
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        encode({"w": torch.zeros(1000)}, limits=Limits(max_tensor_bytes=100))
    with pytest.raises(WireError, match="payload exceeds the limit of 5000"):
        decode(encode({"a": torch.zeros(1000), "b": torch.zeros(1000)}), Limits(max_total_bytes=5000))


def test_encode_refuses_bad_input():
    with pytest.raises(WireError, match=r"tensor 'c': dtype torch.complex64 is not allowed"):
        encode({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(WireError, match="not a tensor"):
        encode({"c": [1, 2]})
    with pytest.raises(WireError, match="meta is not msgpack-serialisable"):
        encode({}, {"x": object()})
