"""One agent: base model + level stack + local learning + workload (no Ray here).

Modules: :mod:`agents.config` (the schemas, no torch), :mod:`agents.model` (base models),
:mod:`agents.topology` (who the agents are), :mod:`agents.sources` (documents: stdlib,
synthetic, the user's files, JSONL, datasets), :mod:`agents.text` (tokenizers and token windows
with their byte counts), :mod:`agents.workload` (each agent's stream), :mod:`agents.agent`
(the learner). Names load on first use.
"""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "Agent": "agents.agent",
    "AgentConfig": "agents.config",
    "AgentSpec": "agents.topology",
    "ByteTokenizer": "agents.text",
    "ModelConfig": "agents.config",
    "Windows": "agents.text",
    "Workload": "agents.workload",
    "WorkloadConfig": "agents.config",
    "agent_specs": "agents.topology",
    "build_model": "agents.model",
    "load_tokenizer": "agents.text",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
