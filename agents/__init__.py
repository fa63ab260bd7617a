"""One agent: base model + level stack + local learning + workload (no Ray here).

Modules: :mod:`agents.config` (the schemas, no torch), :mod:`agents.model` (base models),
:mod:`agents.corpus` (stdlib bytes), :mod:`agents.workload` (topology and each agent's stream),
:mod:`agents.agent` (the learner). Names load on first use.
"""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "Agent": "agents.agent",
    "AgentConfig": "agents.config",
    "AgentSpec": "agents.topology",
    "ByteCorpus": "agents.corpus",
    "ByteTokenizer": "agents.model",
    "ModelConfig": "agents.config",
    "Workload": "agents.workload",
    "WorkloadConfig": "agents.config",
    "agent_specs": "agents.topology",
    "build_model": "agents.model",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
