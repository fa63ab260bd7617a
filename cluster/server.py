"""The core of a shared level's server (no Ray): validated pushes, merges, pulls, consensus, durability.

A push ``(sender, seq, base_version, tensors)`` carries an agent's accumulated gradient
for the level. It is validated, journaled (fsync) and only then acknowledged; pushes
collect in a window. A full window is merged by the configured aggregator with
staleness weights ``1 / (1 + version - base_version)`` (one vote per push for the
aggregators that take no weights). The merged gradient, scaled to unit RMS, is applied
as ``drive = -lr * merged / rms(merged)`` through the level's ``LevelOptimizer``; each
merge raises the version. Checkpoints (right after a merge, every ``checkpoint_every``
merges) hold the level, the optimizer and aggregator state and the per-sender sequence
numbers. A restart recovers the checkpoint and replays the
journal through the same code, so it reaches the same version and the same tensors.

Circuits: proposers (agents, or the servers below) send their stable circuits; once
``children`` distinct proposers are buffered, the consensus function decides. Accepted
circuits are journaled, added to the level, and each majority proposer finds its removal
in a mailbox it empties on its next ``propose``. A server with a ``parent`` forwards its
merged gradients upward through an :class:`~cluster.uplink.Uplink` and tracks its own
circuits to propose them upward; removals it gets back are journaled too.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cluster.state import flatten, unflatten
from cluster.store import LevelStore
from cluster.uplink import Uplink
from layers.circuits import CircuitsConfig, CircuitTracker, Proposal, consensus, proposals_from, remove_projection
from layers.config import check_fields
from layers.dynamics import DynamicsConfig, LevelOptimizer
from layers.merge import MergeConfig, build_aggregator


@dataclass
class ServerConfig:
    """The ``server`` section: merge window, admission limits, step size, checkpoint period.

    Attributes:
        window: pushes per merge at the first shared level (team servers).
        upper_window: pushes per merge above it (None: the server's number of children, so one
            forward from each child on average).
        max_staleness: versions a push's base may lag behind before it is refused.
        max_norm: pushes with a larger L2 norm are refused.
        lr: the level's step size (the merged gradient is scaled to unit RMS first).
        checkpoint_every: merges between checkpoints.
        propose_every: merges between upward circuit proposals (servers with a parent).
        forward_every: at most this many merges between forwards to the parent (earlier when
            the merged gradients are coherent; the sync gate's ``max_interval`` for servers).
    """

    window: int = 4
    max_staleness: int = 8
    max_norm: float = 1e4
    lr: float = 1e-3
    checkpoint_every: int = 10
    propose_every: int = 5
    forward_every: int = 2
    upper_window: int | None = None

    def __post_init__(self) -> None:
        check_fields("server", self, window=self.window >= 1, max_staleness=self.max_staleness >= 0,
                     checkpoint_every=self.checkpoint_every >= 1,
                     propose_every=self.propose_every >= 1, forward_every=self.forward_every >= 1,
                     upper_window=self.upper_window is None or self.upper_window >= 1,
                     max_norm=math.isfinite(self.max_norm) and self.max_norm > 0,
                     lr=math.isfinite(self.lr) and self.lr > 0)


class LevelServer:
    """One shared level instance (e.g. ``swarm/text``) holding B for every module."""

    def __init__(self, name: str, shapes: Mapping[str, tuple[int, int]], *, merge: MergeConfig | None = None,
                 dynamics: DynamicsConfig | None = None, circuits: CircuitsConfig | None = None,
                 server: ServerConfig | None = None, store_dir: str | Path | None = None,
                 config_hash: str = "", parent: str | None = None, children: int = 1) -> None:
        self.name, self.shapes = name, dict(shapes)
        self.cfg, self.circuits = server or ServerConfig(), circuits or CircuitsConfig()
        self.B = {m: torch.zeros(s) for m, s in self.shapes.items()}
        self.aggregator = build_aggregator(merge or MergeConfig())
        dynamics = dynamics or DynamicsConfig()
        self.optimizer = LevelOptimizer(self.B, dynamics)
        self.version = 0
        self.last_seq: dict[str, int] = {}
        self.window: list[tuple[dict[str, Any], dict[str, Tensor]]] = []
        self.stats: dict[str, Any] = {"accepted": 0, "merges": 0, "promotions": 0, "removed": 0, "forwarded": 0,
                                      "rejected": {}, "rejected_proposals": {}}
        # the level above: forwarding of merged gradients and upward circuit proposals
        self.parent, self.children = parent, max(1, children)
        gate = dataclasses.replace(dynamics.sync, max_interval=self.cfg.forward_every,
                                   min_interval=min(dynamics.sync.min_interval, self.cfg.forward_every))
        self.uplink = Uplink(name, self.shapes, gate) if parent else None
        self.tracker = CircuitTracker(self.circuits)  # its own circuits: to list, and to propose upward
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)  # recent merges, promotions, phases, rejections
        self.event_seq = 0
        self._phase_mark = 0.0  # screened fraction at the last phase event
        self.proposals: dict[str, list[Proposal]] = {}  # proposer -> its latest proposals, until consensus runs
        self.mailbox: dict[str, list[dict[str, Any]]] = {}  # proposer -> removals it has not collected yet
        self.rejections: dict[str, list[tuple[str, str]]] = {}
        self.store = LevelStore(store_dir, config_hash=config_hash) if store_dir is not None else None
        self.warnings: list[str] = []
        if self.store is not None:
            self._recover()

    # ------------------------------------------------------------------ push
    def _event(self, kind: str, detail: str) -> None:
        self.event_seq += 1
        self.events.append({"seq": self.event_seq, "kind": kind, "version": self.version, "detail": detail,
                            "time": time.time()})

    def events_since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq`` (the newest 1000 are kept, in memory)."""
        return [e for e in self.events if e["seq"] > seq]

    def count(self, bucket: str, reason: str) -> str:
        """Count a refusal under ``stats[bucket][kind]``, the kind being the reason's first words."""
        kind = reason.split(":")[0]
        counts = self.stats.setdefault(bucket, {})
        counts[kind] = counts.get(kind, 0) + 1
        return kind

    def _reject(self, reason: str) -> dict[str, Any]:
        self.count("rejected", reason)
        self._event("rejected", reason)
        return {"status": "rejected", "reason": reason, "version": self.version}

    def _check(self, sender: str, seq: int, base_version: int, tensors: Mapping[str, Any]) -> str | None:
        if not isinstance(sender, str) or not sender:
            return "bad sender: must be a non-empty string"
        if not isinstance(tensors, Mapping):
            return f"bad tensors: a mapping module -> tensor, got {type(tensors).__name__}"
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
        # aggregators that count one vote per push (median, trimmed mean, Krum) take no staleness weights
        merged = self.aggregator.aggregate([t for _, t in self.window],
                                           weights if self.aggregator.supports_weights else None)
        rms = math.sqrt(sum(float(t.double().pow(2).sum()) for t in merged.values())
                        / sum(t.numel() for t in merged.values()))
        if rms > 0:
            drive = {m: -self.cfg.lr * t / rms for m, t in merged.items()}
            agreement = self.aggregator.stats.get("mean_agreement", 1.0)
            self.optimizer.step(drive, contributions=self.aggregator.stats["k_eff"] * agreement)
        if self.uplink is not None:
            self.uplink.observe(merged)
        self.tracker.update(self.B)
        self.window = []
        self.version += 1
        self.stats["merges"] += 1
        stats = self.aggregator.stats
        self._event("merge", f"{len(weights)} pushes, k_eff {stats.get('k_eff', 0):.2f}, "
                             f"agreement {stats.get('mean_agreement', 1.0):.2f}")
        screened = self.optimizer.screened_fraction()
        if abs(screened - self._phase_mark) >= 0.05:
            self._event("phase", f"screened fraction {self._phase_mark:.2f} -> {screened:.2f}")
            self._phase_mark = screened
        if self.store is not None and self.stats["merges"] % self.cfg.checkpoint_every == 0:
            self.checkpoint()

    def seen(self, sender: str) -> int:
        """The highest seq accepted from ``sender`` (0: none); a restarted sender resumes above it."""
        return self.last_seq.get(sender, 0)

    # ------------------------------------------------------------------ pull
    def pull(self, since_version: int = -1) -> dict[str, Any]:
        """``{"version"}`` alone if nothing changed since ``since_version``, else also the tensors."""
        if since_version == self.version:
            return {"version": self.version, "changed": False}
        return {"version": self.version, "changed": True, "tensors": {m: t.clone() for m, t in self.B.items()}}

    # ------------------------------------------------------------------ circuits
    def propose(self, sender: str, proposals: list[Proposal]) -> dict[str, Any]:
        """Buffer ``sender``'s proposals (its latest set replaces an older one); once ``children``
        distinct proposers are in, run consensus. Returns removals waiting for ``sender``
        (from this round or an earlier one) and the rejections of its proposals."""
        bad = self._check_proposals(sender, proposals)
        if bad:
            self.count("rejected_proposals", bad)
            return {"status": "rejected", "reason": bad, "version": self.version, "removals": []}
        self.proposals[sender] = list(proposals)
        if len(self.proposals) >= self.children:
            batch = [p for props in self.proposals.values() for p in props]
            self.proposals = {}
            result = consensus(batch, self.shapes, self.circuits)
            if result.accepted:
                tensors, meta = _circuits_record(result)
                if self.store is not None:
                    self.store.append(tensors, meta)
                self._apply_circuits(tensors, meta)
            for p, reason in result.rejected:
                self.rejections.setdefault(p.agent_id, []).append((p.module, reason))
        rejected = self.rejections.pop(sender, [])
        return {"status": "accepted", "version": self.version, "removals": self.mailbox.pop(sender, []),
                "rejected": rejected}

    def _check_proposals(self, sender: str, proposals: Any) -> str | None:
        if not isinstance(sender, str) or not sender:
            return "bad sender: must be a non-empty string"
        if not isinstance(proposals, list) or not all(isinstance(p, Proposal) for p in proposals):
            return "bad proposals: must be a list of Proposal"
        others = sorted({p.agent_id for p in proposals} - {sender})
        if others:
            return f"sender mismatch: {sender!r} proposes for {others[0]!r}"
        return None

    def _apply_circuits(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        for i, c in enumerate(meta["circuits"]):
            u, w = tensors[f"{i}/u"], tensors[f"{i}/w"]
            self.B[c["module"]].add_(c["sigma"] * torch.outer(u, w).float())
            for agent in c["agents"]:
                self.mailbox.setdefault(agent, []).append({"module": c["module"], "u": u.clone(), "w": w.clone()})
        self.version += 1
        self.stats["promotions"] += len(meta["circuits"])
        for c in meta["circuits"]:
            self._event("promotion", f"{c['module']}: sigma {c['sigma']:.3g} from {', '.join(c['agents'])}")

    def proposals_up(self) -> list[Proposal]:
        """This level's stable circuits, as proposals to the level above (empty without a parent)."""
        return proposals_from(self.tracker, self.name) if self.parent else []

    def tracked_circuits(self) -> list[dict[str, Any]]:
        """Every circuit the level's tracker follows: id, module, strength, stability score, age, u, w."""
        return [{"id": c.id, "module": c.module, "strength": float(c.strength), "score": float(c.score),
                 "age": int(c.age), "u": c.u.float().clone(), "w": c.w.float().clone()} for c in self.tracker.all()]

    def remove(self, removals: list[dict[str, Any]]) -> None:
        """Give up this level's projection onto circuits the level above accepted (journaled)."""
        if not removals:
            return
        tensors = {f"{i}/{k}": r[k] for i, r in enumerate(removals) for k in ("u", "w")}
        meta = {"kind": "removals", "modules": [r["module"] for r in removals]}
        if self.store is not None:
            self.store.append(tensors, meta)
        self._apply_removals(tensors, meta)

    def _apply_removals(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        for i, module in enumerate(meta["modules"]):
            remove_projection(self.B[module], tensors[f"{i}/u"], tensors[f"{i}/w"])
            self.tracker.forget_near(module, tensors[f"{i}/u"], tensors[f"{i}/w"])
        self.version += 1
        self.stats["removed"] += len(meta["modules"])

    # ------------------------------------------------------------------ absorb
    def absorb(self, tensors: Mapping[str, Tensor], source: str) -> dict[str, Any]:
        """Add an outside delta (module -> (d_out, R), a subset of modules) to the level: validated,
        journaled and checkpointed like a merge, one version. Never raises on bad input."""
        reason = self._check_delta(tensors)
        if reason:
            return self._reject(reason)
        meta = {"kind": "absorb", "source": str(source), "modules": sorted(tensors)}
        clean = {m: tensors[m].detach().float().clone() for m in sorted(tensors)}
        if self.store is not None:
            self.store.append(clean, meta)
        self._apply_absorb(clean, meta)
        self.checkpoint()
        return {"status": "accepted", "version": self.version}

    def _check_delta(self, tensors: Any) -> str | None:
        if not isinstance(tensors, Mapping) or not tensors:
            return "bad tensors: a non-empty mapping module -> tensor"
        unknown = sorted(set(tensors) - set(self.shapes))
        if unknown:
            return f"unknown module: {unknown[0]!r}"
        for m, t in tensors.items():
            if not isinstance(t, Tensor) or not t.is_floating_point():
                return f"bad dtype: {m!r} must be a floating-point tensor"
            if tuple(t.shape) != tuple(self.shapes[m]):
                return f"bad shape: {m!r} is {tuple(t.shape)}, expected {tuple(self.shapes[m])}"
            if not bool(torch.isfinite(t).all()):
                return f"not finite: {m!r} contains NaN or Inf"
        return None

    def _apply_absorb(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        for m, t in tensors.items():
            self.B[m].add_(t.to(self.B[m]))
        self.version += 1
        self.stats["absorbed"] = self.stats.get("absorbed", 0) + 1
        self._event("absorb", f"{meta['source']}: {len(tensors)} modules")

    # ------------------------------------------------------------------ durability
    def checkpoint(self) -> None:
        """Checkpoint now (a pending window is merged first); a no-op if the newest one holds this version."""
        if self.store is None:
            return
        if self.window:
            self.merge()
        latest = self.store.latest_valid()
        if latest is not None and latest.version == self.version:
            return
        state = {"B": self.B, "optimizer": self.optimizer.state_dict(), "aggregator": self.aggregator.state_dict(),
                 "uplink": self.uplink.state_dict() if self.uplink is not None else None,
                 "version": self.version, "last_seq": self.last_seq, "stats": self.stats,
                 "mailbox": self.mailbox}
        tensors, skeleton = flatten(state)
        self.store.checkpoint(self.version, tensors, {"state": skeleton})

    def _recover(self) -> None:
        rec = self.store.recover()
        self.warnings = rec.warnings
        if rec.checkpoint is not None:
            state = unflatten(rec.tensors, rec.checkpoint.meta["state"])
            for m in self.B:
                self.B[m].copy_(state["B"][m])
            self.optimizer.load_state_dict(state["optimizer"])
            self.aggregator.load_state_dict(state["aggregator"])
            if self.uplink is not None and state["uplink"] is not None:
                self.uplink.load_state_dict(state["uplink"])
            self.version, self.last_seq, self.stats = state["version"], dict(state["last_seq"]), state["stats"]
            self.mailbox = {a: list(rs) for a, rs in state["mailbox"].items()}
        for tensors, meta in rec.records:  # replay through the same code paths, without re-journaling
            kind = meta.get("kind", "push")
            if kind == "circuits":
                self._apply_circuits(tensors, meta)
            elif kind == "removals":
                self._apply_removals(tensors, meta)
            elif kind == "absorb":
                self._apply_absorb(tensors, meta)
            else:
                self._accept(meta, tensors)


def _circuits_record(result) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An accepted consensus round as a journal record: u, w tensors + module, sigma, majority."""
    tensors, circuits = {}, []
    for i, c in enumerate(result.accepted):
        tensors[f"{i}/u"], tensors[f"{i}/w"] = c.u.float(), c.w.float()
        circuits.append({"module": c.module, "sigma": float(c.sigma), "agents": list(c.agents)})
    return tensors, {"kind": "circuits", "circuits": circuits}
