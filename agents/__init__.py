"""One agent: base model + level stack + local learning + workload (no Ray here).

Modules: :mod:`agents.model` (base models), :mod:`agents.corpus` (stdlib bytes),
:mod:`agents.workload` (topology and each agent's stream), :mod:`agents.agent` (the learner).
"""

from agents.agent import Agent, AgentConfig
from agents.corpus import ByteCorpus
from agents.model import ByteTokenizer, ModelConfig, build_model
from agents.workload import AgentSpec, Workload, WorkloadConfig, agent_specs

__all__ = ["Agent", "AgentConfig", "AgentSpec", "ByteCorpus", "ByteTokenizer", "ModelConfig", "Workload",
           "WorkloadConfig", "agent_specs", "build_model"]
