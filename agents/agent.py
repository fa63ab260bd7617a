"""``Agent``: one learner, no Ray. Model + level stack + local learning + workload + circuits.

Each step runs one forward/backward with every level enabled and autograd on the fastest
level only: every level shares the gradient ``G = dL/d(sum_l B_l)``, so one backward pass
serves all. One set of Adam moments of G gives a normalised direction; the two local
levels (context, agent) apply it through their own ``LevelOptimizer`` (their ``lr`` sets
their timescale). G is also accumulated for the shared levels; the ``SyncGate`` says
when the accumulated gradient is coherent enough to push. At a context boundary the
context level's stable circuits move to the agent level, then the context level resets.

Devices (``agent.device``, :mod:`agents.device`): the frozen base runs on the agent's device in
``model.dtype`` (bf16/fp16 allowed); the levels, the Adam moments, the pending push and the
level optimizers' state stay in ``levels.dtype`` (float32 by default) on that device, and the
circuit trackers work on CPU copies. Batches move to the device in :meth:`Agent.step` and
:meth:`Agent.evaluate`. What the agent hands out (pushes, proposals, :meth:`Agent.state_dict`)
is on CPU; what it takes in (pulled levels, a checkpoint) is copied onto its device.

Hosted agents (``base=``, :mod:`layers.hosted`): the agent's stack runs on a frozen base shared with
other agents; ``self.model`` is then its routed view of that base (every call uses its levels only).
A step is two halves: :meth:`Agent.begin_step` (the batch, and the promotion at a context boundary)
and :meth:`Agent.finish_step` (the gradient in the fast level's ``.grad`` -> moments, level
optimizers, pending push, sync gate, trackers); :meth:`Agent.step` runs the forward and backward in
between, and an agent host (:mod:`cluster.host`) runs one forward and backward for all its agents.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from agents.config import AgentConfig, CacheConfig, ModelConfig, WorkloadConfig
from agents.device import resolve_device, to_device, to_host
from agents.model import build_model
from agents.text import Windows, load_tokenizer
from agents.topology import AgentSpec
from agents.trajectory import TrajectoryCache
from agents.workload import Workload
from layers import LevelsConfig, LevelStack
from layers.circuits import CircuitsConfig, CircuitTracker, Promoter, Proposal, proposals_from, remove_projection
from layers.dynamics import DynamicsConfig, LevelOptimizer, SyncGate
from layers.projection import ReadGrowth

if TYPE_CHECKING:
    from layers.hosted import SharedBase


@dataclass
class StepInput:
    """The first half of a step (:meth:`Agent.begin_step`): the batch on the agent's device, whether a
    context boundary came before it, and how many circuits that boundary promoted."""

    batch: Windows
    boundary: bool
    promoted: int


class Agent:
    """A learner of the swarm; the runtime wraps it as a Ray actor."""

    def __init__(self, spec: AgentSpec, *, model: ModelConfig, levels: LevelsConfig, workload: WorkloadConfig,
                 agent: AgentConfig | None = None, dynamics: DynamicsConfig | None = None,
                 circuits: CircuitsConfig | None = None, cache: CacheConfig | None = None,
                 base: SharedBase | None = None) -> None:
        """``base``: run on this shared frozen base (built from ``model``; :func:`agents.model.shared_base`)
        instead of a model of the agent's own; refused (ValueError naming the agent and the difference)
        unless the model, the target modules, rank, seed, scale and dtype of the levels and the device match."""
        if len(levels.names) < 2:
            raise ValueError("an agent needs at least two levels (context, agent)")
        self.spec, self.cfg = spec, agent or AgentConfig()
        self.dynamics, self.circuits = dynamics or DynamicsConfig(), circuits or CircuitsConfig()
        self.device = resolve_device(self.cfg.device)
        self.base = base  # a shared base grows for every agent on it (apply_growth)
        if base is None:
            self.model = build_model(model, self.device)  # frozen base in model.dtype; levels below in levels.dtype
            self.stack = LevelStack.attach(self.model, levels)
        else:
            if base.device != self.device:
                raise ValueError(f"agent {spec.id!r}: agent.device={self.device} differs from the host's base "
                                 f"device {base.device}")
            self.stack = base.stack_for(spec.id, levels, key=model)
            self.model = self.stack.model  # the shared base routed through this agent's levels
        self.tokenizer = load_tokenizer(model)
        check_vocab(self.tokenizer, self.model, model)
        self.fast, self.slow = levels.names[0], levels.names[1]
        self.shared = list(levels.names[2:])
        self.stack.set_trainable([self.fast])  # G lands in the fast level's .grad; all levels share it
        self.workload = Workload(workload, spec, self.tokenizer)
        self.moments = {n: (torch.zeros_like(m.B[self.fast]), torch.zeros_like(m.B[self.fast]))
                        for n, m in self.stack.modules.items()}
        self.optimizers = {self.fast: self._optimizer(self.fast, self.cfg.lr_context),
                           self.slow: self._optimizer(self.slow, self.cfg.lr_agent)}
        self.gate = SyncGate(self.dynamics.sync)
        self.pending = {n: torch.zeros_like(m.B[self.fast]) for n, m in self.stack.modules.items()}
        self.trackers = {self.fast: CircuitTracker(self.circuits), self.slow: CircuitTracker(self.circuits)}
        self.promoter = Promoter(self.fast, self.slow, self.circuits)
        self.steps = self.seq = 0
        self.pushed_through = 0  # the last step whose gradient left ``pending`` (pushed or dropped)
        self.push_ready: str | None = None
        self.cache = TrajectoryCache(cache)
        self.phase_s = {"optimizers": 0.0, "gate": 0.0, "trackers": 0.0}  # seconds in finish_step's parts
        self._untracked = 0  # steps since the context level's tracker last saw its blocks
        self._grown_to = self.stack.rank  # the rank this agent's own state (optimizers, pending) is sized for
        self.stack.growth_listeners.append(self._follow_growth)

    def _optimizer(self, level: str, lr: float) -> LevelOptimizer:
        return LevelOptimizer.for_level(self.stack, level, dataclasses.replace(self.dynamics, lr=lr))

    @property
    def id(self) -> str:
        return self.spec.id

    # ------------------------------------------------------------------ learning
    def step(self) -> dict[str, Any]:
        """One batch of the agent's own stream; returns the training bits per byte and events."""
        start = self.begin_step()
        loss = self.loss(self.model(start.batch.inputs).logits, start.batch)  # logits (B, T, V) in model.dtype
        loss.backward()
        return self.finish_step(start, loss)

    def begin_step(self) -> StepInput:
        """The next batch of the stream (ids (B, T+1) on the agent's device); at a context boundary the
        context level's stable circuits are promoted first (the step then learns in the new context),
        and a document sent to the agent confirms the cached answers it holds (:meth:`TrajectoryCache.confirm`;
        replayed with the boundary after a restore, so exactly once in the checkpointed state)."""
        batch, boundary = self.workload.next_batch()
        if boundary and self.workload.feed_text:
            self.cache.confirm(self.workload.feed_text)
        batch = self._on_device(batch)
        promoted = self.context_boundary() if boundary and self.steps else 0
        return StepInput(batch, boundary, promoted)

    @staticmethod
    def loss(logits: Tensor, batch: Windows) -> Tensor:
        """Mean next-token cross-entropy (nats, float32 whatever the base) of ``logits`` (B, T, V) on ``batch``."""
        return F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten())

    def finish_step(self, start: StepInput, loss: Tensor) -> dict[str, Any]:
        """The second half of a step, once ``loss`` (from :meth:`loss`) has been backpropagated: the
        gradient G in the fast level's ``.grad`` drives the local levels, joins the pending push and the
        sync gate, and the trackers update; returns the step's record."""
        batch, boundary, promoted = start.batch, start.boundary, start.promoted
        t0 = time.perf_counter()
        self.steps += 1
        grads = {}
        for name, module in self.stack.modules.items():
            g = module.B[self.fast].grad  # (d_out, R): dL/d(sum of levels)
            module.B[self.fast].grad = None
            grads[name] = g
            self.pending[name].add_(g)
        direction = self._adam_direction(grads)
        for opt in self.optimizers.values():
            opt.step(direction)
        t1 = time.perf_counter()
        reason = self.gate.observe(grads)
        self.push_ready = self.push_ready or reason
        t2 = time.perf_counter()
        # the context level every circuits.context_track_every steps (its tracker counts steps, and is
        # brought up to date before a boundary's promotion); the agent level every track_every updates
        self._untracked += 1
        if self._untracked >= self.circuits.context_track_every:
            self._track_context()
        if self.steps % self.cfg.track_every == 0:
            self.trackers[self.slow].update(self._blocks(self.slow))
        t3 = time.perf_counter()
        for part, seconds in zip(self.phase_s, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            self.phase_s[part] += seconds
        return {"step": self.steps, "bpb": batch.loss_bits_per_byte(loss), "boundary": boundary,
                "promoted": promoted, "push_ready": reason}

    def _on_device(self, windows: Windows) -> Windows:
        """``windows`` on the agent's device (the workload makes them on CPU)."""
        if windows.ids.device == self.device:
            return windows
        return Windows(windows.ids.to(self.device), windows.target_bytes.to(self.device))

    def _blocks(self, level: str) -> dict[str, Tensor]:
        """One level's B (d_out, R) per module for the circuit trackers: on CPU (the trackers' SVDs of
        small matrices and their scalar reads are host work; on a CPU agent these are the B themselves)."""
        return {n: m.B[level].detach().cpu() for n, m in self.stack.modules.items()}

    def _adam_direction(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        c, t = self.cfg, self.steps
        out = {}
        for name, g in grads.items():
            m, v = self.moments[name]
            m.mul_(c.beta1).add_(g, alpha=1 - c.beta1)
            v.mul_(c.beta2).addcmul_(g, g, value=1 - c.beta2)
            m_hat, v_hat = m / (1 - c.beta1**t), v / (1 - c.beta2**t)
            out[name] = -m_hat / (v_hat.sqrt() + c.eps)  # the drive: a normalised descent direction
        return out

    def _track_context(self) -> None:
        """Update the context level's tracker with the steps since its last update (none pending: no-op)."""
        if self._untracked:
            self.trackers[self.fast].update(self._blocks(self.fast), steps=self._untracked)
            self._untracked = 0

    def context_boundary(self) -> int:
        """Promote the context level's stable circuits to the agent level, then reset the context level."""
        self._track_context()
        events = self.promoter.step(self.stack, self.trackers[self.fast], self.steps)
        self.stack.reset_level(self.fast)
        self.optimizers[self.fast] = self._optimizer(self.fast, self.cfg.lr_context)
        self.trackers[self.fast] = CircuitTracker(self.circuits)
        return len(events)

    # ------------------------------------------------------------------ exchange with the level servers
    def take_push(self) -> dict[str, Any] | None:
        """The accumulated gradient for the shared levels, once the sync gate fired; else None.
        Its tensors (module -> (d_out, R), ``levels.dtype``) are CPU copies, whatever the device;
        ``first_step..last_step`` (inclusive) are the steps it sums, the interval the server holds it for."""
        if not self.push_ready:
            return None
        self.seq += 1
        push = {"sender": self.id, "seq": self.seq, "reason": self.push_ready, "steps": self.gate.steps,
                "first_step": self.pushed_through + 1, "last_step": self.steps,
                "tensors": {n: t.detach().to("cpu", copy=True) for n, t in self.pending.items()}}
        self.drop_pending()
        return push

    def drop_pending(self) -> int:
        """Discard the accumulated gradient (steps the server already holds from an earlier life of this
        agent: pushing it again would apply them twice); the next push starts after the current step.
        Returns how many steps were dropped."""
        dropped = self.steps - self.pushed_through
        for t in self.pending.values():
            t.zero_()
        self.gate.reset()
        self.push_ready = None
        self.pushed_through = self.steps
        return dropped

    def load_shared(self, level: str, state: dict[str, Tensor]) -> None:
        """Run with a pulled shared level (validated: unknown module, shape, dtype, NaN are refused);
        its tensors may be on any device and are copied onto the agent's."""
        if level not in self.shared:
            raise ValueError(f"{level!r} is not a shared level of this agent ({self.shared})")
        self.stack.load_level_state(level, state)

    def apply_growth(self, event: ReadGrowth) -> bool:
        """Apply a swarm growth of the read space (:class:`~layers.projection.ReadGrowth`): P gains its
        rows (on a shared base, for every agent of the host), every level, the optimizers, moments and
        the pending push gain zero columns; the function is unchanged. Idempotent (False: already past it)."""
        if self.stack.shared:
            grew = self.base.apply_growth(event)
        else:
            grew = self.stack.apply_growth(event)
        self._follow_growth(event)  # a host's base may have grown this stack already through another agent
        return grew

    def _follow_growth(self, event: ReadGrowth) -> None:
        """Size this agent's own state for the stack's rank (zero columns); trackers restart (their
        circuits' read vectors have the old rank) and the gate starts a new window."""
        rank = self.stack.rank
        if rank <= self._grown_to:
            return

        def pad(t: Tensor) -> Tensor:
            return torch.cat([t, t.new_zeros(t.shape[0], rank - t.shape[1])], dim=1)  # (d_out, R')

        self.moments = {n: (pad(m), pad(v)) for n, (m, v) in self.moments.items()}
        self.pending = {n: pad(t) for n, t in self.pending.items()}
        for opt in self.optimizers.values():
            opt.resize()
        self.trackers = {lvl: CircuitTracker(self.circuits) for lvl in self.trackers}
        self.gate.reset()
        self._grown_to = rank

    def propose(self) -> list[Proposal]:
        """Stable circuits of the agent level, as proposals for the swarm server (u, w on CPU: the
        trackers work on CPU copies)."""
        return proposals_from(self.trackers[self.slow], self.id)

    def remove(self, module: str, u: Tensor, w: Tensor) -> float:
        """Remove this agent's projection onto an accepted circuit from its agent level; returns it.
        ``u``, ``w`` may be on any device (moved to the level's)."""
        return remove_projection(self.stack.modules[module].B[self.slow], u, w)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything local needed to resume: the two fast levels, moments, optimizers, pending push,
        sync gate and stream position. Shared levels are not included (they are pulled); circuit
        trackers restart empty (they re-converge within a tracking window). Every tensor is on CPU
        (:func:`agents.device.to_host`), so a checkpoint resumes on any device."""
        state = {"levels": {lvl: self.stack.level_state(lvl) for lvl in (self.fast, self.slow)},
                 "moments": {n: list(mv) for n, mv in self.moments.items()},
                 "optimizers": {lvl: opt.state_dict() for lvl, opt in self.optimizers.items()},
                 "pending": {n: t.clone() for n, t in self.pending.items()}, "gate": self.gate.state_dict(),
                 "workload": self.workload.state_dict(), "steps": self.steps, "seq": self.seq,
                 "pushed_through": self.pushed_through,
                 "push_ready": self.push_ready, "cache": self.cache.state_dict(),
                 "growths": [e.to_dict() for e in self.stack.growths]}
        return to_host(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (validated by the stack and the optimizers before use), taken on
        any device: tensors are copied onto this agent's. Growths it records are applied first."""
        for event in state.get("growths", []):  # absent before growth: none
            self.apply_growth(ReadGrowth.from_dict(event))
        for lvl in (self.fast, self.slow):
            self.stack.load_level_state(lvl, state["levels"][lvl])
        for lvl, opt in self.optimizers.items():
            opt.load_state_dict(to_device(state["optimizers"][lvl], self.device))
        for n, (m, v) in state["moments"].items():
            self.moments[n][0].copy_(m)
            self.moments[n][1].copy_(v)
        for n, t in state["pending"].items():
            self.pending[n].copy_(t)
        self.gate.load_state_dict(to_device(state["gate"], self.device))
        self.workload.load_state_dict(state["workload"])
        self.steps, self.seq, self.push_ready = int(state["steps"]), int(state["seq"]), state["push_ready"]
        # checkpoints from before push intervals: pending holds the steps the gate counted since its reset
        self.pushed_through = int(state.get("pushed_through", self.steps - self.gate.steps))
        if "cache" in state:  # checkpoints from before the cache have none
            self.cache.load_state_dict(state["cache"])

    def evaluate(self, levels: list[str] | None = None, windows: Windows | None = None) -> float:
        """Bits per byte (:func:`layers.eval.model_bits_per_byte`, pooled over the windows, per byte of
        text) with ``levels`` enabled (all by default) on ``windows``, by default this agent's own
        held-out windows (pass a teammate's to measure transfer; they must come from the same
        tokenizer; on any device). The enabled levels are restored afterwards."""
        windows = self._on_device(self.workload.held_out if windows is None else windows)
        with self.stack.using(levels if levels is not None else self.stack.levels):
            return windows.bits_per_byte(self.model)


def check_vocab(tokenizer, model, cfg: ModelConfig) -> None:
    """Refuse a tokenizer whose ids do not all have a row in the model's embedding."""
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.vocab_size > rows:
        source = cfg.name_or_path or f"model.vocab_size={cfg.vocab_size}"
        raise ValueError(f"model: the tokenizer of {source} has {tokenizer.vocab_size} tokens but the model's "
                         f"embedding has {rows} rows; use the tokenizer saved with the checkpoint")
