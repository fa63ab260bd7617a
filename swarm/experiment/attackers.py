"""Scenario (d)'s attackers: omniscient senders of crafted pushes, or members poisoning with other data.

Two threat models, chosen by the attack kind:

- a crafted kind (``layers.merge.attacks.ATTACKS``): the attackers take no steps. :class:`Attackers`
  sits in front of their server as the ``LevelClient`` its honest agents push through; after
  every round of honest pushes (one per honest agent it serves) it pushes ``f`` crafted updates
  built from that round.
- ``poison`` (:data:`DATA_ATTACKS`): the attackers are ordinary members that follow the protocol
  (same agent, steps, sync gate, pushes) but whose data stream is another domain's package, e.g.
  C++ headers in a Python team (:func:`add_poisoners`). Nothing in a push tells them apart.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from agents.sources import documents_for
from agents.topology import AgentSpec
from agents.workload import Workload
from cluster.level.forwarding import LinkedLevel
from cluster.level.protocol import Coverage, ProposeResult, PullReply, PushResult
from layers.merge.attacks import attack_updates
from swarm.config.experiment import DATA_ATTACKS

if TYPE_CHECKING:
    from swarm.experiment.sim import Simulation


class Attackers:
    """``f`` attacker senders at one server; a ``LevelClient`` the honest agents of that server use.

    Crafted kinds: after ``honest`` accepted honest pushes, ``ids`` each push one crafted update
    (``sent`` counts the accepted ones). ``poison``: every push passes through unchanged; the
    attackers are real agents (:func:`add_poisoners`) and ``sent`` counts their accepted pushes.
    """

    def __init__(self, level: LinkedLevel, ids: list[str], honest: int, kind: str, seed: int) -> None:
        self.level, self.ids, self.honest, self.kind = level, ids, honest, kind
        self.round: list[dict[str, torch.Tensor]] = []
        self.seq = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.sent = 0

    def push(self, sender: str, seq: int, base_version: int, tensors: dict, first_step: int | None = None,
             last_step: int | None = None) -> PushResult:
        out = self.level.push(sender, seq, base_version, tensors, first_step, last_step)
        if self.kind in DATA_ATTACKS:
            self.sent += out.accepted and sender in self.ids
            return out
        if out.accepted:
            self.round.append(tensors)
        if len(self.round) >= self.honest:
            self._attack()
        return out

    def _attack(self) -> None:
        names = list(self.round[0])
        honest = torch.stack([torch.cat([t[m].flatten() for m in names]) for t in self.round])  # (K_h, d)
        crafted = attack_updates(self.kind, honest, len(self.ids), n=len(self.round) + len(self.ids),
                                 generator=self.generator)  # (f, d)
        self.seq += 1
        for sender, row in zip(self.ids, crafted, strict=True):
            parts, i = {}, 0
            for m in names:
                n = self.round[0][m].numel()
                parts[m] = row[i:i + n].reshape(self.round[0][m].shape).contiguous()
                i += n
            out = self.level.push(sender, self.seq, self.level.core.version, parts)
            self.sent += out.accepted
        self.round = []

    def pull(self, since_version: int = -1) -> PullReply:
        return self.level.pull(since_version)

    def propose(self, sender: str, proposals: list) -> ProposeResult:
        return self.level.propose(sender, proposals)

    def seen(self, sender: str) -> int:
        return self.level.seen(sender)

    def covered(self, sender: str) -> Coverage:
        return self.level.covered(sender)


def poison_spec(cfg, attacker: AgentSpec, i: int) -> AgentSpec:
    """The stream of the ``i``-th poisoner: package ``poison[i % len]`` of ``poison_domain``, in the
    attacker's team (the spec's id seeds its data order)."""
    att = cfg.experiment.attack
    return AgentSpec(att.poison[i % len(att.poison)], attacker.swarm, att.poison_domain)


def add_poisoners(sim: Simulation) -> list[str]:
    """Give every attacker of ``sim`` a worker: routed like the attacker (its team's servers), learning
    like any member, on another domain's package (:func:`poison_spec`). The workers are stepped
    with the honest ones but are not evaluated (they are not in ``sim.agent_ids``); returns their ids.

    Raises:
        WorkloadError: a poison package is missing from this environment.
    """
    cfg = sim.cfg
    ids = [a for att in sim.attackers.values() for a in att.ids]
    for i, aid in enumerate(ids):
        spec = sim.specs[aid]
        data = poison_spec(cfg, spec, i)
        worker = sim.make_worker(spec)
        one = dataclasses.replace(cfg.workload, topology={data.domain: {data.swarm: [data.name]}})
        worker.agent.workload = Workload(cfg.workload, data, worker.agent.tokenizer,
                                         documents=documents_for(one, data))
        sim.workers[aid] = worker
    return ids
