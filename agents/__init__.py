"""One agent: base model + level stack + local learning + workload (no Ray here).

For now: base-model building (:mod:`agents.model`) and the standard-library byte
corpus (:mod:`agents.corpus`); the agent class itself comes with the runtime.
"""

from agents.corpus import ByteCorpus
from agents.model import ByteTokenizer, ModelConfig, build_model

__all__ = ["ByteCorpus", "ByteTokenizer", "ModelConfig", "build_model"]
