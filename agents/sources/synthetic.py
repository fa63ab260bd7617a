"""``synthetic``: small generated streams for fast tests, the same bytes as they always were.

Each team has a motif every one of its agents repeats (shared structure a team can pool), each
agent adds its own, and contexts vary the filler. Context ``c`` of an agent is generated from
``(seed, agent id, c)`` alone, so the train stream is endless (contexts are taken modulo its
length) and made on access; the held-out document is context ``-1``.
"""

from __future__ import annotations

import random

from agents.sources.document import AgentDocuments, Document, LazyDocuments
from agents.topology import AgentSpec

CONTEXTS = 2**31 - 1  # "endless": the workload takes contexts modulo len(train)


def _synthetic_text(spec: AgentSpec, context: int, seed: int) -> bytes:
    rng = random.Random(f"{seed}/{spec.id}/{context}")
    team = random.Random(f"{seed}/{spec.domain}/{spec.swarm}")
    own = random.Random(f"{seed}/{spec.id}")
    team_motif = "".join(team.choice("abcdefghij") for _ in range(12))
    own_motif = "".join(own.choice("klmnopqrst") for _ in range(8))
    parts = []
    while sum(map(len, parts)) < 4096:
        parts.append(rng.choice([team_motif, team_motif, own_motif, str(rng.randint(0, 99))]) + " ")
    return "".join(parts).encode()


def _document(spec: AgentSpec, context: int, seed: int) -> Document:
    return Document(_synthetic_text(spec, context, seed).decode("ascii"), f"synthetic:{spec.id}[{context}]")


class SyntheticDocuments(LazyDocuments):
    """Context ``i`` of one agent's synthetic stream, for ``0 <= i < 2**31 - 1``."""

    def __init__(self, spec: AgentSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed

    def __len__(self) -> int:
        return CONTEXTS

    def _load(self, index: int) -> Document:
        return _document(self.spec, index, self.seed)


def synthetic_documents(spec: AgentSpec, seed: int) -> AgentDocuments:
    """One agent's endless train stream and its one held-out document (context -1)."""
    return AgentDocuments(train=SyntheticDocuments(spec, seed), held_out=(_document(spec, -1, seed),))
