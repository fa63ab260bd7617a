"""Which level servers a run has and who talks to whom, from the workload's topology.

The shared levels of the stack (every level after context and agent), in order, are
scoped to a team, a domain and everyone: with the default names, ``swarm/<team>``,
``domain/<domain>`` and ``foundation``. A server's parent is the server of the next
shared level that contains it; its ``children`` are the proposers it waits for before
running consensus (agents of the team, teams of the domain, domains).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agents.workload import AgentSpec, WorkloadConfig, agent_specs

SCOPES = ("team", "domain", "all")


@dataclass(frozen=True)
class ServerSpec:
    name: str  # the Ray actor name, e.g. "swarm/text"
    level: str  # the level it holds, e.g. "swarm"
    parent: str | None
    children: int


def _scope_key(spec: AgentSpec, scope: str) -> str | None:
    return {"team": spec.swarm, "domain": spec.domain, "all": None}[scope]


def server_name(level: str, key: str | None) -> str:
    return level if key is None else f"{level}/{key}"


class Topology:
    """Servers (parents before children) and, per agent, the server of each shared level."""

    def __init__(self, workload: WorkloadConfig, shared_levels: list[str]) -> None:
        if len(shared_levels) > len(SCOPES):
            raise ValueError(f"levels: at most {len(SCOPES)} shared levels (team, domain, all), "
                             f"got {shared_levels}")
        teams = Counter(s for swarms in workload.teams.values() for s in swarms)
        clash = sorted(t for t, n in teams.items() if n > 1)
        if clash:
            raise ValueError(f"workload.topology: team name {clash[0]!r} appears in more than one domain; "
                             "server names (swarm/<team>) must be unique")
        self.levels = list(shared_levels)
        self.agents = agent_specs(workload)
        self.routes: dict[str, dict[str, str]] = {}  # agent id -> level -> server name
        children: dict[str, set[str]] = {}
        parents: dict[str, str | None] = {}
        for spec in self.agents:
            scopes = zip(self.levels, SCOPES, strict=False)
            route = {lvl: server_name(lvl, _scope_key(spec, scope)) for lvl, scope in scopes}
            self.routes[spec.id] = route
            names = [route[lvl] for lvl in self.levels]
            if names:
                children.setdefault(names[0], set()).add(spec.id)
            for below, above in zip(names, [*names[1:], None], strict=True):
                parents[below] = above
                if above is not None:
                    children.setdefault(above, set()).add(below)
        order = {lvl: i for i, lvl in enumerate(self.levels)}
        self.servers = sorted((ServerSpec(n, n.split("/")[0], parents[n], len(children[n])) for n in parents),
                              key=lambda s: (-order[s.level], s.name))

    def route(self, agent_id: str) -> dict[str, str]:
        return self.routes[agent_id]
