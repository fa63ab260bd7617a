"""The core of a shared level's server (no Ray): validated pushes, merges, pulls, consensus, durability.

A push ``(sender, seq, base_version, tensors)`` carries an agent's accumulated gradient
for the level. It is validated, journaled (fsync) and only then acknowledged; pushes
collect in a window. A full window is merged by the configured aggregator with
staleness weights ``1 / (1 + version - base_version)``. The merged gradient, scaled to
unit RMS, is applied as ``drive = -lr * merged / rms(merged)`` through the level's
``LevelOptimizer``; each merge raises the version. Checkpoints (right after a merge,
every ``checkpoint_every`` merges) hold the level, the optimizer and aggregator state
and the per-sender sequence numbers. A restart recovers the checkpoint and replays the
journal through the same code, so it reaches the same version and the same tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cluster.store import LevelStore
from layers.circuits import CircuitsConfig, Proposal, consensus
from layers.config import check_fields
from layers.dynamics import DynamicsConfig, LevelOptimizer
from layers.merge import MergeConfig, build_aggregator


@dataclass
class ServerConfig:
    """The ``server`` section: merge window, admission limits, step size, checkpoint period."""

    window: int = 4
    max_staleness: int = 8
    max_norm: float = 1e4
    lr: float = 1e-3
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        check_fields("server", self, window=self.window >= 1, max_staleness=self.max_staleness >= 0,
                     checkpoint_every=self.checkpoint_every >= 1,
                     max_norm=math.isfinite(self.max_norm) and self.max_norm > 0,
                     lr=math.isfinite(self.lr) and self.lr > 0)


class LevelServer:
    """One shared level instance (e.g. ``swarm/text``) holding B for every module."""

    def __init__(self, name: str, shapes: Mapping[str, tuple[int, int]], *, merge: MergeConfig | None = None,
                 dynamics: DynamicsConfig | None = None, circuits: CircuitsConfig | None = None,
                 server: ServerConfig | None = None, store_dir: str | Path | None = None,
                 config_hash: str = "") -> None:
        self.name, self.shapes = name, dict(shapes)
        self.cfg, self.circuits = server or ServerConfig(), circuits or CircuitsConfig()
        self.B = {m: torch.zeros(s) for m, s in self.shapes.items()}
        self.aggregator = build_aggregator(merge or MergeConfig())
        self.optimizer = LevelOptimizer(self.B, dynamics or DynamicsConfig())
        self.version = 0
        self.last_seq: dict[str, int] = {}
        self.window: list[tuple[dict[str, Any], dict[str, Tensor]]] = []
        self.stats: dict[str, Any] = {"accepted": 0, "merges": 0, "promotions": 0, "rejected": {}}
        self.store = LevelStore(store_dir, config_hash=config_hash) if store_dir is not None else None
        self.warnings: list[str] = []
        if self.store is not None:
            self._recover()

    # ------------------------------------------------------------------ push
    def _reject(self, reason: str) -> dict[str, Any]:
        kind = reason.split(":")[0]
        self.stats["rejected"][kind] = self.stats["rejected"].get(kind, 0) + 1
        return {"status": "rejected", "reason": reason, "version": self.version}

    def _check(self, sender: str, seq: int, base_version: int, tensors: Mapping[str, Any]) -> str | None:
        if not isinstance(sender, str) or not sender:
            return "bad sender: must be a non-empty string"
        if not isinstance(seq, int) or seq <= self.last_seq.get(sender, 0):
            return f"duplicate seq: {seq!r} is not above {self.last_seq.get(sender, 0)} for {sender!r}"
        if not isinstance(base_version, int) or not 0 <= base_version <= self.version:
            return f"bad base_version: {base_version!r} (server at {self.version})"
        if self.version - base_version > self.cfg.max_staleness:
            return f"staleness: {self.version - base_version} versions behind, limit {self.cfg.max_staleness}"
        unknown = sorted(set(tensors) - set(self.shapes))
        if unknown:
            return f"unknown module: {unknown[0]!r}"
        missing = sorted(set(self.shapes) - set(tensors))
        if missing:
            return f"missing module: {missing[0]!r}"
        total = 0.0
        for m, t in tensors.items():
            if not isinstance(t, Tensor) or t.dtype != torch.float32:
                return f"bad dtype: {m!r} must be a float32 tensor"
            if tuple(t.shape) != tuple(self.shapes[m]):
                return f"bad shape: {m!r} is {tuple(t.shape)}, expected {tuple(self.shapes[m])}"
            if not bool(torch.isfinite(t).all()):
                return f"not finite: {m!r} contains NaN or Inf"
            total += float(t.double().pow(2).sum())
        if math.sqrt(total) > self.cfg.max_norm:
            return f"norm: {math.sqrt(total):.3g} above the limit {self.cfg.max_norm:.3g}"
        return None

    def push(self, sender: str, seq: int, base_version: int, tensors: Mapping[str, Tensor]) -> dict[str, Any]:
        """Validate, journal, then acknowledge; merges when the window is full. Never raises on bad input."""
        reason = self._check(sender, seq, base_version, tensors)
        if reason:
            return self._reject(reason)
        meta = {"sender": sender, "seq": seq, "base_version": base_version}
        if self.store is not None:
            self.store.append(tensors, meta)  # durable before the acknowledgement
        self._accept(meta, {m: t.detach().clone() for m, t in tensors.items()})
        return {"status": "accepted", "version": self.version}

    def _accept(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.last_seq[meta["sender"]] = meta["seq"]
        self.stats["accepted"] += 1
        self.window.append((meta, tensors))
        if len(self.window) >= self.cfg.window:
            self.merge()

    # ------------------------------------------------------------------ merge
    def merge(self) -> None:
        """Merge the window (if any) and apply it to the level."""
        if not self.window:
            return
        weights = [1.0 / (1 + self.version - meta["base_version"]) for meta, _ in self.window]
        merged = self.aggregator.aggregate([t for _, t in self.window], weights)
        rms = math.sqrt(sum(float(t.double().pow(2).sum()) for t in merged.values())
                        / sum(t.numel() for t in merged.values()))
        if rms > 0:
            drive = {m: -self.cfg.lr * t / rms for m, t in merged.items()}
            agreement = self.aggregator.stats.get("mean_agreement", 1.0)
            self.optimizer.step(drive, contributions=self.aggregator.stats["k_eff"] * agreement)
        self.window = []
        self.version += 1
        self.stats["merges"] += 1
        if self.store is not None and self.stats["merges"] % self.cfg.checkpoint_every == 0:
            self.checkpoint()

    # ------------------------------------------------------------------ pull and circuits
    def pull(self, since_version: int = -1) -> dict[str, Any]:
        """``{"version"}`` alone if nothing changed since ``since_version``, else also the tensors."""
        if since_version == self.version:
            return {"version": self.version, "changed": False}
        return {"version": self.version, "changed": True, "tensors": {m: t.clone() for m, t in self.B.items()}}

    def propose(self, proposals: list[Proposal]) -> dict[str, Any]:
        """Run consensus; add accepted circuits to the level; return removals per agent and rejections."""
        result = consensus(proposals, self.shapes, self.circuits)
        for c in result.accepted:
            self.B[c.module].add_(c.sigma * torch.outer(c.u, c.w).float())
        if result.accepted:
            self.version += 1
            self.stats["promotions"] += len(result.accepted)
        return {"version": self.version, "accepted": len(result.accepted), "removals": result.removals,
                "rejected": [(p.agent_id, p.module, r) for p, r in result.rejected]}

    # ------------------------------------------------------------------ durability
    def checkpoint(self) -> None:
        """Checkpoint now (call after a merge: the window must be empty)."""
        if self.store is None:
            return
        if self.window:
            self.merge()
        tensors = {f"B/{m}": t for m, t in self.B.items()}
        opt = self.optimizer.state_dict()
        for m, st in opt["blocks"].items():
            tensors.update({f"opt/{m}/{k}": v.to(torch.float32) if v.dtype == torch.bool else v for k, v in st.items()})
        layout: dict[str, Any] = {}  # aggregator state: tensors, lists of tensors, or None
        for key, value in self.aggregator.state_dict().items():
            if isinstance(value, Tensor):
                tensors[f"agg/{key}"], layout[key] = value, "tensor"
            elif isinstance(value, list):
                tensors.update({f"agg/{key}/{i}": v for i, v in enumerate(value)})
                layout[key] = len(value)
            else:
                layout[key] = None
        meta = {"version": self.version, "last_seq": self.last_seq, "thresholds": opt["thresholds"],
                "references": opt["references"], "steps": opt["steps"], "stats": self.stats, "aggregator": layout}
        self.store.checkpoint(self.version, tensors, meta)

    def _recover(self) -> None:
        rec = self.store.recover()
        self.warnings = rec.warnings
        if rec.checkpoint is not None:
            t, meta = rec.tensors, rec.checkpoint.meta
            for m in self.B:
                self.B[m].copy_(t[f"B/{m}"])
            blocks = {m: {k[len(f"opt/{m}/"):]: v for k, v in t.items() if k.startswith(f"opt/{m}/")}
                      for m in self.B}
            for st in blocks.values():
                if "screened" in st:
                    st["screened"] = st["screened"].bool()
            self.optimizer.load_state_dict({"blocks": blocks, "thresholds": meta["thresholds"],
                                            "references": meta["references"], "steps": meta["steps"]})
            agg = {}
            for key, kind in meta["aggregator"].items():
                agg[key] = (t[f"agg/{key}"] if kind == "tensor" else None if kind is None
                            else [t[f"agg/{key}/{i}"] for i in range(kind)])
            self.aggregator.load_state_dict(agg)
            self.version, self.last_seq, self.stats = meta["version"], dict(meta["last_seq"]), meta["stats"]
        for tensors, meta in rec.records:  # replay through the same code path, without re-journaling
            self._accept(meta, tensors)
