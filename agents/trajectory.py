"""The trajectory cache (DESIGN section 9): answers the agent gave, until it knows them by heart.

An entry is keyed by (prompt, versions of the shared levels the answer was produced
with): a new shared version is new knowledge, so the same prompt misses. Each entry keeps
its hit count and a provenance hash (SHA-256 of the prompt, the answer, the versions and
who produced it). An entry hit ``internalise_after`` times is due: the agent trains its
agent level on it until greedy decoding reproduces the answer without the cache, or a
step budget runs out; either way the entry then leaves the cache (``internalised`` or
``failed``). A document sent to the agent (``Learn``) that holds a cached conversation makes its
entry due at once (:meth:`TrajectoryCache.confirm`): an answer fed back is one worth knowing.
The cache is bounded; past ``max_entries`` the least recently used entry is evicted.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from agents.config import CacheConfig


@dataclass
class CacheEntry:
    key: str
    prompt: bytes
    answer: bytes
    versions: dict[str, int]
    provenance: str
    hits: int = 0


def cache_key(prompt: bytes, versions: dict[str, int]) -> str:
    return hashlib.sha256(prompt + b"\0" + json.dumps(versions, sort_keys=True).encode()).hexdigest()


class TrajectoryCache:
    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()  # oldest use first
        self.counts = {"lookups": 0, "hits": 0, "confirmed": 0, "internalised": 0, "failed": 0, "evicted": 0}

    def get(self, prompt: bytes, versions: dict[str, int]) -> CacheEntry | None:
        """The entry for (prompt, versions), counted as a hit and made most recent; None on a miss."""
        self.counts["lookups"] += 1
        entry = self.entries.get(cache_key(prompt, versions))
        if entry is not None:
            entry.hits += 1
            self.counts["hits"] += 1
            self.entries.move_to_end(entry.key)
        return entry

    def put(self, prompt: bytes, versions: dict[str, int], answer: bytes, producer: str) -> CacheEntry:
        """Cache ``answer``; the least recently used entries go when the cache is full."""
        key = cache_key(prompt, versions)
        provenance = hashlib.sha256(json.dumps({"prompt": prompt.hex(), "answer": answer.hex(), "versions": versions,
                                                "producer": producer}, sort_keys=True).encode()).hexdigest()
        self.entries[key] = CacheEntry(key, prompt, answer, dict(versions), provenance)
        self.entries.move_to_end(key)
        while len(self.entries) > self.config.max_entries:
            self.entries.popitem(last=False)
            self.counts["evicted"] += 1
        return self.entries[key]

    def due(self) -> list[CacheEntry]:
        """Entries hit often enough to be internalised, most hit first."""
        out = [e for e in self.entries.values() if e.hits >= self.config.internalise_after]
        return sorted(out, key=lambda e: -e.hits)

    def confirm(self, text: str) -> int:
        """A document sent to the agent (``Learn``) that holds one of its cached conversations confirms
        the answer: that entry is due for internalisation now, however few its hits. A conversation is
        the prompt then the answer as the query service shows them (UTF-8, undecodable bytes replaced),
        so a client can feed back exactly what it was given. The number of entries it confirmed."""
        confirmed = 0
        for e in self.entries.values():
            shown = e.prompt.decode("utf-8", errors="replace") + e.answer.decode("utf-8", errors="replace")
            if e.hits < self.config.internalise_after and shown in text:
                e.hits = self.config.internalise_after
                confirmed += 1
        self.counts["confirmed"] += confirmed
        return confirmed

    def retire(self, key: str, outcome: str) -> None:
        """An internalisation finished: ``outcome`` is ``internalised`` or ``failed``; the entry leaves, and
        when internalised so do the other entries of its prompt (answers at other versions it supersedes)."""
        if outcome not in ("internalised", "failed"):
            raise ValueError(f"retire: outcome must be internalised or failed, got {outcome!r}")
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.counts[outcome] += 1
        self.counts["evicted"] += 1
        if outcome == "internalised":  # the agent now gives this answer itself: other answers to the prompt are stale
            for k in [k for k, e in self.entries.items() if e.prompt == entry.prompt]:
                del self.entries[k]
                self.counts["evicted"] += 1

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {"entries": len(self.entries), **c, "hit_rate": c["hits"] / c["lookups"] if c["lookups"] else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts),
                "entries": [{**asdict(e), "prompt": e.prompt.hex(), "answer": e.answer.hex()}
                            for e in self.entries.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {**dict.fromkeys(self.counts, 0), **state["counts"]}  # older checkpoints lack "confirmed"
        self.entries = OrderedDict()
        for e in state["entries"]:
            entry = CacheEntry(**{**e, "prompt": bytes.fromhex(e["prompt"]), "answer": bytes.fromhex(e["answer"])})
            self.entries[entry.key] = entry
