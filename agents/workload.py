"""Who learns what: the topology (domains -> swarms -> agents) and each agent's byte stream.

``stdlib``: an agent is a standard-library package of this interpreter; its contexts are
the package's source files (train), every ``held_out_every``-th file is held out.
``synthetic``: small generated streams for fast tests. Each swarm has a motif every one
of its agents repeats (shared structure a team can pool), each agent adds its own, and
contexts vary the filler. Both are deterministic given the seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import torch

from agents.config import WorkloadConfig
from agents.corpus import ByteCorpus, eval_windows, read_bytes, sample_windows
from agents.topology import AgentSpec


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


class Workload:
    """One agent's stream: contexts of training windows, and fixed held-out windows."""

    def __init__(self, cfg: WorkloadConfig, spec: AgentSpec) -> None:
        self.cfg, self.spec = cfg, spec
        digest = hashlib.sha256(f"{cfg.seed}/{spec.id}".encode()).digest()  # stable across processes
        self.gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        if cfg.kind == "stdlib":
            corpus = ByteCorpus.from_packages([spec.name], held_out_every=cfg.held_out_every)
            self._train: list[Path] = corpus.train
            self.held_out = eval_windows(corpus.held_out, cfg.seq_len, cfg.eval_windows)
        else:
            data = torch.frombuffer(bytearray(_synthetic_text(spec, -1, cfg.seed)), dtype=torch.uint8).long()
            n = (data.numel() - 1) // cfg.seq_len
            self.held_out = torch.stack([data[i * cfg.seq_len : (i + 1) * cfg.seq_len + 1]
                                         for i in range(min(n, cfg.eval_windows))])
        self.context = -1
        self.step_in_context = cfg.steps_per_context  # the first next_batch opens context 0
        self._data: torch.Tensor | None = None

    def _open(self, context: int) -> torch.Tensor:
        if self.cfg.kind == "stdlib":
            return read_bytes(self._train[context % len(self._train)])
        return torch.frombuffer(bytearray(_synthetic_text(self.spec, context, self.cfg.seed)), dtype=torch.uint8)

    def next_batch(self) -> tuple[torch.Tensor, bool]:
        """(windows (B, T+1) int64, whether a new context started with this batch)."""
        boundary = self.step_in_context >= self.cfg.steps_per_context
        if boundary:
            self.context += 1
            self._data = self._open(self.context)
            self.step_in_context = 0
        self.step_in_context += 1
        return sample_windows(self._data, self.cfg.batch_size, self.cfg.seq_len, self.gen), boundary

    def state_dict(self) -> dict:
        """Where the stream is: context, step in it, and the sampler's RNG state."""
        return {"context": self.context, "step_in_context": self.step_in_context, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.context, self.step_in_context = int(state["context"]), int(state["step_in_context"])
        self.gen.set_state(state["rng"])
        self._data = self._open(self.context) if self.context >= 0 else None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, bool]]:
        while True:
            yield self.next_batch()
