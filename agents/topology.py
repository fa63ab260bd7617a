"""Who learns where: an agent's place in the topology (domain -> swarm -> agent).

Torch-free, so configs and data sources can name agents without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.config import WorkloadConfig


@dataclass(frozen=True)
class AgentSpec:
    """One agent's place in the topology."""

    name: str
    swarm: str
    domain: str

    @property
    def id(self) -> str:
        """``domain/swarm/name``: unique in a run."""
        return f"{self.domain}/{self.swarm}/{self.name}"


def agent_specs(cfg: WorkloadConfig) -> list[AgentSpec]:
    """Every agent of the workload's topology, in topology order."""
    return [AgentSpec(a, s, d) for d, swarms in cfg.teams.items() for s, agents in swarms.items() for a in agents]
