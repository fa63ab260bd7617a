"""The ``learn`` section: live documents sent to agents (``Learn``, ``swarm feed``; docs/learn.md)."""

from __future__ import annotations

from dataclasses import dataclass

from layers.config import check_fields

MAX_DOCUMENT_BYTES = 1 << 20  # the inbox journal's longest record text (cluster.inbox.MAX_DOCUMENT_BYTES)


@dataclass
class LearnConfig:
    """Attributes:
        share: the fraction of an agent's contexts that take inbox documents while any are queued
            (0: the inbox is never read; 1: every context while documents wait).
        max_inbox_bytes: the most unconsumed bytes an agent's inbox holds; a ``Learn`` that would pass it
            is refused (RESOURCE_EXHAUSTED) and nothing of it is queued.
        max_document_bytes: the longest text one document may have (at most 1 MiB).

    Raises ``ValueError`` naming the first invalid field (``learn.<field>``).
    """

    share: float = 0.5
    max_inbox_bytes: int = 4 << 20
    max_document_bytes: int = 256 << 10

    def __post_init__(self) -> None:
        check_fields("learn", self, share=0.0 <= self.share <= 1.0, max_inbox_bytes=self.max_inbox_bytes >= 1,
                     max_document_bytes=1 <= self.max_document_bytes <= MAX_DOCUMENT_BYTES)
