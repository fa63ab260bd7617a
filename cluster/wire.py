"""Tensors outside Ray (journal, gRPC): a msgpack map of metadata plus raw buffers. Never pickle.

Layout: ``{"v": 1, "meta": {...}, "tensors": [[name, dtype, shape, nbytes, raw], ...]}``.
Decoding checks everything before allocating a tensor: msgpack's own length limits,
then per tensor the dtype whitelist, the shape, ``nbytes == prod(shape) * itemsize``
and the raw length, and the total against explicit limits. Any violation raises a
``WireError`` naming the tensor and field; nothing partial is returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import torch
from torch import Tensor

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
VERSION = 1


class WireError(ValueError):
    """A payload that cannot be decoded or encoded; the message names the tensor and field."""


@dataclass(frozen=True)
class Limits:
    """Explicit size limits (bytes and counts) for one payload."""

    max_tensor_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30
    max_tensors: int = 100_000
    max_ndim: int = 8


DEFAULT_LIMITS = Limits()


def encode(tensors: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None,
           limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode named tensors (any device; sent as contiguous CPU bytes) and msgpack-able metadata."""
    entries, total = [], 0
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise WireError(f"tensor names must be strings, got {name!r}")
        if not isinstance(t, Tensor):
            raise WireError(f"tensor {name!r}: not a tensor ({type(t).__name__})")
        if t.dtype not in NAMES:
            raise WireError(f"tensor {name!r}: dtype {t.dtype} is not allowed (allowed: {sorted(DTYPES)})")
        raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        if len(raw) > limits.max_tensor_bytes:
            raise WireError(f"tensor {name!r}: {len(raw)} bytes exceeds the limit of {limits.max_tensor_bytes}")
        total += len(raw)
        entries.append([name, NAMES[t.dtype], list(t.shape), len(raw), raw])
    if total > limits.max_total_bytes:
        raise WireError(f"payload of {total} bytes exceeds the limit of {limits.max_total_bytes}")
    try:
        return msgpack.packb({"v": VERSION, "meta": dict(meta or {}), "tensors": entries}, use_bin_type=True)
    except (TypeError, ValueError) as e:
        raise WireError(f"meta is not msgpack-serialisable: {e}") from None


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not allowed")


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Decode a payload from :func:`encode` into (tensors, meta); raises ``WireError`` on anything malformed."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError(f"payload must be bytes, got {type(payload).__name__}")
    try:
        obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True, ext_hook=_refuse_ext,
                              max_bin_len=limits.max_tensor_bytes, max_str_len=1 << 20,
                              max_array_len=max(limits.max_tensors, 64), max_map_len=1 << 16)
    except WireError:
        raise
    except Exception as e:  # msgpack raises several types for malformed input
        raise WireError(f"not a valid msgpack payload: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "meta", "tensors"}:
        raise WireError("payload must be a map with exactly the keys 'v', 'meta', 'tensors'")
    if obj["v"] != VERSION:
        raise WireError(f"unsupported payload version {obj['v']!r} (this side speaks {VERSION})")
    if not isinstance(obj["meta"], dict) or not isinstance(obj["tensors"], list):
        raise WireError("'meta' must be a map and 'tensors' a list")
    if len(obj["tensors"]) > limits.max_tensors:
        raise WireError(f"{len(obj['tensors'])} tensors exceed the limit of {limits.max_tensors}")
    checked, total = [], 0
    for i, entry in enumerate(obj["tensors"]):
        if not isinstance(entry, list) or len(entry) != 5:
            raise WireError(f"tensor entry {i}: must be [name, dtype, shape, nbytes, raw]")
        name, dtype, shape, nbytes, raw = entry
        where = f"tensor {name!r}" if isinstance(name, str) else f"tensor entry {i}"
        if not isinstance(name, str):
            raise WireError(f"{where}: name must be a string")
        if dtype not in DTYPES:
            raise WireError(f"{where}: dtype {dtype!r} is not allowed (allowed: {sorted(DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > limits.max_ndim
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise WireError(f"{where}: shape must be a list of at most {limits.max_ndim} non-negative ints")
        itemsize = torch.empty((), dtype=DTYPES[dtype]).element_size()
        expected = math.prod(shape) * itemsize
        if not isinstance(nbytes, int) or nbytes != expected:
            raise WireError(f"{where}: nbytes {nbytes!r} does not match shape {shape} x {itemsize} bytes")
        if not isinstance(raw, bytes) or len(raw) != nbytes:
            raise WireError(f"{where}: raw data has {len(raw) if isinstance(raw, bytes) else '?'} bytes, "
                            f"header says {nbytes}")
        total += nbytes
        if total > limits.max_total_bytes:
            raise WireError(f"payload exceeds the limit of {limits.max_total_bytes} bytes")
        checked.append((name, dtype, shape, raw))
    names = [c[0] for c in checked]
    if len(set(names)) != len(names):
        raise WireError("duplicate tensor names in payload")
    tensors = {}
    for name, dtype, shape, raw in checked:
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(DTYPES[dtype]).reshape(shape) if raw else torch.empty(shape, dtype=DTYPES[dtype])
    return tensors, obj["meta"]
