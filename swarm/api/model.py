"""The model side of the query service: the base model with chosen shared levels loaded.

``MemoryModel`` holds one frozen base model and level stack built from a run's config.
Shared levels pulled from the servers are loaded into their slots (the stack level a
server fills: ``swarm/text`` fills ``swarm``); the local levels (context, agent) stay
zero, so what it computes is the swarm's shared memory alone. Calls are serialised by
the caller (one request at a time touches the stack).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from agents.config import ModelConfig
from agents.model import ByteTokenizer, build_model
from layers import LevelsConfig, LevelStack
from layers.eval import bits_per_byte


def tokenizer_for(cfg: ModelConfig):
    """Bytes for built models; the checkpoint's own tokenizer for ``name_or_path`` (local only)."""
    if not cfg.name_or_path or (Path(cfg.name_or_path) / "swarm_base.json").is_file():  # ours: byte-level
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.name_or_path, local_files_only=True)


class MemoryModel:
    """The query side's own copy of the base model with a level stack, into which the service loads
    shared levels to answer Generate, Score and ExportAdapter (CPU, one request at a time).
    """
    def __init__(self, model: ModelConfig, levels: LevelsConfig) -> None:
        self.model_cfg = model
        self.model = build_model(model)
        self.stack = LevelStack.attach(self.model, levels)
        self.tokenizer = tokenizer_for(model)
        self.loaded: dict[str, tuple[str, int]] = {}  # slot -> (server name, version)

    def load(self, slot: str, server: str, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Install a pulled level into ``slot`` (validated by the stack)."""
        self.stack.load_level_state(slot, tensors)
        self.loaded[slot] = (server, version)

    def holds(self, slot: str, server: str, version: int) -> bool:
        """True when ``slot`` already holds ``server``'s level at ``version`` (no reload needed)."""
        return self.loaded.get(slot) == (server, version)

    def _ids(self, text: str) -> torch.Tensor:
        ids = self.tokenizer.encode(text)
        return torch.tensor([ids], dtype=torch.long)  # (1, T)

    def bits_per_byte(self, text: str, slots: list[str]) -> tuple[float, int]:
        """Bits per byte (:func:`layers.eval.bits_per_byte`) of ``text`` under the base plus ``slots``;
        and the text's UTF-8 byte count. The first token is context only: its successors are scored."""
        ids = self._ids(text)  # (1, T)
        n_bytes = len(text.encode("utf-8"))
        if ids.shape[1] < 2:
            raise ValueError("text: needs at least 2 tokens to score")
        with self.stack.using(slots), torch.no_grad():
            logits = self.model(ids[:, :-1]).logits  # (1, T-1, V)
        # bytes the T-1 targets cover: exact for the byte tokenizer (one byte each); for a checkpoint's own
        # tokenizer it assumes the first token is one byte (per-token byte counts: the tokenizer-general issue)
        return bits_per_byte(logits, ids[:, 1:], target_bytes=max(1, n_bytes - 1)), n_bytes

    def generate(self, prompt: str, slots: list[str], max_new_tokens: int, temperature: float, seed: int,
                 should_stop=lambda: False) -> str:
        """Sample (or greedy when temperature is 0) ``max_new_tokens`` after ``prompt``."""
        ids = self._ids(prompt) if prompt else torch.zeros(1, 1, dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", 1024)
        out = []
        with self.stack.using(slots), torch.no_grad():
            for _ in range(max_new_tokens):
                if should_stop():
                    raise TimeoutError("deadline reached while generating")
                logits = self.model(ids[:, -limit:]).logits[0, -1].float()  # (V,)
                if temperature > 0:
                    nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)
                else:
                    nxt = logits.argmax(-1, keepdim=True)
                out.append(int(nxt))
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        return self.tokenizer.decode(out)

    def export(self, slot: str) -> dict[str, bytes]:
        """The slot's level as PEFT adapter files: relative path -> bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            directory = self.stack.export_peft(slot, Path(tmp) / "adapter",
                                               base_model_name_or_path=self.model_cfg.name_or_path)
            return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
                    if p.is_file()}
