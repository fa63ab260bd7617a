"""Which level servers a run has and who talks to whom, from the workload's topology.

The shared levels of the stack (every level after context and agent), in order, are
scoped to a team, a domain and everyone: with the default names, ``swarm/<team>``,
``domain/<domain>`` and ``foundation``. A server's parent is the server of the next
shared level that contains it; its ``members`` are its children by name (agent ids at a
team server, child server names above: the senders of its pushes and proposals) and
``children`` their number, the proposers it waits for before running consensus. Members
join and leave a running server (:mod:`cluster.level.membership`); the topology is the start.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agents.config import WorkloadConfig
from agents.topology import AgentSpec, agent_specs

SCOPES = ("team", "domain", "all")


@dataclass(frozen=True)
class ServerSpec:
    """Where one level server sits in the tree (how it is built: :class:`cluster.build.LevelSpec`).

    ``members``: its children's names, sorted (empty: only their number ``children`` is known);
    when given, ``children`` must be their number (``ValueError`` otherwise).
    """

    name: str  # the Ray actor name, e.g. "swarm/text"
    level: str  # the level it holds, e.g. "swarm"
    parent: str | None
    children: int
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_members(self.name, self.children, self.members)


def check_members(name: str, children: int, members: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``members`` is empty or a sorted tuple of distinct names numbering ``children``."""
    if not members:
        return
    if not isinstance(members, tuple) or list(members) != sorted(set(members)):
        raise ValueError(f"{name}: members must be a sorted tuple of distinct names, got {members!r}")
    if children != len(members):
        raise ValueError(f"{name}: children={children} but {len(members)} members {list(members)}")


def _scope_key(spec: AgentSpec, scope: str) -> str | None:
    return {"team": spec.swarm, "domain": spec.domain, "all": None}[scope]


def server_name(level: str, key: str | None) -> str:
    """The server of ``level`` for scope ``key`` (a team or domain name; None: everyone's), e.g. ``swarm/text``."""
    return level if key is None else f"{level}/{key}"


class Topology:
    """Servers (parents before children) and, per agent, the server of each shared level."""

    def __init__(self, workload: WorkloadConfig, shared_levels: list[str], scopes: list[str] | None = None) -> None:
        """``scopes``: who shares each shared level (team, domain or all), narrowest first; by default
        the first shared level is a team's, the next a domain's, the last everyone's. A flat run
        (one level shared by all) passes ``["all"]``."""
        if len(shared_levels) > len(SCOPES):
            raise ValueError(f"levels: at most {len(SCOPES)} shared levels (team, domain, all), "
                             f"got {shared_levels}")
        scopes = list(SCOPES[:len(shared_levels)] if scopes is None else scopes)
        if len(scopes) != len(shared_levels) or any(s not in SCOPES for s in scopes) or \
                [SCOPES.index(s) for s in scopes] != sorted({SCOPES.index(s) for s in scopes}):
            raise ValueError(f"scopes: {scopes} must name one of {list(SCOPES)} per shared level "
                             f"{shared_levels}, narrowest first, each once")
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
            pairs = zip(self.levels, scopes, strict=True)
            route = {lvl: server_name(lvl, _scope_key(spec, scope)) for lvl, scope in pairs}
            self.routes[spec.id] = route
            names = [route[lvl] for lvl in self.levels]
            if not names:  # no shared levels: agents alone
                continue
            children.setdefault(names[0], set()).add(spec.id)
            for below, above in zip(names, [*names[1:], None], strict=True):
                parents[below] = above
                if above is not None:
                    children.setdefault(above, set()).add(below)
        order = {lvl: i for i, lvl in enumerate(self.levels)}
        self.servers = sorted((ServerSpec(n, n.split("/")[0], parents[n], len(children[n]), tuple(sorted(children[n])))
                               for n in parents), key=lambda s: (-order[s.level], s.name))

    def route(self, agent_id: str) -> dict[str, str]:
        """Shared level -> server name for the agent ``agent_id``; raises ``KeyError`` for an unknown agent."""
        return self.routes[agent_id]
