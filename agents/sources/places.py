"""Topologies read from data: where each agent sits (domain, team), and the checks a topology needs.

Shared by the ``jsonl`` and ``dataset`` kinds; torch-free.
"""

from __future__ import annotations

from agents.sources.document import WorkloadError

# where an agent sits when the data does not say: one domain, one team
DOMAIN, TEAM = "data", "team"

Place = tuple[str, str, str]  # (domain, team, where the agent was first seen: "path:LINE" or "DIR[row N]")


def topology_agents(topology: dict[str, dict[str, list[str]]]) -> list[str]:
    """Every agent of ``topology``, in topology order (domains, then teams, then agents)."""
    return [a for teams in topology.values() for agents in teams.values() for a in agents]


def place_agent(places: dict[str, Place], agent: str, domain: str, team: str, where: str,
                fields: tuple[str | None, str | None]) -> None:
    """Record that ``agent`` sits in ``domain/team`` (seen at ``where``).

    Raises:
        WorkloadError: it was seen in another domain or team before; names both places and the
            ``(domain_field, team_field)`` that say so.
    """
    seen = places.setdefault(agent, (domain, team, where))
    if seen[:2] != (domain, team):
        raise WorkloadError(f"{where}: agent {agent!r} is in domain/team {domain}/{team} here but in "
                            f"{seen[0]}/{seen[1]} at {seen[2]} (fields {fields[0]!r}, {fields[1]!r}); "
                            "an agent belongs to one team of one domain")


def derived_topology(places: dict[str, Place]) -> dict[str, dict[str, list[str]]]:
    """domain -> team -> agents from ``agent -> (domain, team, where)``, every level sorted by name.

    Raises:
        WorkloadError: no agent; or a team name in two domains (servers are named per team),
            naming both places.
    """
    if not places:
        raise WorkloadError("the data holds no agent")
    topology: dict[str, dict[str, list[str]]] = {}
    team_domain: dict[str, tuple[str, str]] = {}
    for agent in sorted(places):
        domain, team, where = places[agent]
        other = team_domain.setdefault(team, (domain, where))
        if other[0] != domain:
            raise WorkloadError(f"{where}: team {team!r} is in domain {domain!r} here but in {other[0]!r} at "
                                f"{other[1]}; a team name must be unique across domains")
        topology.setdefault(domain, {}).setdefault(team, []).append(agent)
    return {d: {t: topology[d][t] for t in sorted(topology[d])} for d in sorted(topology)}


def check_given(topology: dict[str, dict[str, list[str]]], places: dict[str, Place],
                fields: tuple[str | None, str | None], missing: str) -> None:
    """A configured topology against the data: every agent has data (``missing`` says where it was
    looked for), and where a domain/team field is set, the data puts the agent where the topology does.

    Raises:
        WorkloadError: an agent without data, or placed elsewhere by the data.
    """
    for domain, teams in topology.items():
        for team, agents in teams.items():
            for agent in agents:
                if agent not in places:
                    known = sorted(places)
                    raise WorkloadError(f"workload.topology names agent {agent!r}, but {missing} "
                                        f"(agents in the data: {known[:20]}{' ...' if len(known) > 20 else ''})")
                d, t, where = places[agent]
                if (fields[0] and d != domain) or (fields[1] and t != team):
                    raise WorkloadError(f"{where}: agent {agent!r} is in {d}/{t} by the data but in "
                                        f"{domain}/{team} by workload.topology")
