"""Nested state <-> (flat tensors, JSON meta), so any state dict can go into one checkpoint.

A state is nested dicts and lists whose leaves are tensors or JSON values. ``flatten``
moves every tensor into a flat ``{path: tensor}`` dict (for safetensors) and leaves a
``{"__tensor__": path}`` marker in the JSON skeleton; ``unflatten`` puts them back.
Keys must be strings without ``/`` ambiguity problems: a path is the keys joined by
``/`` with list indices as numbers, so it is unique for any tree of string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

_MARK = "__tensor__"


def flatten(state: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """``(tensors, skeleton)``; tensors are stored as they are (callers clone if needed)."""
    tensors: dict[str, Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Tensor):
            tensors[path] = node.detach().contiguous()
            return {_MARK: path}
        if isinstance(node, Mapping):
            out = {}
            for k, v in node.items():
                if not isinstance(k, str):
                    raise TypeError(f"state key {k!r} at {path or '/'} must be a string")
                out[k] = walk(v, f"{path}/{k}" if path else k)
            return out
        if isinstance(node, list | tuple):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(f"state at {path or '/'} holds a {type(node).__name__}; only tensors and JSON values")

    skeleton = walk(state, prefix)
    return tensors, skeleton


def unflatten(tensors: Mapping[str, Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten`. Raises KeyError naming a tensor the checkpoint lacks."""

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            if set(node) == {_MARK}:
                path = node[_MARK]
                if path not in tensors:
                    raise KeyError(f"checkpoint lacks the tensor {path!r}")
                return tensors[path]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)
