"""``AgentHost``: K agents on ONE frozen base, one forward and backward for all of them (no Ray).

The host holds one :class:`~layers.hosted.SharedBase` (built by :func:`agents.model.shared_base`)
and the :class:`~cluster.worker.AgentWorker` of each of its agents, whose ``Agent`` was made with
``base=`` that base. :meth:`AgentHost.step` advances every agent by one step:

1. per agent, :meth:`Agent.begin_step` (its next batch; the promotion at a context boundary);
2. ONE forward of the base over the K batches concatenated (K*b rows): every adapted module
   computes ``W x`` and ``P x`` once for all rows, then each agent's own ``sum_l B_l`` on its
   own rows (a batched matmul, :class:`~layers.hosted.SharedLinear`);
3. each agent's loss is its own mean over its rows; ONE backward of their sum, so each agent's
   B receives exactly the gradient it would get alone (the rows do not interact in the base);
4. per agent, in order, :meth:`Agent.finish_step` (moments, level optimizers, pending push, sync
   gate, trackers) and then the worker's own step loop with that record
   (``AgentWorker.run(1, step=...)``: pushes, pulls, proposals, evaluation, checkpoint).

Stepping K agents this way ends in the same state as stepping them one at a time in the same
order (tests/cluster/test_host.py): nothing an agent does after its forward
changes another agent's forward of the same round, and its exchanges come in the same order.
Everything but the base stays per agent, so an agent's checkpoint does not depend on its host.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from agents.agent import StepInput
from cluster.worker import AgentWorker
from layers.hosted import SharedBase

PHASES = ("begin", "forward", "backward", "finish", "exchange")


class AgentHost:
    """One shared base and the workers of its agents (see the module doc).

    ``workers`` (agent id -> worker) may be the caller's own dict: agents added to it later (all
    made on ``base``) are stepped from the next round on."""

    def __init__(self, base: SharedBase, workers: dict[str, AgentWorker] | None = None) -> None:
        self.base = base
        self.workers: dict[str, AgentWorker] = workers if workers is not None else {}
        self.phase_s = dict.fromkeys(PHASES, 0.0)  # seconds per part of a round, summed over rounds
        self.rounds = 0

    def add(self, worker: AgentWorker) -> None:
        """Host ``worker`` (its agent must have been made on this host's base)."""
        self._check(worker)
        if worker.id in self.workers:
            raise ValueError(f"AgentHost.add: agent {worker.id!r} is hosted already")
        self.workers[worker.id] = worker

    def _check(self, worker: AgentWorker) -> None:
        if not any(worker.agent.stack is s for s in self.base.stacks):
            raise ValueError(f"AgentHost: agent {worker.id!r} was not made on this host's base "
                             "(make it with Agent(..., base=host.base))")

    def step(self, ids: list[str] | None = None, chunk_end: bool = True) -> list[dict[str, Any]]:
        """One step of each of ``ids`` (default: every hosted agent, in insertion order) and its
        exchanges; returns their worker records, in that order. ``chunk_end``: False for a step inside
        a longer chunk (a resumed worker evaluates at the end of its first chunk, not of every step)."""
        workers = [self.workers[i] for i in (list(self.workers) if ids is None else ids)]
        if not workers:
            return []
        for w in workers:
            self._check(w)
        t0 = time.perf_counter()
        starts: list[StepInput] = [w.agent.begin_step() for w in workers]
        first = starts[0].batch.inputs.shape
        for w, s in zip(workers, starts, strict=True):
            if s.batch.inputs.shape != first:
                raise ValueError(f"AgentHost.step: agent {w.id!r} has a batch of shape {tuple(s.batch.inputs.shape)}, "
                                 f"{workers[0].id!r} one of {tuple(first)}; hosted agents need the same "
                                 "workload.batch_size and workload.seq_len")
        rows = first[0]
        inputs = torch.cat([s.batch.inputs for s in starts])  # (K*b, T): agent k owns rows k*b .. k*b+b-1
        t1 = time.perf_counter()
        with self.base.batched([w.agent.stack for w in workers]):
            logits = self.base.model(inputs).logits  # (K*b, T, V) in model.dtype
        losses = [w.agent.loss(logits[k * rows:(k + 1) * rows], s.batch)  # each agent's own mean
                  for k, (w, s) in enumerate(zip(workers, starts, strict=True))]
        t2 = time.perf_counter()
        torch.stack(losses).sum().backward()  # d(sum)/dB^(k) = dL_k/dB^(k): agent k's rows only
        t3 = time.perf_counter()
        shared = (t3 - t0) / len(workers)
        outs = []
        finish = exchange = 0.0
        # every agent takes its gradient before any agent exchanges: a growth one agent pulls grows every
        # stack on the shared base (new B tensors, no .grad), so a later agent would find no gradient
        for w, s, loss in zip(workers, starts, losses, strict=True):
            a = time.perf_counter()
            outs.append(w.agent.finish_step(s, loss))
            w.compute_s += shared + (time.perf_counter() - a)  # its share of the batched pass, and its own finish
            finish += time.perf_counter() - a
        records = []
        for w, out in zip(workers, outs, strict=True):
            b = time.perf_counter()
            records.append(w.run(1, step=lambda out=out: out, chunk_end=chunk_end))
            exchange += time.perf_counter() - b
        for part, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, finish, exchange), strict=True):
            self.phase_s[part] += seconds
        self.rounds += 1
        return records

    def remove(self, agent_id: str) -> AgentWorker:
        """Stop hosting ``agent_id``; returns its worker (its agent keeps its stack on this base)."""
        return self.workers.pop(agent_id)
