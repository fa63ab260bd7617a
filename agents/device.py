"""Where an agent computes: ``agent.device`` resolved, state moved to and from it, its Ray GPU share.

The contract (docs/gpu.md): an agent computes on its device, but what leaves it is
device-independent. Everything it hands out (pushes, level state, checkpoint state,
proposals) is on CPU, and everything it takes in (pulled levels, a checkpoint) may come
from any device and is copied onto its own. So a level pushed by a CUDA agent merges on
a CPU level server and reloads, on any agent, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

CPU = torch.device("cpu")


def cuda_available() -> bool:
    """Whether torch sees a usable CUDA device (the test for ``auto``)."""
    return torch.cuda.is_available()


def resolve_device(name: str) -> torch.device:
    """The torch device of an ``agent.device`` value: ``auto`` (``cuda`` when available, else
    ``cpu``), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: naming ``agent.device``, for another value, a CUDA device when torch sees
            none (no GPU, or a CPU-only torch), or an index beyond the visible GPUs.
    """
    from agents.config import DEVICE_PATTERN

    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"agent.device: {name!r} is not one of auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda") if cuda_available() else CPU
    if name == "cpu":
        return CPU
    if not cuda_available():
        raise ValueError(f"agent.device: {name!r} but torch sees no CUDA device (no GPU, or torch "
                         f"{torch.__version__} built without CUDA); use agent.device=cpu or auto")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"agent.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) are "
                         "visible (CUDA_VISIBLE_DEVICES renumbers them from 0)")
    return device


def placement(device: str, gpus_per_agent: float, cluster_gpus: float) -> tuple[str, float]:
    """``(device inside the actor, num_gpus to ask Ray for)`` of an agent actor.

    ``cpu``: no GPU. ``auto``: a ``gpus_per_agent`` share of a GPU when the cluster has GPUs
    (``cluster_gpus`` > 0), else CPU (decided here, not in the actor: Ray leaves every GPU
    visible to an actor that asked for none). ``cuda``/``cuda:N``: a share of a GPU, and
    the actor uses ``cuda``, the one GPU Ray assigns it (``CUDA_VISIBLE_DEVICES``), so the
    index is not used under Ray.
    """
    if device == "cpu" or (device == "auto" and cluster_gpus <= 0):
        return "cpu", 0.0
    return "cuda", float(gpus_per_agent)


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor inside (nested dicts, lists, tuples) moved to ``device``;
    other values as they are. A tensor already there is returned as is (not copied)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def to_host(obj: Any) -> Any:
    """``obj`` with every tensor inside detached and on CPU (copied from another device; a CPU
    tensor is returned detached, sharing its storage: callers that hand it out clone first)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_host(v) for v in obj)
    return obj
