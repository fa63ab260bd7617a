"""What a checkpoint is: its manifest's fields, its content id, and how to verify one's bytes.

A checkpoint's id is the SHA-256 of the config hash it was written under and every tensor (name,
dtype, shape, bytes), so a reader can tell a corrupt or foreign checkpoint from a good one without
trusting any file's name or time. :class:`cluster.store.LevelStore` writes and recovers them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load
from torch import Tensor

from cluster.lineage import projection_digest


def tensors_id(tensors: Mapping[str, Tensor], config_hash: str) -> str:
    """SHA-256 over the config hash and every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(config_hash.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\x00{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Checkpoint:
    """One checkpoint's manifest: its id (SHA-256), its parent's id, the version it holds, the config
    hash it was written under, its meta (JSON) and its directory (a :class:`cluster.storage.RemotePath`
    on an object store)."""

    id: str
    parent: str | None
    version: int
    config_hash: str
    meta: dict[str, Any]
    path: Path


def checkpoint_problems(path: str | Path, read: Callable[[str], bytes], config_hash: str) -> list[str]:
    """What is wrong with the checkpoint at ``path`` whose files ``read(file name)`` returns (empty:
    nothing): an unreadable manifest or tensor file, tensors that do not hash to the manifest's id, a
    recorded projection digest the tensors do not give, a config hash other than ``config_hash``."""
    try:
        manifest = json.loads(read("manifest.json"))
        cid, written_under = manifest["id"], manifest["config_hash"]
        tensors = load(read(manifest.get("tensors", "tensors.safetensors")))
    except Exception as e:  # noqa: BLE001 - JSON, a missing key, or safetensors' own SafetensorError
        return [f"{path}: unreadable ({type(e).__name__}: {e})"]
    problems = []
    actual = tensors_id(tensors, written_under)
    if actual != cid:
        problems.append(f"{path}/tensors.safetensors: the tensors hash to {actual[:16]}..., "
                        f"manifest.json says id {cid[:16]}... (corrupt)")
    recorded = manifest.get("projection")
    if recorded is not None and recorded != projection_digest(written_under, tensors):
        problems.append(f"{path}/manifest.json: projection digest {recorded[:16]}... does not match the "
                        f"tensors' ({projection_digest(written_under, tensors)[:16]}...)")
    if written_under != config_hash:
        problems.append(f"{path}/manifest.json: written under config hash {written_under[:16]}..., "
                        f"expected {config_hash[:16]}...")
    return problems
