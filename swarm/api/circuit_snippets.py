"""Top-activating snippets of a level's circuits, from the held-out text of the agents below it.

The query service (``ListCircuits``/``GetCircuit`` with ``snippets``) and the dashboard both ask a
:class:`SnippetFinder`. It rebuilds each agent's held-out windows from the run's config (the same
deterministic windows the agent evaluates on: :class:`agents.workload.Workload`, no Ray), feeds them
once through the query side's :class:`swarm.api.model.MemoryModel` with the level's chain of shared
levels enabled, captures every needed module's read-projected input ``P x`` with forward hooks, and
ranks positions by :func:`layers.circuits.snippets.activations`. The caller loads the levels first
and serialises calls (one request at a time touches the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from agents.text import decode_bytes
from agents.workload import Workload
from cluster.topology import Topology
from layers.circuits.snippets import Snippet, activations, top_snippets

WINDOWS_PER_AGENT = 8  # held-out windows per agent fed through the model (a few thousand tokens in all)


class SnippetFinder:
    """Snippets for circuits of the run whose config is ``cfg`` (a SwarmConfig), computed with ``memory``."""

    def __init__(self, cfg, memory, windows_per_agent: int = WINDOWS_PER_AGENT) -> None:
        if windows_per_agent < 1:
            raise ValueError(f"SnippetFinder: windows_per_agent must be >= 1, got {windows_per_agent}")
        self.cfg, self.memory, self.per_agent = cfg, memory, windows_per_agent
        self.topology = Topology(cfg.workload, cfg.levels.names[2:])
        self._windows: dict[str, tuple[torch.Tensor, list[list[bytes]]]] = {}  # agent -> (ids (n, T), token bytes)

    def agents_below(self, server: str) -> list[str]:
        """The agents whose chain of shared levels includes ``server`` (whose pushes reach it)."""
        return [a.id for a in self.topology.agents if server in self.topology.route(a.id).values()]

    def chain(self, server: str) -> list[str]:
        """``server`` and every server above it (what an agent below it runs with, besides its local levels)."""
        parents = {s.name: s.parent for s in self.topology.servers}
        if server not in parents:
            raise KeyError(f"SnippetFinder: no level server {server!r} (servers: {sorted(parents)})")
        out, node = [], server
        while node is not None:
            out.append(node)
            node = parents[node]
        return out

    def _agent_windows(self, agent_id: str) -> tuple[torch.Tensor, list[list[bytes]]]:
        if agent_id not in self._windows:
            spec = next(a for a in self.topology.agents if a.id == agent_id)
            held = Workload(self.cfg.workload, spec, self.memory.tokenizer).held_out
            ids = held.inputs[: self.per_agent]  # (n, T): position t reads the tokens up to t
            tok = self.memory.tokenizer
            cache: dict[int, bytes] = {}
            tokens = [[cache.setdefault(i, decode_bytes(tok, [i])) for i in row] for row in ids.tolist()]
            self._windows[agent_id] = (ids, tokens)
        return self._windows[agent_id]

    def find(self, server: str, circuits: Sequence[dict[str, Any]], k: int = 3) -> list[list[Snippet]]:
        """For each circuit (dicts with ``module``, ``w`` (R,) and ``strength``, as the level servers list
        them) of the level server ``server``: its ``k`` top-activating snippets on the held-out windows of
        the agents below ``server``, best first. Runs the model once, with the slots of ``server``'s chain
        enabled (the caller has loaded those levels into ``memory``)."""
        if k < 0:
            raise ValueError(f"SnippetFinder.find: k must be >= 0, got {k}")
        if not circuits or k == 0:
            return [[] for _ in circuits]
        agents = self.agents_below(server)
        parts = [self._agent_windows(a) for a in agents]
        ids = torch.cat([p[0] for p in parts])  # (N, T)
        tokens = [row for p in parts for row in p[1]]
        sources = [a for a, p in zip(agents, parts, strict=True) for _ in range(len(p[1]))]
        modules = sorted({c["module"] for c in circuits})
        captured = self._read_inputs(ids, modules, [self.cfg_slot(s) for s in self.chain(server)])
        return [top_snippets(activations(captured[c["module"]], c["w"], c["strength"]), tokens, k, sources=sources)
                for c in circuits]

    def cfg_slot(self, server: str) -> str:
        """The stack level (slot) the server ``server`` fills, e.g. ``swarm`` for ``swarm/text``."""
        return next(s.level for s in self.topology.servers if s.name == server)

    def _read_inputs(self, ids: torch.Tensor, modules: list[str], slots: list[str]) -> dict[str, torch.Tensor]:
        """module -> (N, T, R) its read-projected input ``P x`` on ``ids`` (N, T) with ``slots`` enabled."""
        stack = self.memory.stack
        missing = [m for m in modules if m not in stack.modules]
        if missing:
            raise KeyError(f"SnippetFinder: the model has no adapted module {missing[0]!r}")
        out: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
        hooks = []
        for m in modules:
            layer = stack.modules[m]

            def grab(mod, inputs, output, m=m) -> None:
                x = inputs[0]  # (b, T, d_in)
                out[m].append(F.linear(x.to(mod.P.dtype), mod.P).detach().float().cpu())  # (b, T, R)
            hooks.append(layer.register_forward_hook(grab))
        try:
            with stack.using(slots), torch.no_grad():
                for start in range(0, ids.shape[0], 16):
                    self.memory.model(ids[start:start + 16])
        finally:
            for h in hooks:
                h.remove()
        return {m: torch.cat(v) for m, v in out.items()}
